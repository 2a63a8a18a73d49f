"""Property tests of config loading: whatever keys, values and nesting a config file or an override
holds, `archnas --print-config` either prints a config that loads again to the same values, or
exits 2 with exactly one `archnas: error:` line; never a traceback (any other exception fails).

Derandomized (the same examples on every run) and without deadlines, so a busy machine cannot
make them flaky; the example counts keep the file to a few seconds of config loading.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archnas.cli import main
from archnas.config import config_to_dict, load_config
from archnas.config.tree import iter_paths
from archnas.config.validate import schema_defaults

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "fixtures" / "confs" / "tiny_darts.yaml")
SETTINGS = dict(derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])

# Real key paths with values of their kind (so that many examples load, and the rest reach the type
# and range checks), some misspelt, and random words with random values (refused as unknown keys).
DEFAULTS = schema_defaults()
PATHS = [p for p in iter_paths(DEFAULTS) if "_copy" not in p]
words = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    words, st.sampled_from(["auto", "cpu", "cosine", "adam", "darts", "_copy: /nas/search/trainer",
                                            "${common.seed}", "${nope}", "DARTS_V2", "first", "[1, 2]"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(words, inner, max_size=3)), max_leaves=8)


def default_at(path: tuple[str, ...]):
    node = DEFAULTS
    for key in path:
        node = node[key]
    return node


def of_kind(default) -> st.SearchStrategy:
    """Values of the default's kind, small enough to be plausible settings."""
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(-3, 2 * max(default, 3))
    if isinstance(default, float):
        return st.floats(-1.0, 2 * max(default, 1.0), allow_nan=False)
    if isinstance(default, str):
        return st.one_of(st.just(default), words)
    if isinstance(default, list):
        return st.lists(of_kind(default[0]) if default else scalars, max_size=3)
    if isinstance(default, dict):
        return st.dictionaries(st.sampled_from(sorted(default)) if default else words,
                               st.integers(0, 3), max_size=2)
    return scalars


real_path = st.sampled_from(PATHS)
typed_entry = real_path.flatmap(lambda p: st.tuples(st.just(p), st.one_of(of_kind(default_at(p)),
                                                                         of_kind(default_at(p)), values)))
other_entry = st.tuples(st.one_of(real_path.map(lambda p: p[:-1] + (p[-1] + "x",)),
                                  st.lists(words, min_size=1, max_size=4).map(tuple)), values)
entry = st.one_of(typed_entry, typed_entry, typed_entry, other_entry)

def flow(value) -> str:
    """A value as one would type it after `key=`."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()


def nest(path: tuple[str, ...], value) -> dict:
    for key in reversed(path):
        value = {key: value}
    return value


def merged(entries: list[tuple[tuple[str, ...], object]]) -> dict:
    out: dict = {}
    for path, value in entries:
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {}) if isinstance(node.get(key, {}), dict) else node
        node[path[-1]] = value
    return out


def check_outcome(argv: list[str], capsys) -> None:
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    if code == 0:
        printed = yaml.safe_load(out)
        assert isinstance(printed, dict) and set(printed) >= {"common", "dataset", "nas"}
        return
    assert code == 2, err
    assert len([ln for ln in err.splitlines() if ln.startswith("archnas: error:")]) == 1, err


@settings(max_examples=20, **SETTINGS)
@given(entries=st.lists(entry, min_size=1, max_size=4))
def test_a_config_file_of_any_keys_and_values_loads_or_is_one_error(entries, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(merged(entries), allow_unicode=True))
    check_outcome(["--config", f"{TINY},{path}", "--print-config"], capsys)


@settings(max_examples=20, **SETTINGS)
@given(overrides=st.lists(st.one_of(entry.map(lambda e: (e[0], flow(e[1]))), st.tuples(real_path, words)),
                          min_size=1, max_size=3),
       style=st.sampled_from(["a=b", "--a=b", "--a b"]))
def test_overrides_of_any_keys_and_values_load_or_are_one_error(overrides, style, capsys):
    argv = ["--config", TINY]
    for path, text in overrides:
        key = ".".join(path)
        argv += {"a=b": [f"{key}={text}"], "--a=b": [f"--{key}={text}"], "--a b": [f"--{key}", text]}[style]
    check_outcome([*argv, "--print-config"], capsys)


@settings(max_examples=30, **SETTINGS)
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                      st.integers(1, 400).map(lambda n: "a: " + "[" * n + "]" * n),
                      st.integers(1, 80).map(lambda n: "".join("  " * i + f"k{i}:\n" for i in range(n)) + "  " * n
                                             + "v: 1\n")))
def test_any_text_as_a_config_file_loads_or_is_one_error(text, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_bytes(text.encode("latin-1", errors="replace"))
    check_outcome(["--config", f"{TINY},{path}", "--print-config"], capsys)


@settings(max_examples=8, **SETTINGS)
@given(typed=typed_entry)
def test_a_config_that_loads_prints_the_values_it_loaded(typed, tmp_path, capsys):
    """What --print-config prints is itself a config file that loads to the same config."""
    conf_file = tmp_path / "c.yaml"
    conf_file.write_text(yaml.safe_dump(nest(*typed), allow_unicode=True))
    capsys.readouterr()
    if main(["--config", f"{TINY},{conf_file}", "--print-config", "--exp-name", "p"]) != 0:
        assert "Traceback" not in capsys.readouterr().err
        return
    printed = tmp_path / "printed.yaml"
    printed.write_text(capsys.readouterr().out)
    again = load_config([str(printed)])
    first = load_config([TINY, str(conf_file)])
    first.common.experiment_name = "p"
    assert config_to_dict(again) == config_to_dict(first)
