"""Config layering: includes, `_copy`, overrides, schema validation and the CLI around them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from archnas.cli import main
from archnas.config import (
    config_to_dict,
    config_to_yaml,
    load_config,
    parse_override_tokens,
)
from archnas.config.copy_refs import resolve_copies
from archnas.config.yaml_files import load_config_file
from archnas.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
FIX = Path(__file__).parent / "fixtures" / "confs"
DARTS = str(REPO / "confs" / "darts.yaml")


def overrides(*tokens: str):
    ovs, rest = parse_override_tokens(list(tokens), set())
    assert rest == []
    return ovs


def test_three_levels_of_includes_and_both_copy_forms():
    tree = load_config_file(FIX / "top.yaml")
    assert "__include__" not in tree.data
    conf = resolve_copies(tree.data)
    # level 3 defaults, overridden by level 2
    assert conf["train"]["batch"] == 64 and conf["train"]["workers"] == 2
    # value form, relative: val.batch copies train.batch
    assert conf["train"]["val"]["batch"] == 64
    # node form, absolute, local keys win and mappings merge
    assert conf["eval"]["batch"] == 96
    assert conf["eval"]["workers"] == 2
    assert conf["eval"]["optimizer"] == {"type": "sgd", "lr": 0.01, "momentum": 0.9}
    # the copied relative reference still points into the source section
    assert conf["eval"]["val"]["batch"] == 64
    # bare path is absolute; node form with a relative path and a local key
    assert conf["search"]["seed"] == 7
    assert conf["search"]["optimizer"] == {"type": "adam", "lr": 0.025, "momentum": 0.9}
    # provenance: the key written in the middle file is attributed to it
    assert tree.source_of(("train", "workers")).endswith("middle.yaml")
    assert tree.source_of(("train", "batch")).endswith("base.yaml")


def test_copies_are_deep_and_independent():
    conf = resolve_copies(load_config_file(FIX / "top.yaml").data)
    conf["eval"]["optimizer"]["momentum"] = 0.5
    conf["eval"]["val"]["batch"] = 1
    assert conf["train"]["optimizer"]["momentum"] == 0.9
    assert conf["train"]["val"]["batch"] == 64


def test_copied_dataclass_sections_are_independent():
    conf = load_config([DARTS])
    # nas.eval.trainer.optimizer is a _copy of nas.search.trainer.optimizer in darts.yaml
    assert conf.nas.eval.trainer.optimizer == conf.nas.search.trainer.optimizer
    conf.nas.eval.trainer.optimizer.lr = 123.0
    conf.nas.eval.model_desc.primitives.append("sep_conv_7x7")
    assert conf.nas.search.trainer.optimizer.lr == 0.025
    assert "sep_conv_7x7" not in conf.nas.search.model_desc.primitives


def test_overriding_a_source_changes_its_copies_but_not_the_reverse():
    conf = load_config([DARTS], overrides("nas.search.trainer.optimizer.lr=0.05"))
    assert conf.nas.eval.trainer.optimizer.lr == 0.05
    conf = load_config([DARTS], overrides("--nas.eval.trainer.optimizer.lr", "0.2"))
    assert conf.nas.eval.trainer.optimizer.lr == 0.2
    assert conf.nas.search.trainer.optimizer.lr == 0.025
    # a key that only exists through a copy can be overridden, and only the copy changes
    conf = load_config([DARTS], overrides("nas.eval.model_desc.n_nodes=3"))
    assert conf.nas.eval.model_desc.n_nodes == 3 and conf.nas.search.model_desc.n_nodes == 4


def test_include_cycle_shows_the_chain():
    with pytest.raises(ConfigError, match=r"include cycle: .*cycle_a\.yaml -> .*cycle_b\.yaml -> .*cycle_c\.yaml -> .*cycle_a\.yaml"):
        load_config_file(FIX / "cycle_a.yaml")


def test_copy_cycle_names_the_paths():
    with pytest.raises(ConfigError, match=r"_copy cycle: /a -> /b -> /c/d -> /a"):
        resolve_copies(load_config_file(FIX / "copy_cycle.yaml").data)


def test_missing_copy_target_names_holder_and_target():
    with pytest.raises(ConfigError, match=r"a\.b: _copy target /train/optimiser does not exist \(no key 'optimiser' under /train\)"):
        resolve_copies(load_config_file(FIX / "copy_missing.yaml").data)


def test_typo_in_a_file_names_file_and_key():
    with pytest.raises(ConfigError, match=r"typo\.yaml: unknown config key 'nas\.search\.trainer\.epoch'.*'nas\.search\.trainer\.epochs'"):
        load_config([FIX / "typo.yaml"])


def test_python_tags_and_duplicate_keys_are_refused():
    with pytest.raises(ConfigError, match=r"python_tag\.yaml: invalid YAML.*python/object"):
        load_config([FIX / "python_tag.yaml"])
    with pytest.raises(ConfigError, match=r"duplicate\.yaml.*duplicate key 'seed'"):
        load_config([FIX / "duplicate.yaml"])


@pytest.mark.parametrize(
    "tokens, expected",
    [
        (["--common.seed", "3"], 3),
        (["common.seed=4"], 4),
        (["--common.seed=5"], 5),
    ],
)
def test_both_override_styles(tokens, expected):
    assert load_config([DARTS], overrides(*tokens)).common.seed == expected


def test_override_value_kinds():
    conf = load_config([DARTS], overrides(
        "nas.search.trainer.optimizer.lr=1",  # int into a float key is fine
        "nas.search.trainer.optimizer.betas=[0.1, 0.2]",
        "common.experiment_name=007",  # a string key keeps the text as typed
        "dataset.params={a: 1, b: [2]}",  # free-form mapping takes new keys
        "common.tensorboard=false",
    ))
    assert conf.nas.search.trainer.optimizer.lr == 1.0 and isinstance(conf.nas.search.trainer.optimizer.lr, float)
    assert conf.nas.search.trainer.optimizer.betas == [0.1, 0.2]
    assert conf.common.experiment_name == "007"
    assert conf.dataset.params == {"a": 1, "b": [2]}
    assert conf.common.tensorboard is False


def test_a_number_key_a_file_set_to_a_whole_number_takes_a_fraction_from_the_command_line():
    """confs/proxyless_mobilenet.yaml writes `latency_target: 400000`: still a number key."""
    conf = load_config([REPO / "confs" / "proxyless_mobilenet.yaml"],
                       overrides("nas.search.proxyless.latency_target=3.5", "nas.search.cost.max_macs=2.5e5"))
    assert conf.nas.search.proxyless.latency_target == 3.5 and conf.nas.search.cost.max_macs == 250000.0
    with pytest.raises(ConfigError, match=r"'nas\.search\.proxyless\.latency_target' expects a number"):
        load_config([REPO / "confs" / "proxyless_mobilenet.yaml"], overrides("nas.search.proxyless.latency_target=fast"))


def test_null_default_key_takes_mapping_and_scalar():
    conf = load_config([DARTS], overrides("nas.eval.trainer.lr_schedule.warmup={epochs: 2}"))
    assert conf.nas.eval.trainer.lr_schedule.warmup.epochs == 2
    conf = load_config([DARTS], overrides("nas.eval.final_desc=DARTS_V2"))
    assert conf.nas.eval.final_desc == "DARTS_V2"
    conf = load_config([DARTS], overrides("nas.eval.trainer.lr_schedule.warmup.epochs=3"))
    assert conf.nas.eval.trainer.lr_schedule.warmup.epochs == 3


@pytest.mark.parametrize(
    "token, message",
    [
        ("nas.search.trainer.epochs=abc", r"'nas\.search\.trainer\.epochs' expects an integer \(current value \d+\), got 'abc'"),
        ("nas.search.trainer.epochs=2.5", r"expects an integer"),
        ("nas.search.model_desc.primitives=none", r"expects a list"),
        ("common.deterministic=1", r"expects true or false"),
        ("nas.search.trainer.lr_schedule.type=cosin", r"lr_schedule\.type.*expected one of"),
        ("nas.search.trainer.optimizer={lr: 1, moment: 2}", r"unknown config key 'nas\.search\.trainer\.optimizer\.moment'.*momentum"),
        ("nas.search.trainer.epochs=[1", r"not valid YAML"),
    ],
)
def test_bad_overrides_are_errors(token, message):
    with pytest.raises(ConfigError, match=message):
        load_config([DARTS], overrides(token))


def test_override_needs_a_value():
    with pytest.raises(ConfigError, match="needs a value"):
        parse_override_tokens(["--common.seed"], set())


def test_cli_unknown_key_exits_2_with_suggestion(capsys):
    for argv in (["--nas.search.trainer.epoch", "3"], ["nas.search.trainer.epoch=3"]):
        assert main(["--config", DARTS, *argv, "--print-config"]) == 2
        err = capsys.readouterr().err
        assert "nas.search.trainer.epoch'" in err and "nas.search.trainer.epochs" in err
        assert "Traceback" not in err and err.count("\n") == 1


def test_cli_bad_type_exits_2(capsys):
    assert main(["--config", DARTS, "--nas.search.trainer.epochs", "abc"]) == 2
    err = capsys.readouterr().err
    assert "nas.search.trainer.epochs" in err and "abc" in err and "integer" in err


def test_print_config_is_safe_yaml_and_equals_the_run_config(capsys):
    argv = ["--config", DARTS, "--nas.search.trainer.epochs", "3", "--print-config"]
    assert main(argv) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    conf = load_config([DARTS], overrides("--nas.search.trainer.epochs", "3"))
    conf.common.experiment_name = "darts"
    assert printed == config_to_dict(conf)
    assert printed["nas"]["search"]["trainer"]["epochs"] == 3
    assert yaml.safe_load(config_to_yaml(conf)) == printed


def test_comma_separated_and_repeated_configs_merge_left_to_right(tmp_path, capsys):
    extra = tmp_path / "extra.yaml"
    extra.write_text("common: {seed: 11}\n")
    extra2 = tmp_path / "extra2.yaml"
    extra2.write_text("common: {seed: 12, device: cpu}\n")
    assert main(["--config", f"{DARTS},{extra}", "--config", str(extra2), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["common"]["seed"] == 12 and printed["common"]["device"] == "cpu"
    assert printed["common"]["experiment_name"] == "darts-extra-extra2"


def test_interpolation_is_resolved(tmp_path):
    f = tmp_path / "interp.yaml"
    f.write_text("nas:\n  eval:\n    trainer:\n      epochs: ${nas.search.trainer.epochs}\n")
    conf = load_config([DARTS, f], overrides("nas.search.trainer.epochs=7"))
    assert conf.nas.eval.trainer.epochs == 7


def test_script_help_and_exit_code():
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "main.py"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--nas.search.trainer.epochs 3" in out.stdout and "--print-config" in out.stdout
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "main.py"), "--config", DARTS, "--bogus.key", "1"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "unknown config key 'bogus.key'" in out.stderr and "Traceback" not in out.stderr
