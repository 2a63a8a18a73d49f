"""Checkpoints: contents, safe loading, corruption fallback, refusal of a different run, --force."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from archnas.config import config_to_dict, load_config, parse_override_tokens
from archnas.config.compat import is_safe_key, phase_config
from archnas.config.schema import LoaderConf
from archnas.context import RunContext
from archnas.data import build_data
from archnas.errors import CheckpointError
from archnas.training import hooks as hooks_module
from archnas.training.checkpoint import PREV, Checkpointer, check_plain, read_checkpoint
from archnas.training.trainer import Trainer

CPU = torch.device("cpu")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).relu().mean((2, 3)))


def run(tmp_path: Path, *overrides: str, fingerprint: str = "net-a", force: bool = False, epochs: int = 2) -> Trainer:
    tokens = [
        "common.tensorboard=false",
        f"nas.eval.trainer.epochs={epochs}",
        "nas.eval.loader.cutout=0",
        "nas.eval.loader.train_batch=64",
        "dataset.limit_train=320",
        *overrides,
    ]
    conf = load_config([], parse_override_tokens(tokens, set())[0])
    ctx = RunContext.create(conf, tmp_path / "exp", []).phase("eval", conf.nas.eval)
    data = build_data(
        conf.dataset, conf.nas.eval.loader, seed=conf.common.seed, device=CPU, cache_dir=tmp_path / "cache"
    )
    checkpointer = Checkpointer.in_env(ctx, config=phase_config(conf, conf.nas.eval), full_config=config_to_dict(conf),
                                       fingerprint=fingerprint, force=force)
    trainer = Trainer(conf.nas.eval.trainer, Net(), ctx, checkpointer=checkpointer)
    trainer.fit(data.loader("train", True))
    return trainer


def folder(tmp_path: Path) -> Path:
    return tmp_path / "exp" / "eval"


def test_contents_load_with_weights_only(tmp_path):
    trainer = run(tmp_path, "common.checkpoint.every_steps=3")
    ckpt = torch.load(folder(tmp_path) / "checkpoint_last.pt", weights_only=True)
    assert (
        ckpt["format"].startswith("archnas-checkpoint") and ckpt["archnas_version"] and ckpt["fingerprint"] == "net-a"
    )
    assert set(ckpt["state"]) == {"model", "optimizer", "meter", "history", "trainer", "scheduler", "train_loader"}
    assert len(ckpt["rng"]["ranks"]) == 1 and set(ckpt["rng"]["ranks"][0]) >= {"python", "numpy", "torch"}
    assert ckpt["state"]["trainer"]["global_step"] == 10 and ckpt["state"]["train_loader"] == {
        "epoch": 1,
        "position": 5,
    }
    assert ckpt["config"]["nas"] == {"algo": "darts", "eval": ckpt["full_config"]["nas"]["eval"]}  # only this phase
    assert "search" in ckpt["full_config"]["nas"] and len(ckpt["config_hash"]) == 16
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(ckpt["state"]["model"][name], tensor)
    assert (folder(tmp_path) / PREV).is_file()


def test_non_plain_state_fails_at_save_naming_the_entry():
    check_plain({"a": [1, 2.0, "x", None, torch.zeros(1)], "b": {"c": (1, 2)}}, "ckpt")
    with pytest.raises(TypeError, match=r"ckpt\.state\.sampler\[1\] is a pathlib\.PosixPath"):
        check_plain({"state": {"sampler": [0, Path("/x")]}}, "ckpt")


def test_truncated_last_falls_back_to_the_previous_checkpoint(tmp_path, caplog):
    run(tmp_path, "common.checkpoint.every_steps=3")
    last = folder(tmp_path) / "checkpoint_last.pt"
    prev_step = read_checkpoint(folder(tmp_path) / PREV)["state"]["trainer"]["global_step"]
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(last)
    trainer = run(tmp_path, "common.checkpoint.every_steps=3", epochs=2)
    assert prev_step == 9 and trainer.global_step == 10
    assert "trying the previous checkpoint" in (folder(tmp_path) / "log.txt").read_text()


def test_flipped_byte_is_caught_by_the_crc_check(tmp_path):
    run(tmp_path)
    last = folder(tmp_path) / "checkpoint_last.pt"
    with zipfile.ZipFile(last) as z:
        info = next(i for i in z.infolist() if "/data/" in i.filename and i.file_size > 64)
    data = bytearray(last.read_bytes())
    name_len, extra_len = (
        int.from_bytes(data[info.header_offset + k : info.header_offset + k + 2], "little") for k in (26, 28)
    )
    start = info.header_offset + 30 + name_len + extra_len  # the tensor's bytes follow its local zip header
    data[start + info.file_size // 2] ^= 0xFF
    last.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="fails its CRC check"):
        read_checkpoint(last)


def test_no_usable_checkpoint_is_a_clear_error(tmp_path):
    run(tmp_path)
    for name in ("checkpoint_last.pt", PREV):
        (folder(tmp_path) / name).write_bytes(b"not a checkpoint")
    with pytest.raises(
        CheckpointError, match=r"(?s)no usable checkpoint.*checkpoint_last\.pt.*checkpoint_prev\.pt.*from scratch"
    ):
        run(tmp_path)


def test_changed_config_is_refused_with_the_keys_unless_forced(tmp_path):
    run(tmp_path, epochs=1)
    with pytest.raises(CheckpointError) as err:
        run(tmp_path, "nas.eval.trainer.optimizer.lr=0.5", "common.seed=9", epochs=1)
    message = str(err.value)
    assert "nas.eval.trainer.optimizer.lr: 0.025 -> 0.5" in message and "common.seed: 2 -> 9" in message
    assert "--force" in message
    forced = run(tmp_path, "nas.eval.trainer.optimizer.lr=0.5", "common.seed=9", epochs=1, force=True)
    assert forced.epochs_done == 1
    assert "resuming despite differences" in (folder(tmp_path) / "log.txt").read_text()


def test_other_fingerprint_is_refused(tmp_path):
    run(tmp_path, epochs=1)
    with pytest.raises(CheckpointError, match="model fingerprint: 'net-a' -> 'net-b'"):
        run(tmp_path, fingerprint="net-b", epochs=1)


def test_safe_keys_and_other_phases_do_not_block_resume(tmp_path):
    run(tmp_path, epochs=1)
    resumed = run(
        tmp_path,
        "common.log_level=DEBUG",
        "common.checkpoint.every_steps=2",
        "nas.eval.loader.workers=2",
        "nas.search.trainer.optimizer.lr=0.5",
        epochs=2,
    )
    assert resumed.epochs_done == 2 and len(resumed.history.records) == 2
    assert is_safe_key("nas.search.post_train.trainer.epochs") and not is_safe_key("nas.eval.lr_schedule.warmup.epochs")


def test_more_epochs_recompute_the_schedule_for_the_new_length(tmp_path):
    run(tmp_path, epochs=2)
    extended = run(tmp_path, epochs=4)
    fresh = run(tmp_path / "fresh", epochs=4)
    assert extended.optimizer.param_groups[0]["lr"] == pytest.approx(fresh.optimizer.param_groups[0]["lr"])
    assert extended.scheduler.state_dict()["T_max"] == fresh.scheduler.state_dict()["T_max"] == 20
    assert [r["lr"] for r in extended.history.records[2:]] == pytest.approx(
        [r["lr"] for r in fresh.history.records[2:]]
    )


def test_phase_config_falls_back_to_the_whole_config_for_foreign_sections(tmp_path):
    conf = load_config([])
    assert set(phase_config(conf, conf.nas.search)["nas"]) == {"algo", "search"}
    assert set(phase_config(conf, LoaderConf())) == {"common", "dataset", "nas"}
    assert phase_config(conf, LoaderConf())["nas"]["eval"]


def test_checkpoint_every_minutes(tmp_path, monkeypatch):
    clock = iter(range(0, 10_000, 20))  # every call to the clock: 20 s later
    monkeypatch.setattr(hooks_module, "monotonic", lambda: next(clock))
    trainer = run(tmp_path, "common.checkpoint.every_minutes=1.0", "common.checkpoint.every_epochs=0", epochs=1)
    saved = read_checkpoint(folder(tmp_path) / PREV)["state"]["trainer"]["global_step"]
    assert 0 < saved < trainer.global_step  # a mid-epoch save happened because time passed
