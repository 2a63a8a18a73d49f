"""Evaluater: retrain a final architecture from scratch at the eval macro and report test accuracy.

The architecture comes from `nas.eval.final_desc` (a desc file, a genotype string or a named
genotype such as DARTS_V2) or, when that is null, from the search phase. Its cells are copied
into the eval macro (`full_model_desc.yaml`: e.g. 20 cells of 36 channels), trained with the aux
tower, drop-path ramp, cutout and the configured schedule, and evaluated every
`trainer.validation.freq` epochs. The phase folder gets `model_best.pt` and `model_last.pt`
(weights plus desc, see `archnas.model.model_file`) and, last, `metrics.json`.

The checkpoint and the marker carry the fingerprint of the desc being trained: a finished eval
of another architecture is not reused, and a rerun after the search produced a different
architecture refuses to resume the old eval instead of mixing the two.
"""

from __future__ import annotations

from typing import Any, Optional

from archnas.context import PhaseContext
from archnas.descs.dataset_info import DatasetInfo
from archnas.descs.desc_io import save_desc
from archnas.descs.model_desc import ModelDesc
from archnas.errors import ConfigError
from archnas.model import Model, ModelDescBuilder, desc_from_spec
from archnas.model.model_file import save_model_file
from archnas.nas.phase import Phase
from archnas.nas.searcher import SearchResult, load_data
from archnas.stats import dataset_info, model_stats
from archnas.training.hooks import HookBase
from archnas.training.metrics import MetricsHistory
from archnas.training.trainer import Trainer

METRICS_FILE = "metrics.json"


class SaveBestModel(HookBase):
    """`model_best.pt` whenever the validation metric improves (rank 0)."""

    def after_epoch(self) -> None:
        t = self.trainer
        if t.new_best and t.env.is_main:
            record = t.history.last
            save_model_file(t.env.dir / "model_best.pt", t.base_model,
                            {"epoch": record["epoch"], "val_top1": record.get("val_top1")})


class Evaluater(Phase):
    name = "eval"
    kind = "eval"
    marker = METRICS_FILE

    def searched(self) -> Optional[ModelDesc]:
        """The final desc of this experiment's search phase, if it ran or had finished."""
        for result in self.experiment.results.values():
            if isinstance(result, SearchResult):
                return result.final_desc
        return None

    def full_desc(self, info: DatasetInfo) -> ModelDesc:
        """The network to train: the chosen cells copied into the eval macro."""
        conf = self.section
        if conf.final_desc:
            return desc_from_spec(conf.final_desc, conf.model_desc, info)
        searched = self.searched()
        if searched is None:
            raise ConfigError(f"the eval phase has no architecture: there is no finished search in "
                              f"{self.run.exp_dir / 'search'} and nas.eval.final_desc is null; run the search, or set "
                              "nas.eval.final_desc to a desc file, a genotype string or a name such as DARTS_V2")
        return ModelDescBuilder().build(conf.model_desc, info, template=searched)

    def finished(self) -> Optional[dict[str, Any]]:
        """A finished eval counts only for the architecture it trained."""
        done = super().finished()
        if done is None:
            return None
        conf = self.run.conf
        desc = self.full_desc(dataset_info(conf.dataset, conf.common.cache_dir))
        return done if done.get("fingerprint") == desc.fingerprint() else None

    def load(self, done: dict[str, Any]) -> dict[str, Any]:
        return done

    def summary(self, result: dict[str, Any]) -> dict[str, Any]:
        return {**{k: v for k, v in result.items() if k != "config"}, "peak_memory": self.peak_memory}

    def work(self, ctx: PhaseContext) -> dict[str, Any]:
        conf = ctx.conf
        data = load_data(ctx, conf.loader)
        desc = self.full_desc(data.info)
        if ctx.is_main:
            save_desc(desc, ctx.dir / "full_model_desc.yaml")
        model = Model(desc, droppath=True, affine=True).to(ctx.device)
        stats = model_stats(model, [data.info.channels, *data.info.image_size])
        ctx.log.info(
            f"eval: {len(desc.cells)} cells, {stats['params_without_aux']:,} parameters without the aux tower, "
            f"{stats['macs']:,} multiply-adds per image; {len(data.parts['train'])} train / {len(data.parts['test'])} test images"
        )
        trainer = self.build_trainer(ctx, model, desc)
        held_out = "val" if "val" in data.parts else "test"
        history = trainer.fit(data.loader("train", training=True), data.loader(held_out, training=False))
        test = trainer.evaluate(data.loader("test", training=False), "test")
        metrics = self.summarize(history, test, stats, desc)
        if ctx.is_main:
            save_model_file(ctx.dir / "model_last.pt", model, {"epoch": len(history.records) - 1, "test_top1": test["test_top1"]})
        self.write_marker(ctx, metrics)  # last: marks the phase complete
        ctx.log.info(f"test accuracy {test['test_top1']:.2%} (best {held_out} {metrics['best_top1']:.2%} "
                     f"at epoch {metrics['best_epoch'] + 1}); results in {ctx.dir}")
        return {**metrics, "config": self.config_record()}

    def build_trainer(self, ctx: PhaseContext, model: Model, desc: ModelDesc) -> Trainer:
        """The trainer of the eval phase (also what `scripts/bench_supernet.py` times)."""
        return Trainer(ctx.conf.trainer, model, ctx, checkpointer=self.checkpointer(ctx, desc.fingerprint()),
                       hooks=[SaveBestModel()])

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
