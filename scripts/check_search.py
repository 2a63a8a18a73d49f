"""Check a finished DARTS run against the main job's bars (archnas.launch.check_run says which).

    python scripts/check_search.py results/darts [--min-test-top1 0.95] [--max-seconds 600]

Prints one PASS/FAIL line per bar; exit code 0 when all pass, 1 when one fails, 2 for a folder
that is not a finished run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from archnas.errors import UsageError
from archnas.launch.check_run import check_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exp_dir", type=Path, help="the experiment folder, e.g. results/darts")
    parser.add_argument("--max-entropy-ratio", type=float, default=0.9)
    parser.add_argument("--max-parameterless-share", type=float, default=0.5)
    parser.add_argument("--min-test-top1", type=float, default=0.95)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args(argv)
    try:
        bars = check_run(args.exp_dir, args.max_entropy_ratio, args.max_parameterless_share, args.min_test_top1,
                         args.max_seconds)
    except UsageError as e:
        sys.stderr.write(f"archnas: error: {e}\n")
        return 2
    for bar in bars:
        print(f"{'PASS' if bar.passed else 'FAIL'} {bar.name}: {bar.detail}")
    return 0 if all(bar.passed for bar in bars) else 1


if __name__ == "__main__":
    sys.exit(main())
