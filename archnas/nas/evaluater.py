"""Evaluater: retrain a final architecture from scratch at the eval macro and report test accuracy.

The architecture comes from `nas.eval.final_desc` (a desc file, a genotype string or a named
genotype such as DARTS_V2) or, when that is null, from the search phase. Its cells are copied
into the eval macro (`full_model_desc.yaml`: e.g. 20 cells of 36 channels), trained with the aux
tower, drop-path ramp, cutout and the configured schedule, and evaluated every
`trainer.validation.freq` epochs. The phase folder gets `model_best.pt` and `model_last.pt`
(weights plus desc, see `archnas.model.model_file`) and `metrics.json`.

The checkpoint carries the fingerprint of the desc being trained, so a rerun after the search
produced a different architecture refuses to resume the old eval instead of mixing the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from archnas.config.schema import EvalConf
from archnas.context import PhaseContext
from archnas.descs.builder import ModelDescBuilder
from archnas.descs.desc_io import save_desc
from archnas.descs.model_desc import ModelDesc
from archnas.descs.resolve import desc_from_spec
from archnas.errors import ConfigError
from archnas.model import Model
from archnas.model.model_file import save_model_file
from archnas.nas.searcher import check_completed, load_data
from archnas.stats import model_stats
from archnas.training.checkpoint import phase_config
from archnas.training.hooks import HookBase
from archnas.training.metrics import MetricsHistory
from archnas.training.trainer import Trainer
from archnas.utils import atomic

METRICS_FILE = "metrics.json"


@dataclass
class EvalResult:
    metrics: dict[str, Any]


class SaveBestModel(HookBase):
    """`model_best.pt` whenever the validation metric improves (rank 0)."""

    def after_epoch(self) -> None:
        t = self.trainer
        if t.new_best and t.ctx.run.is_main:
            record = t.history.last
            save_model_file(t.ctx.dir / "model_best.pt", t.base_model,
                            {"epoch": record["epoch"], "val_top1": record.get("val_top1")})


class Evaluater:
    def __init__(self, builder: ModelDescBuilder, force: bool = False):
        self.builder = builder
        self.force = force

    def evaluate(self, ctx: PhaseContext, searched: Optional[ModelDesc]) -> EvalResult:
        """Train and test the architecture; `searched` is the search phase's final desc, if any."""
        conf: EvalConf = ctx.conf
        marker = ctx.dir / METRICS_FILE
        done = check_completed(ctx, marker, self.force)
        data = load_data(ctx, conf.loader)
        desc = self.full_desc(conf, data.info, searched)
        if done is not None and done.get("fingerprint") == desc.fingerprint():
            ctx.log.info(f"eval already finished ({marker}); skipping it")
            return EvalResult(done)
        if ctx.run.is_main:
            save_desc(desc, ctx.dir / "full_model_desc.yaml")
        model = self.build_model(desc).to(ctx.device)
        stats = model_stats(model, [data.info.channels, *data.info.image_size])
        ctx.log.info(
            f"eval: {len(desc.cells)} cells, {stats['params_without_aux']:,} parameters without the aux tower, "
            f"{stats['macs']:,} multiply-adds per image; {len(data.parts['train'])} train / {len(data.parts['test'])} test images"
        )
        trainer = Trainer(conf.trainer, model, ctx, fingerprint=desc.fingerprint(), force=self.force,
                          hooks=[SaveBestModel()])
        held_out = "val" if "val" in data.parts else "test"
        history = trainer.fit(data.loader("train", training=True), data.loader(held_out, training=False))
        test = trainer.evaluate(data.loader("test", training=False), "test")
        metrics = self.summarize(history, test, stats, desc)
        if ctx.run.is_main:
            save_model_file(ctx.dir / "model_last.pt", model, {"epoch": len(history.records) - 1, "test_top1": test["test_top1"]})
            metrics["config"] = phase_config(ctx.run.conf, ctx.conf)
            atomic.write_json(marker, metrics)  # last: marks the phase complete
        ctx.log.info(f"test accuracy {test['test_top1']:.2%} (best {held_out} {metrics['best_top1']:.2%} "
                     f"at epoch {metrics['best_epoch'] + 1}); results in {ctx.dir}")
        return EvalResult(metrics)

    def full_desc(self, conf: EvalConf, info, searched: Optional[ModelDesc]) -> ModelDesc:
        """The network to train: the chosen cells copied into the eval macro."""
        if conf.final_desc:
            return desc_from_spec(conf.final_desc, conf.model_desc, info, self.builder)
        if searched is None:
            raise ConfigError("the eval phase has no architecture: run the search phase, or set nas.eval.final_desc "
                              "to a desc file, a genotype string or a named genotype such as DARTS_V2")
        return self.builder.build(conf.model_desc, info, template=searched)

    def build_model(self, desc: ModelDesc) -> Model:
        return Model(desc, droppath=True, affine=True)

    @staticmethod
    def summarize(history: MetricsHistory, test: dict[str, float], stats: dict[str, Any], desc: ModelDesc) -> dict[str, Any]:
        return {
            "test_top1": test["test_top1"],
            "test_topk": test.get("test_topk"),
            "test_loss": test["test_loss"],
            "best_top1": history.best_value,
            "best_epoch": history.best_epoch,
            "epochs": len(history.records),
            "params": stats["params"],
            "params_without_aux": stats["params_without_aux"],
            "macs": stats["macs"],
            "train_time": sum(r.get("epoch_time", 0.0) for r in history.records),
            "fingerprint": desc.fingerprint(),
        }

