"""Training engine units: schedules, top-k, losses, optimizers, gradient accumulation, hooks, the loop."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archnas.config import load_config
from archnas.config.schema import (
    AmpConf,
    DatasetConf,
    LoaderConf,
    LossConf,
    LrScheduleConf,
    OptimizerConf,
    TrainerConf,
    ValidationConf,
    WarmupConf,
)
from archnas.context import RunContext
from archnas.data import build_data
from archnas.errors import ConfigError
from archnas.nas.arch_trainer import ArchParamsState
from archnas.training.checkpoint import read_checkpoint
from archnas.training.hooks import HookBase
from archnas.training.losses import TrainLoss
from archnas.training.metrics import EpochMeter, MetricsHistory, topk_correct
from archnas.training.optim import build_optimizer, param_groups
from archnas.training.precision import Precision
from archnas.training.schedules import build_scheduler
from archnas.training.signals import RunInterrupted
from archnas.training.trainer import Trainer

CPU = torch.device("cpu")


# -- LR schedules ------------------------------------------------------------------------------


def lrs_at_epoch_starts(conf: LrScheduleConf, epochs: int, steps_per_epoch: int, lr: float = 0.1) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9)
    sched = build_scheduler(conf, opt, epochs, steps_per_epoch)
    out = []
    for step in range(epochs * steps_per_epoch):
        if step % steps_per_epoch == 0:
            out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_with_warmup_at_chosen_epochs():
    conf = LrScheduleConf(type="cosine", min_lr=0.001, warmup=WarmupConf(epochs=2, start_factor=0.1))
    lrs = lrs_at_epoch_starts(conf, epochs=10, steps_per_epoch=5)
    assert lrs[0] == pytest.approx(0.01)  # 0.1 * start_factor
    assert lrs[1] == pytest.approx(0.01 + 0.09 * 5 / 10)  # halfway through the warmup
    for e in range(2, 10):  # then cosine over the 8 remaining epochs, as the per-epoch DARTS schedule
        assert lrs[e] == pytest.approx(0.001 + 0.099 * (1 + math.cos(math.pi * (e - 2) / 8)) / 2), e


def test_step_multistep_constant_and_one_cycle_values():
    step = lrs_at_epoch_starts(LrScheduleConf(type="step", step_size=3, gamma=0.5), 8, 4)
    assert step == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025])
    warm = WarmupConf(epochs=1, start_factor=0.0)
    multi = lrs_at_epoch_starts(LrScheduleConf(type="multistep", milestones=[3, 5], gamma=0.1, warmup=warm), 7, 4)
    assert multi == pytest.approx([0.0, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])  # milestones count from the start
    assert lrs_at_epoch_starts(LrScheduleConf(type="constant"), 3, 2) == pytest.approx([0.1] * 3)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    sched = build_scheduler(LrScheduleConf(type="one_cycle", max_lr=0.5, pct_start=0.25), opt, 4, 10)
    seen = []
    for _ in range(40):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(seen) == pytest.approx(0.5, rel=1e-3) and seen.index(max(seen)) in (9, 10)
    assert seen[0] == pytest.approx(0.5 / 25) and seen[-1] < 1e-4


def test_schedule_config_errors():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ConfigError, match="warmup.epochs"):
        build_scheduler(LrScheduleConf(warmup=WarmupConf(epochs=5)), opt, 5, 2)
    with pytest.raises(ConfigError, match="milestones"):
        build_scheduler(LrScheduleConf(type="multistep", milestones=[1], warmup=WarmupConf(epochs=2)), opt, 5, 2)


# -- metrics and losses ------------------------------------------------------------------------


def test_topk_with_three_classes():
    logits = torch.tensor([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [0.0, 1.0, 5.0]])
    labels = torch.tensor([0, 1, 2, 1])
    top1, top2 = topk_correct(logits, labels, 2)
    assert (int(top1), int(top2)) == (1, 3)  # rows 0, 1 and 3 have their label among the two largest
    top1, top5 = topk_correct(logits, labels, 5)  # k capped at 3 classes: every label is within the top 3
    assert (int(top1), int(top5)) == (1, 4)
    meter = EpochMeter(CPU)
    meter.update(logits, labels, torch.tensor(2.0))
    assert meter.k == 3
    assert meter.result("val") == pytest.approx({"val_loss": 2.0, "val_top1": 0.25, "val_topk": 1.0})


def test_history_tracks_the_best_validation_epoch():
    h = MetricsHistory()
    assert h.add({"epoch": 0, "val_top1": 0.5}) and not h.add({"epoch": 1, "val_top1": 0.4})
    assert h.add({"epoch": 2, "val_top1": 0.7}) and not h.add({"epoch": 3})
    assert h.best_epoch == 2 and h.records[1]["best_epoch"] == 0 and h.records[3]["best_val_top1"] == 0.7


def test_loss_with_label_smoothing_and_aux_weight():
    logits, aux, y = torch.randn(6, 4), torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    loss = TrainLoss(LossConf(label_smoothing=0.1), aux_weight=0.4)
    expected = F.cross_entropy(logits, y, label_smoothing=0.1) + 0.4 * F.cross_entropy(aux, y, label_smoothing=0.1)
    assert torch.allclose(loss((logits, aux), y), expected)
    assert torch.allclose(loss((logits, None), y), F.cross_entropy(logits, y, label_smoothing=0.1))
    assert torch.allclose(loss(logits, y), loss((logits, None), y))
    with pytest.raises(ConfigError, match="lossfn.type"):
        TrainLoss(LossConf(type="mse"))


# -- optimizers --------------------------------------------------------------------------------


class SuperNet(nn.Module):
    """Conv + BN + linear, plus an architecture parameter that must stay out of the weight optimizer."""

    def __init__(self, n_classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, n_classes)
        self.alpha = nn.Parameter(torch.zeros(2, n_classes))

    def named_arch_params(self):
        yield "alpha", self.alpha

    def arch_params(self):
        yield self.alpha

    def weights(self):
        return (p for n, p in self.named_parameters() if n != "alpha")

    def forward(self, x):
        h = self.bn(self.conv(x)).relu().mean((2, 3))
        return self.fc(h) + self.alpha.mean(0), None


def test_weight_decay_exemption_for_bn_and_biases():
    model = SuperNet()
    groups = param_groups(model.weights(), 3e-4, 0.0)
    decayed = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 3e-4 and groups[1]["weight_decay"] == 0.0
    assert decayed == {id(model.conv.weight), id(model.fc.weight)}
    assert {id(p) for p in groups[1]["params"]} == {
        id(model.conv.bias),
        id(model.bn.weight),
        id(model.bn.bias),
        id(model.fc.bias),
    }
    assert len(param_groups(model.weights(), 3e-4, None)) == 1


def test_optimizers_never_see_architecture_parameters():
    model = SuperNet()
    for kind in ("sgd", "adam", "adamw"):
        opt = build_optimizer(OptimizerConf(type=kind, decay_bn=0.0, nesterov=kind == "sgd"), model.weights())
        ids = {id(p) for g in opt.param_groups for p in g["params"]}
        assert id(model.alpha) not in ids and len(ids) == 6
    assert isinstance(build_optimizer(OptimizerConf(type="adamw"), model.parameters()), torch.optim.AdamW)
    with pytest.raises(ConfigError, match="momentum"):
        build_optimizer(OptimizerConf(nesterov=True, momentum=0.0), model.parameters())


def test_amp_and_channels_last_only_act_on_cuda():
    p = Precision(AmpConf(enabled=True, dtype="fp16"), channels_last=True, device=CPU)
    assert not p.amp and not p.channels_last and not p.scaler.is_enabled()
    x = torch.randn(2, 3, 4, 4)
    assert p.prepare_input(x) is x
    with p.autocast():
        assert torch.mm(torch.randn(2, 2), torch.randn(2, 2)).dtype == torch.float32


# -- the training loop -------------------------------------------------------------------------


def make_ctx(tmp_path: Path, *overrides: str):
    from archnas.config import parse_override_tokens

    conf = load_config([], parse_override_tokens(["common.tensorboard=false", *overrides], set())[0])
    run = RunContext.create(conf, tmp_path / "exp", [])
    return conf, run.phase("eval", conf.nas.eval)


class Linear64(nn.Module):
    """No BatchNorm (whose batch statistics differ between chunks), float64, with an aux head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh())
        self.head, self.aux = nn.Linear(16, 10), nn.Linear(16, 10)
        self.double()

    def forward(self, x):
        h = self.body(x.double())
        return self.head(h), self.aux(h)


@pytest.mark.parametrize("chunks,batch", [(4, 32), (3, 10)])
def test_gradient_accumulation_equals_one_big_batch(tmp_path, chunks, batch):
    _, ctx = make_ctx(tmp_path)
    torch.manual_seed(1)
    x, y = torch.randn(batch, 1, 8, 8), torch.randint(0, 10, (batch,))
    results = []
    for n in (1, chunks):
        conf = TrainerConf(
            batch_chunks=n,
            grad_clip=0.5,
            aux_weight=0.4,
            lossfn=LossConf(label_smoothing=0.1),
            optimizer=OptimizerConf(lr=0.1, decay_bn=0.0),
        )
        trainer = Trainer(conf, Linear64(), ctx)
        trainer.run_step((x, y))
        trainer.run_step((x.flip(0), y.flip(0)))  # a second step exercises momentum on accumulated grads
        results.append(([p.detach().clone() for p in trainer.model.parameters()], trainer.meter.result("train")))
    (big, big_metrics), (acc, acc_metrics) = results
    for a, b in zip(big, acc):
        assert torch.allclose(a, b, rtol=0, atol=1e-13)
    assert big_metrics == pytest.approx(acc_metrics, rel=1e-12)
    assert not torch.equal(big[0], Linear64().body[1].weight.detach())  # the steps did change the weights


class Recorder(HookBase):
    def __init__(self):
        self.events = []

    def before_fit(self):
        self.events.append("before_fit")

    def before_epoch(self):
        self.events.append(f"before_epoch {self.trainer.epoch}")

    def after_step(self):
        self.events.append("step")

    def after_epoch(self):
        self.events.append(f"after_epoch {self.trainer.epochs_done}")

    def after_fit(self):
        self.events.append("after_fit")


class DropPathNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)
        self.probs = []

    def drop_path_prob(self, p):
        self.probs.append(p)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))


def digits(tmp_path, **loader):
    return build_data(
        DatasetConf(name="digits", limit_train=256, limit_test=64),
        LoaderConf(cutout=0, **loader),
        seed=0,
        device=CPU,
        cache_dir=tmp_path / "cache",
    )


def test_fit_runs_hooks_ramps_drop_path_and_writes_metrics(tmp_path):
    _, ctx = make_ctx(tmp_path, "common.tensorboard=true")
    data = digits(tmp_path, train_batch=64)
    model, rec = DropPathNet(), Recorder()
    conf = TrainerConf(
        epochs=3, drop_path_prob=0.3, optimizer=OptimizerConf(lr=0.05), validation=ValidationConf(freq=2)
    )
    history = Trainer(conf, model, ctx, hooks=[rec]).fit(data.loader("train", True), data.loader("test", False))
    assert model.probs == pytest.approx([0.0, 0.1, 0.2])
    steps = ["step"] * 4
    assert rec.events == [
        "before_fit",
        "before_epoch 0",
        *steps,
        "after_epoch 1",
        "before_epoch 1",
        *steps,
        "after_epoch 2",
        "before_epoch 2",
        *steps,
        "after_epoch 3",
        "after_fit",
    ]
    lines = [json.loads(line) for line in (ctx.dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3] and lines == history.records
    first = lines[0]
    assert {
        "train_loss",
        "train_top1",
        "train_topk",
        "k",
        "lr",
        "step_time",
        "epoch_time",
        "images_per_s",
        "drop_path_prob",
        "best_epoch",
        "global_step",
    } <= set(first)
    assert "val_top1" not in first and "val_top1" in lines[1] and "val_top1" in lines[2]  # freq 2, and the last
    assert first["k"] == 5 and first["global_step"] == 4 and first["lr"] == pytest.approx(0.05)
    assert history.best_epoch in (2, 3) and lines[2]["train_loss"] < lines[0]["train_loss"]
    assert list((ctx.dir / "tb").glob("events.out.tfevents.*"))
    ckpt = read_checkpoint(ctx.dir / "checkpoint_last.pt")
    assert ckpt["state"]["trainer"]["epochs_done"] == 3 and (ctx.dir / "checkpoint_best.pt").is_file()


class ArchLike(Trainer):
    """What the search phase's ArchTrainer does with the extension points."""

    def __init__(self, conf, model, env):
        super().__init__(conf, model, env, params=model.weights())
        self.alpha_opt = torch.optim.Adam(self.base_model.arch_params(), lr=0.01)
        self.register_state("alpha_optimizer", self.alpha_opt)
        self.register_state("arch_params", ArchParamsState(self.base_model))
        self.arch_steps = 0

    def run_step(self, batch):
        self.alpha_opt.zero_grad()
        logits, _ = self.model(batch[0])
        F.cross_entropy(logits, batch[1]).backward()
        self.alpha_opt.step()
        self.arch_steps += 1
        super().run_step(batch)

    def epoch_metrics(self):
        return {"alpha_norm": float(self.base_model.alpha.detach().norm())}


def test_subclass_extends_step_state_and_metrics(tmp_path):
    _, ctx = make_ctx(tmp_path)
    data = digits(tmp_path, train_batch=128)
    model = SuperNet(n_classes=10)
    trainer = ArchLike(TrainerConf(epochs=1), model, ctx)
    weight_ids = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert id(model.alpha) not in weight_ids
    trainer.fit(data.loader("train", True))
    assert trainer.arch_steps == 2 and float(model.alpha.detach().norm()) > 0
    ckpt = read_checkpoint(ctx.dir / "checkpoint_last.pt")
    assert "alpha_optimizer" in ckpt["state"] and torch.equal(
        ckpt["state"]["arch_params"]["alpha"], model.alpha.detach()
    )
    assert json.loads((ctx.dir / "metrics.jsonl").read_text())["alpha_norm"] == pytest.approx(
        float(model.alpha.detach().norm())
    )


class SignalAt(HookBase):
    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum

    def after_step(self):
        if self.trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def weights_after(tmp_path: Path, name: str, hooks=(), resume_from_interrupt=False):
    _, ctx = make_ctx(tmp_path / name, "common.deterministic=true", "common.checkpoint.every_epochs=1")
    data = digits(tmp_path, train_batch=64)
    torch.manual_seed(0)
    conf = TrainerConf(epochs=2, optimizer=OptimizerConf(lr=0.05))
    trainer = Trainer(conf, DropPathNet(), ctx, hooks=hooks)
    trainer.fit(data.loader("train", True), data.loader("test", False))
    return trainer


def test_sigint_finishes_the_step_saves_and_resumes_exactly(tmp_path):
    straight = weights_after(tmp_path, "straight")
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(RunInterrupted) as err:
        weights_after(tmp_path, "stopped", hooks=[SignalAt(3, signal.SIGINT)])
    assert err.value.exit_code == 130 and "SIGINT" in str(err.value) and "rerun the same command" in str(err.value)
    stopped_ckpt = read_checkpoint(tmp_path / "stopped" / "exp" / "eval" / "checkpoint_last.pt")
    assert stopped_ckpt["state"]["trainer"]["global_step"] == 3 and stopped_ckpt["state"]["trainer"]["epoch_step"] == 3
    assert signal.getsignal(signal.SIGINT) is before  # the handler restored to what it was
    resumed = weights_after(tmp_path, "stopped")
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert resumed.global_step == straight.global_step == 8


def test_cli_prints_how_to_resume_and_exits_with_the_signal_code(monkeypatch, capsys):
    import archnas.cli as cli

    def interrupted(argv):
        raise RunInterrupted(signal.SIGTERM, "stopped by SIGTERM after epoch 1/3, step 7/45; checkpoint saved to x")

    monkeypatch.setattr(cli, "_run", interrupted)
    assert cli.main(["--config", "darts"]) == 143
    err = capsys.readouterr().err
    assert "stopped by SIGTERM" in err and "resume with: " in err
