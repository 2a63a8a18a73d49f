#!/usr/bin/env python
"""Run an archnas experiment; the same as the `archnas` command. See --help."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from archnas.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
