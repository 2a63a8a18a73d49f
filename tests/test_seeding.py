"""One seed derivation (archnas.utils.seeding.derive_seed) and no other scheme in archnas."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from archnas.utils.seeding import derive_seed

ROOT = Path(__file__).resolve().parent.parent


def test_integer_keys_are_numpy_seed_sequences() -> None:
    """The data streams kept their numbers when the derivation became one: [seed, *keys] entropy."""
    expected = int(np.random.SeedSequence([7, 1, 3]).generate_state(1, dtype=np.uint64)[0])
    assert derive_seed(7, 1, 3) == expected


def test_names_steps_and_seeds_give_distinct_streams() -> None:
    seeds = {derive_seed(s, name, step) for s in (0, 1) for name in ("search", "eval", "paths") for step in (0, 1, 2)}
    assert len(seeds) == 18
    assert derive_seed(0, "search") == derive_seed(0, "search")
    assert all(0 <= derive_seed(s, "eval", bits=32) < 2**32 for s in range(20))


@pytest.mark.parametrize("bad", [-1, 1.5, None, True])
def test_a_key_that_is_not_a_name_or_a_count_is_refused(bad) -> None:
    with pytest.raises((TypeError, ValueError)):
        derive_seed(0, bad)


def test_no_other_seed_scheme_in_archnas() -> None:
    """seed + 1, Random("{seed}:..."), hashes of formatted seeds: each was a second derivation."""
    patterns = [r"seed\s*\+\s*\d", r"Random\(f\"", r"sha256\(f\"\{seed", r"SeedSequence\("]
    offenders = []
    for path in (ROOT / "archnas").rglob("*.py"):
        if path.name == "seeding.py":
            continue
        text = path.read_text()
        offenders += [f"{path.relative_to(ROOT)}: {p}" for p in patterns if re.search(p, text)]
    assert offenders == []
