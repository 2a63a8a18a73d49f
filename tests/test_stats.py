"""`archnas stats`: parameter and multiply-add counts from a config, a genotype or a desc file."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from archnas.cli import main
from archnas.config.schema import DatasetConf
from archnas.config.schema.model_desc import ModelDescConf, ModelStemsConf
from archnas.descs import DatasetInfo, named_genotype, save_desc
from archnas.errors import ConfigError
from archnas.model import Model, genotype_to_desc
from archnas.stats import dataset_info, model_stats

TINY_MACRO = {"n_cells": 3, "model_stems": {"init_node_ch": 4}}


def _config(tmp_path, dataset: str = "cifar10", **eval_conf) -> str:
    conf = {
        "dataset": {"name": dataset},
        "nas": {"search": {"model_desc": TINY_MACRO},
                "eval": {"model_desc": {**TINY_MACRO, "aux_weight": 0.4}, **eval_conf}},
    }
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    return str(path)


def _run(capsys, *argv: str) -> dict:
    assert main(["stats", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def _reference_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Conv and linear multiply-adds by forward hooks, independent of FlopCounterMode."""
    total = 0

    def hook(m, inputs, out):
        nonlocal total
        if isinstance(m, torch.nn.Conv2d):
            total += out.numel() // out.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, torch.nn.Linear):
            total += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return total


def test_genotype_stats_with_detail(tmp_path, capsys):
    out = _run(capsys, "--config", _config(tmp_path), "--genotype", "DARTS_V2", "--detail")
    assert (out["model"], out["source"], out["dataset"], out["input_shape"]) == ("eval", "genotype DARTS_V2", "cifar10", [3, 32, 32])
    conf = ModelDescConf(n_cells=3, aux_weight=0.4, model_stems=ModelStemsConf(init_node_ch=4))
    desc = genotype_to_desc(named_genotype("DARTS_V2"), conf, DatasetInfo(10, 3, (32, 32)))
    model = Model(desc, droppath=False, affine=True)
    assert out["fingerprint"] == desc.fingerprint()
    assert out["params"] == sum(p.numel() for p in model.parameters())
    assert out["params_without_aux"] == out["params"] - sum(p.numel() for p in model.aux_towers.parameters())
    assert out["macs"] == _reference_macs(model, torch.zeros(1, 3, 32, 32))
    detail = out["detail"]
    parts = detail["model_stems"] + detail["cells"] + detail["head"]
    assert sum(p["macs"] for p in parts) == out["macs"]
    assert sum(p["params"] for p in parts + detail["aux_towers"]) == out["params"]
    assert [(c["index"], c["type"], c["out_shape"]) for c in detail["cells"]] == \
           [(0, "regular", [16, 32, 32]), (1, "reduction", [32, 16, 16]), (2, "reduction", [64, 8, 8])]
    aux = detail["aux_towers"]
    assert [a["after_cell"] for a in aux] == [2] and aux[0]["macs"] == 2 * 2 * 64 * 128 + 128 * 768 * 2 * 2 + 768 * 10  # 8x8 -> pool(5, 3) -> 2x2


def test_supernet_and_default_sources(tmp_path, capsys):
    out = _run(capsys, "--config", _config(tmp_path), "--supernet")
    assert out["model"] == "supernet" and out["arch_params"] == 2 * 14 * 8
    assert _run(capsys, "--config", _config(tmp_path)) == out  # nothing named: the search supernet
    out = _run(capsys, "--config", _config(tmp_path, final_desc="PC_DARTS_CIFAR"))
    assert out["source"] == "nas.eval.final_desc PC_DARTS_CIFAR" and out["arch_params"] == 0


def test_desc_file_cells_are_counted_at_the_eval_macro(tmp_path, capsys):
    search_macro = ModelDescConf(n_cells=5, model_stems=ModelStemsConf(init_node_ch=8))
    save_desc(genotype_to_desc(named_genotype("DARTS_V1"), search_macro, DatasetInfo(10, 1, (8, 8))), tmp_path / "final.yaml")
    from_desc = _run(capsys, "--config", _config(tmp_path, "digits"), "--desc", str(tmp_path / "final.yaml"))
    from_genotype = _run(capsys, "--config", _config(tmp_path, "digits"), "--genotype", "DARTS_V1")
    assert from_desc["source"] == f"desc file {tmp_path / 'final.yaml'}"
    assert {k: v for k, v in from_desc.items() if k != "source"} == {k: v for k, v in from_genotype.items() if k != "source"}
    assert from_desc["input_shape"] == [1, 8, 8]


def test_user_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["stats", "--config", _config(tmp_path), "--genotype", "DARTS_V9"]) == 2
    assert "unknown genotype 'DARTS_V9'; known genotypes: AMOEBANET, DARTS_V1" in capsys.readouterr().err
    assert main(["stats", "--config", _config(tmp_path), "--desc", str(tmp_path / "missing.yaml")]) == 2
    assert "desc file not found" in capsys.readouterr().err


def test_dataset_info_of_built_in_sets_needs_no_data_and_others_ask_their_provider(tmp_path):
    nowhere = DatasetConf(name="cifar100", dataroot=str(tmp_path / "nothing"))
    assert dataset_info(nowhere, str(tmp_path)) == DatasetInfo(100, 3, (32, 32))
    assert dataset_info(DatasetConf(name="digits"), str(tmp_path)) == DatasetInfo(10, 1, (8, 8))
    synthetic = DatasetConf(name="synthetic", params={"n_classes": 3, "size": 16, "channels": 2})
    assert dataset_info(synthetic, str(tmp_path)) == DatasetInfo(3, 2, (16, 16))
    with pytest.raises(ConfigError, match="dataset.name: unknown dataset 'svhn'"):
        dataset_info(DatasetConf(name="svhn"), str(tmp_path))


def test_model_stats_restores_training_mode():
    model = Model(genotype_to_desc(named_genotype("DARTS_V2"), ModelDescConf(n_cells=3, model_stems=ModelStemsConf(init_node_ch=4)),
                                   DatasetInfo(10, 3, (8, 8))), droppath=False, affine=True).train()
    stats = model_stats(model, [3, 8, 8])
    assert model.training and stats["macs"] == _reference_macs(model, torch.zeros(1, 3, 8, 8))
