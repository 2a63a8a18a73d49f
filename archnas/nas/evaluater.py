"""Evaluater: retrain a final architecture from scratch at the eval macro and report test accuracy.

The architecture comes from `nas.eval.final_desc` (a desc file, a genotype string or a named
genotype such as DARTS_V2) or, when that is null, from the search phase. Its cells are copied
into the eval macro (`full_model_desc.yaml`: e.g. 20 cells of 36 channels), trained with the aux
tower, drop-path ramp, cutout and the configured schedule, and evaluated every
`trainer.validation.freq` epochs. The phase folder gets `model_best.pt` and `model_last.pt`
(weights plus desc, see `archnas.model.model_file`) and, last, `metrics.json`.

For a search space over a module (`nas.search.space`), the network is that space's at the
searched architecture (or at `nas.eval.final_desc`: an architecture file, mapping or NAS-Bench-201
string): built from scratch (`nas.eval.mode: retrain`, as `fixed_arch` builds it) or cut out of
the searched supernet with the weights it trained (`tune`, as `freeze` does), and `arch.yaml`
records it in the phase folder.

The checkpoint and the marker carry the fingerprint of the network being trained: a finished eval
of another architecture is not reused, and a rerun after the search produced a different
architecture refuses to resume the old eval instead of mixing the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from torch import nn

from archnas.config.schema import EvalMode
from archnas.context import PhaseContext
from archnas.descs.dataset_info import DatasetInfo
from archnas.descs.desc_io import save_desc
from archnas.descs.model_desc import ModelDesc
from archnas.errors import ConfigError
from archnas.model import Model, ModelDescBuilder, desc_from_spec
from archnas.model.model_file import save_model_file
from archnas.nas.phase import Phase
from archnas.nas.searcher import SearchResult, load_data
from archnas.nas.spaces import ModuleSpace, check_space, eval_space
from archnas.space import freeze
from archnas.space.arch_io import save_arch
from archnas.stats import dataset_info, model_stats
from archnas.training.checkpoint import LAST, read_checkpoint
from archnas.training.hooks import HookBase
from archnas.training.metrics import MetricsHistory
from archnas.training.trainer import Trainer

METRICS_FILE = "metrics.json"


class SaveBestModel(HookBase):
    """`model_best.pt` whenever the validation metric improves (rank 0)."""

    def __init__(self, space: Optional[dict[str, Any]] = None):
        self.space = space

    def after_epoch(self) -> None:
        t = self.trainer
        if t.new_best and t.env.is_main:
            record = t.history.last
            save_model_file(t.env.dir / "model_best.pt", t.base_model,
                            {"epoch": record["epoch"], "val_top1": record.get("val_top1")}, space=self.space)


@dataclass
class Network:
    """What the eval phase trains: a desc-built Model, or the network of a module space's architecture."""

    fingerprint: str  # what its checkpoints and marker must match
    what: str  # for the log
    build: Callable[[], nn.Module]
    save: Callable[[Path], None]  # its description into the phase folder
    space: Optional[dict[str, Any]] = None  # how a model file rebuilds it (module spaces)


class Evaluater(Phase):
    name = "eval"
    kind = "eval"
    marker = METRICS_FILE

    def searched(self) -> Optional[SearchResult]:
        """This experiment's search result, if the search ran or had finished."""
        return next((r for r in self.experiment.results.values() if isinstance(r, SearchResult)), None)

    def _no_architecture(self) -> ConfigError:
        return ConfigError(f"the eval phase has no architecture: there is no finished search in "
                           f"{self.run.exp_dir / 'search'} and nas.eval.final_desc is null; run the search, or set "
                           "nas.eval.final_desc to a desc file, a genotype string or a name such as DARTS_V2 (for a "
                           "module space: an architecture file, a {label: choice} mapping or a NAS-Bench-201 string)")

    def full_desc(self, info: DatasetInfo) -> ModelDesc:
        """The DARTS network to train: the chosen cells copied into the eval macro."""
        conf = self.section
        if conf.final_desc:
            return desc_from_spec(conf.final_desc, conf.model_desc, info)
        searched = self.searched()
        if searched is None or searched.final_desc is None:
            raise self._no_architecture()
        return ModelDescBuilder().build(conf.model_desc, info, template=searched.final_desc)

    def network(self, info: DatasetInfo) -> Network:
        conf = self.section
        space = eval_space(self.run.conf)
        if space is None:
            if conf.mode == EvalMode.tune:
                raise ConfigError("nas.eval.mode: tune fine-tunes a searched space over a module (nas.search.space); "
                                  "DARTS cells are retrained (nas.eval.mode=retrain)")
            desc = self.full_desc(info)
            return Network(desc.fingerprint(), f"{len(desc.cells)} cells", lambda: Model(desc, droppath=True, affine=True),
                           lambda folder: save_desc(desc, folder / "full_model_desc.yaml"))
        if conf.final_desc:
            arch = space.parse(conf.final_desc)
        else:
            searched = self.searched()
            if searched is None or searched.arch is None:
                raise self._no_architecture()
            arch = searched.arch
        arch = check_space(space, info).check_arch(arch)
        record = {**space.description(), "input_shape": [info.channels, *info.image_size],
                  "n_classes": info.n_classes, "arch": arch}
        if conf.mode == EvalMode.tune:
            if self.run.conf.nas.eval.space:
                raise ConfigError("nas.eval.mode: tune fine-tunes the searched supernet itself; leave nas.eval.space "
                                  "empty (the search's space)")
            build = lambda: self.inherited(space, arch, info)  # noqa: E731
        else:
            build = lambda: space.network(arch, info)  # noqa: E731
        return Network(space.fingerprint(arch) + f"-{conf.mode}", f"{space.title} at {arch} ({conf.mode})", build,
                       lambda folder: save_arch(folder, arch, space.title, None), record)

    def inherited(self, space: ModuleSpace, arch: dict[str, Any], info: DatasetInfo) -> nn.Module:
        """The searched supernet's network at `arch`, with the weights the search trained."""
        path = self.run.exp_dir / self.strategy.supernet_folder / LAST
        if not path.is_file():
            raise ConfigError(f"nas.eval.mode: tune needs the search's supernet, {path}, which does not exist")
        supernet = check_space(space, info)
        supernet.load_state_dict(read_checkpoint(path)["state"]["model"])
        return freeze(supernet, arch)

    def finished(self) -> Optional[dict[str, Any]]:
        """A finished eval counts only for the network it trained."""
        done = super().finished()
        if done is None:
            return None
        conf = self.run.conf
        network = self.network(dataset_info(conf.dataset, conf.common.cache_dir))
        return done if done.get("fingerprint") == network.fingerprint else None

    def load(self, done: dict[str, Any]) -> dict[str, Any]:
        return done

    def summary(self, result: dict[str, Any]) -> dict[str, Any]:
        return {**{k: v for k, v in result.items() if k != "config"}, "peak_memory": self.peak_memory}

    def work(self, ctx: PhaseContext) -> dict[str, Any]:
        conf = ctx.conf
        data = load_data(ctx, conf.loader)
        network = self.network(data.info)
        if ctx.is_main:
            network.save(ctx.dir)
        model = network.build().to(ctx.device)
        stats = model_stats(model, [data.info.channels, *data.info.image_size])
        ctx.log.info(
            f"eval: {network.what}, {stats['params_without_aux']:,} parameters without the aux tower, "
            f"{stats['macs']:,} multiply-adds per image; {len(data.parts['train'])} train / {len(data.parts['test'])} test images"
        )
        trainer = self.build_trainer(ctx, model, network)
        held_out = "val" if "val" in data.parts else "test"
        history = trainer.fit(data.loader("train", training=True), data.loader(held_out, training=False))
        test = trainer.evaluate(data.loader("test", training=False), "test")
        metrics = self.summarize(history, test, stats, network.fingerprint)
        if ctx.is_main:
            save_model_file(ctx.dir / "model_last.pt", model, {"epoch": len(history.records),
                                                                 "test_top1": test["test_top1"]}, space=network.space)
        self.write_marker(ctx, metrics)  # last: marks the phase complete
        best = "" if metrics["best_top1"] is None else \
            f" (best {held_out} {metrics['best_top1']:.2%} at epoch {metrics['best_epoch']})"
        ctx.log.info(f"test accuracy {test['test_top1']:.2%}{best}; results in {ctx.dir}")
        return {**metrics, "config": self.config_record()}

    def build_trainer(self, ctx: PhaseContext, model: nn.Module, network: Network) -> Trainer:
        """The trainer of the eval phase (also what `scripts/bench_supernet.py` times)."""
        return Trainer(ctx.conf.trainer, model, ctx, checkpointer=self.checkpointer(ctx, network.fingerprint),
                       hooks=[SaveBestModel(network.space)])

    @staticmethod
    def summarize(history: MetricsHistory, test: dict[str, float], stats: dict[str, Any], fingerprint: str) -> dict[str, Any]:
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
            "fingerprint": fingerprint,
        }
