"""Architecture optimizers (archnas/nas/arch_optimizer.py): a plugin's runs a search and an eval
through the `archnas` command with its state checkpointed by the trainer alone; the built-in
uniform paths of the SPOS pretrain draw the paths and losses they drew before the protocol; an
optimizer's loss term goes into the weight step; `nas.search.arch_optimizer` picks one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from archnas.context import RunContext
from archnas.config import find_config_file, load_config, parse_override_tokens
from archnas.nas import arch_optimizer
from archnas.nas.arch_optimizer import ArchOptimizer, register_arch_optimizer
from archnas.nas.bilevel import BilevelStep
from archnas.nas.phase import Experiment
from archnas.nas.pretrain import Pretrain, UniformPaths
from archnas.nas.registry import algorithm_class
from archnas.nas.searcher import load_data
from archnas.nas.spaces import module_space
from archnas.training.checkpoint import read_checkpoint
from archnas.training.losses import split_outputs
from archnas.training.metrics import without_timings
from tiny_algos import search_parts

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "tests" / "fixtures" / "plugins"
DARTS = str(REPO / "confs" / "darts.yaml")
TINY = ["common.tensorboard=false", "common.log_every_steps=0", "nas.search.model_desc.n_cells=3",
        "nas.search.model_desc.n_nodes=2", "nas.search.model_desc.model_stems.init_node_ch=4",
        "nas.search.loader.train_batch=40", "nas.search.trainer.epochs=1", "nas.eval.model_desc.n_cells=3",
        "nas.eval.model_desc.model_stems.init_node_ch=4", "nas.eval.trainer.epochs=1"]
SPOS_TINY = ["common.tensorboard=false", "common.log_every_steps=0", "dataset.limit_train=240",
             "dataset.limit_test=120", "nas.search.space={name: nb201, C: 4, N: 1}", "nas.search.loader.train_batch=40",
             "nas.search.trainer.epochs=2"]


@pytest.fixture
def registered_as_before(monkeypatch):
    """What a test registers is gone after it."""
    monkeypatch.setattr(arch_optimizer, "_ARCH_OPTIMIZERS", dict(arch_optimizer._ARCH_OPTIMIZERS))


def archnas(results: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    """The `archnas` command with the fixture plugin's optimizer on the tiny DARTS search."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(PLUGINS)]), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "archnas", "--import", "fixed_temperature", "--config", DARTS,
               "nas.search.arch_optimizer=fixed_temperature", f"common.results_dir={results}", "--exp-name", name,
               *TINY, *extra]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=results, timeout=600)


def test_a_plugin_optimizer_runs_search_then_eval_through_the_command(tmp_path):
    """The fixture's REINFORCE at a fixed temperature trains the alphas (they move from their
    init and the genotype is their argmax), and its baseline, its alpha optimizer, the alphas and
    the val stream are in the search checkpoint though the plugin registers none of them."""
    out = archnas(tmp_path, "ft")
    assert out.returncode == 0, out.stderr[-3000:]
    exp = tmp_path / "ft"
    result = json.loads((exp / "result.json").read_text())
    assert result["search"]["genotype"] and result["eval"]["test_top1"] is not None
    record = json.loads((exp / "search" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["reinforce_reward"] < 0 and record["reinforce_baseline"] is not None and "arch_val_loss" not in record
    moved = json.loads((exp / "search" / "search_result.json").read_text())["metrics"]["alphas"]
    assert all(m["entropy_end"] != m["entropy_start"] for m in moved.values())
    state = read_checkpoint(exp / "search" / "checkpoint_last.pt")["state"]
    assert {"reinforce", "alpha_optimizer", "alpha_scheduler", "arch_params", "val_stream"} <= set(state)
    assert state["reinforce"]["baseline"] == record["reinforce_baseline"]
    assert "arch_loss" not in state  # the bilevel step's, not this optimizer's


def test_a_search_of_the_plugin_optimizer_given_more_epochs_resumes_to_what_one_run_gives(tmp_path):
    """Its baseline, reward sums, alpha optimizer and the RNG its draws come from are restored
    from the checkpoint: one epoch and a rerun of two end where a run of two does (under constant
    lr schedules, which a run's length does not change)."""
    constant = ("--no-eval", "dataset.limit_train=320", "nas.search.trainer.lr_schedule.type=constant",
                "nas.search.trainer.alpha_lr_schedule.type=constant")
    two = (*constant, "nas.search.trainer.epochs=2")
    assert archnas(tmp_path, "straight", *two).returncode == 0
    assert archnas(tmp_path, "resumed", *constant).returncode == 0
    out = archnas(tmp_path, "resumed", *two)
    assert out.returncode == 0 and "resumed from" in out.stdout + out.stderr, out.stderr[-3000:]
    records = [[without_timings(json.loads(line)) for line in (tmp_path / x / "search" / "metrics.jsonl")
                .read_text().splitlines()] for x in ("straight", "resumed")]
    assert records[0] == records[1] and len(records[0]) == 2
    states = [read_checkpoint(tmp_path / x / "search" / "checkpoint_last.pt")["state"] for x in ("straight", "resumed")]
    assert states[0]["reinforce"] == states[1]["reinforce"]
    assert all(torch.equal(v, states[1]["arch_params"][k]) for k, v in states[0]["arch_params"].items())


def test_darts_gdas_and_pc_darts_train_with_the_bilevel_step(tmp_path):
    for algo, expected in (("darts", BilevelStep), ("gdas", BilevelStep), ("pc_darts", BilevelStep)):
        parts = search_parts(algo, tmp_path / algo, "nas.search.model_desc.model_stems.init_node_ch=8")
        assert type(parts.trainer.arch_optimizer) is expected
        parts.ctx.close()
    assert arch_optimizer._ARCH_OPTIMIZERS["uniform_paths"] is UniformPaths  # spos's: its pretrain below


class LogitPenalty(ArchOptimizer):
    """A loss term of the logits, recorded with the cross-entropy of the same chunk."""

    trains_alphas = False
    needs_val = False
    scale = 0.5

    def setup(self, trainer) -> None:
        super().setup(trainer)
        self.seen: list[tuple[torch.Tensor, torch.Tensor, int]] = []

    def loss_terms(self, model, outputs, batch):
        logits = split_outputs(outputs)[0]
        term = self.scale * logits.pow(2).mean()
        self.seen.append((F.cross_entropy(logits, batch[1]).detach(), term.detach(), len(batch[1])))
        return term


@pytest.mark.parametrize("chunks", [1, 2])
def test_an_optimizers_loss_term_goes_into_every_chunk_of_the_weight_step(tmp_path, registered_as_before, chunks):
    register_arch_optimizer("logit_penalty", LogitPenalty)
    parts = search_parts("darts", tmp_path, "nas.search.arch_optimizer=logit_penalty",
                         f"nas.search.trainer.batch_chunks={chunks}", "nas.search.trainer.lossfn.label_smoothing=0")
    trainer = parts.trainer
    assert "arch_params" not in trainer.checkpointer._objects and "val_stream" not in trainer.checkpointer._objects
    batch = next(iter(parts.data.loader("train", training=True).epoch(0)))
    weights = [p.detach().clone() for p in parts.model.weights()]
    trainer.run_step(batch)
    seen = trainer.arch_optimizer.seen
    assert len(seen) == chunks
    total = sum((ce + term) * n / len(batch[1]) for ce, term, n in seen)
    assert torch.allclose(trainer.step_loss, total, rtol=1e-6) and all(float(term) > 0 for _, term, _ in seen)
    assert not all(torch.equal(w, p) for w, p in zip(weights, parts.model.weights()))
    parts.ctx.close()


# The path digests and train losses of this tiny pretrain. The architecture-optimizer protocol
# reproduced main's plain-Trainer-with-a-path-hook numbers exactly; these are the same run's after
# the seeds were derived one way (archnas.utils.seeding.derive_seed, which moved every stage's
# initialization and the path stream): any later change of them is a change of what a run computes.
MAIN_PRETRAIN = [("3bab5099e596b5d0", 2.3248013655344644), ("07c6e50a86e19f00", 2.320768435796102)]


def test_the_pretrain_draws_the_paths_and_losses_it_drew_before(tmp_path):
    parsed, _ = parse_override_tokens([*SPOS_TINY, f"common.results_dir={tmp_path}"], set())
    conf = load_config([find_config_file("spos_nb201")], parsed)
    run = RunContext.create(conf, tmp_path / "sp", [])
    phase = Pretrain(Experiment(run, algorithm_class("spos")(conf)))
    ctx = run.phase("pretrain", conf.nas.search)
    data = load_data(ctx, conf.nas.search.loader)
    space = module_space(conf.nas.search.space)
    trainer = phase.build_trainer(ctx, space.supernet(data.info), space.fingerprint(), data)
    assert isinstance(trainer.arch_optimizer, UniformPaths)
    history = trainer.fit(data.loader("train", training=True))
    ctx.close()
    assert [(r["path_digest"], r["train_loss"]) for r in history.records] == MAIN_PRETRAIN
    state = read_checkpoint(tmp_path / "sp" / "pretrain" / "checkpoint_last.pt")["state"]
    assert "paths" in state and not {"arch_params", "alpha_optimizer", "val_stream", "arch_loss"} & set(state)
