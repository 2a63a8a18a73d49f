"""What to say when `torch.load(weights_only=True)` refuses a file archnas reads (a model file, an
array for predict; checkpoints and desc sidecars could say the same).

torch's refusal of a pickle that would call code is seven lines whose advice is to load the file
again with `weights_only=False`, which would run that code; a user gets one line naming the
global the file tried to reach instead.
"""

from __future__ import annotations

import pickle
import re


def torch_load_problem(exc: BaseException) -> str:
    """Why `torch.load(weights_only=True)` refused a file, in one line: for a pickle that would
    call code, the global it names (torch's own message advises loading it with weights_only=False,
    which would run that code)."""
    text = str(exc)
    named = re.search(r"GLOBAL ([\w.]+)", text)
    if isinstance(exc, pickle.UnpicklingError) and named:
        return (f"it holds a pickled Python object ({named[1]}) that loading would call: refused (archnas loads "
                "only tensors and plain data)")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if "weights_only" not in line and not line.startswith("Check the documentation")]
    return f"{type(exc).__name__}: {(useful or lines or [''])[0][:200]}"
