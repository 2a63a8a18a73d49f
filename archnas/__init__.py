"""archnas: config-driven neural architecture search for PyTorch."""

from __future__ import annotations

from typing import Any

from archnas.utils.versions import ARCHNAS_VERSION as __version__  # noqa: F401


def __getattr__(name: str) -> Any:
    """`archnas.load_model_file`, imported on first use: `import archnas` stays light, and the
    package's own modules can import `archnas.errors` without pulling in the model layer."""
    if name == "load_model_file":
        from archnas.model.model_file import load_model_file

        return load_model_file
    raise AttributeError(f"module 'archnas' has no attribute {name!r}")
