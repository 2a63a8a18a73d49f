"""Evaluater: retrain a final architecture from scratch at the eval macro and report test accuracy.

The architecture comes from `nas.eval.final_desc` (a desc file, a genotype string or a named
genotype such as DARTS_V2) or, when that is null, from the search phase. Its cells are copied
into the eval macro (`full_model_desc.yaml`: e.g. 20 cells of 36 channels), trained with the aux
tower, drop-path ramp, cutout and the configured schedule.

Model selection never sees the test set: `nas.eval.loader.val_ratio` (default 0.1) of the training
images are held out as a validation split (stratified, seeded by `common.seed`, recorded in
`split.json`), evaluated every `trainer.validation.freq` epochs; `model_best.pt` is the epoch with
the best val top-1. The test set is evaluated once the training is over: the last epoch's model
gives the final test accuracy (`test_top1`, the DARTS protocol's number) and the best-on-val model
its own (`test_top1_best_val`). With `val_ratio: 0` nothing is selected: the model is trained on
every training image, the last epoch's is the result and there is no `model_best.pt`. The phase
folder gets `model_last.pt` (and `model_best.pt`; weights plus what rebuilds and feeds the network,
see `archnas.model.model_file`) and, last, `metrics.json`.

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
from typing import Any, Callable, Optional, Sequence

from torch import nn

from archnas.config.schema import EvalMode
from archnas.context import PhaseContext
from archnas.descs.dataset_info import DatasetInfo
from archnas.distributed import barrier
from archnas.errors import ConfigError
from archnas.model.model_file import InputSpec, read_model_file, save_model_file, update_model_file_info
from archnas.nas.phase import Phase
from archnas.nas.searcher import SearchResult, load_data
from archnas.nas.spaces import eval_space
from archnas.stats import dataset_info, model_stats
from archnas.training.checkpoint import LAST, read_checkpoint
from archnas.training.hooks import HookBase
from archnas.training.metrics import MetricsHistory
from archnas.training.trainer import Trainer

METRICS_FILE = "metrics.json"
BEST_MODEL, LAST_MODEL = "model_best.pt", "model_last.pt"



def check_eval_mode(conf: Any) -> None:
    """`nas.eval.mode: tune` fine-tunes the searched supernet's own weights: its space must cut
    networks out of a supernet, and the eval must not name another macro of it (`nas.eval.space`)."""
    if conf.nas.eval.mode != EvalMode.tune:
        return
    if conf.nas.eval.space:
        raise ConfigError("nas.eval.mode: tune fine-tunes the searched supernet itself; leave nas.eval.space "
                          "empty (the search's space)")
    refusal = eval_space(conf).tune_refusal()
    if refusal is not None:
        raise ConfigError(refusal)


class SaveBestModel(HookBase):
    """`model_best.pt` whenever the val top-1 improves (rank 0): the model selection of the eval."""

    def __init__(self, space: Optional[dict[str, Any]], input_spec: InputSpec, classes: Sequence[str], dataset: str):
        self.space, self.input_spec, self.classes, self.dataset = space, input_spec, classes, dataset

    def after_epoch(self) -> None:
        t = self.trainer
        if t.new_best and t.env.is_main:
            record = t.history.last
            info = {"chosen_by": "val_top1", "epoch": record["epoch"], "val_top1": record.get("val_top1"),
                    "val_loss": record.get("val_loss")}
            save_model_file(t.env.dir / BEST_MODEL, t.base_model, info, input_spec=self.input_spec,
                            classes=self.classes, dataset=self.dataset, space=self.space)


@dataclass
class Network:
    """What the eval phase trains: the network of one architecture of its space."""

    fingerprint: str  # what its checkpoints and marker must match
    what: str  # for the log
    build: Callable[[], nn.Module]
    save: Callable[[Path], None]  # its description into the phase folder
    space: Optional[dict[str, Any]] = None  # how a model file rebuilds it (module spaces)


class Evaluater(Phase):
    name = "eval"
    section_key = "nas.eval"
    marker = METRICS_FILE
    unread_keys = ("random_baseline",)  # the stage after it reads that (archnas/nas/random_baseline.py)
    network_file = LAST_MODEL  # the network whose test accuracy the eval reports (`test_top1`)

    def searched(self) -> Optional[SearchResult]:
        """This experiment's search result, if the search ran or had finished."""
        return next((r for r in self.experiment.results.values() if isinstance(r, SearchResult)), None)

    def _no_architecture(self) -> ConfigError:
        return ConfigError(f"the eval phase has no architecture: there is no finished search in "
                           f"{self.run.exp_dir / 'search'} and nas.eval.final_desc is null; run the search, or set "
                           "nas.eval.final_desc to a desc file, a genotype string or a name such as DARTS_V2 (for a "
                           "module space: an architecture file, a {label: choice} mapping or a NAS-Bench-201 string)")

    def network(self, info: DatasetInfo) -> Network:
        """The network of `nas.eval.final_desc`, else of the search's architecture, in the eval's
        space: from scratch (`retrain`) or cut out of the searched supernet with its weights (`tune`)."""
        conf = self.section
        check_eval_mode(self.run.conf)
        space = eval_space(self.run.conf)
        if conf.final_desc:
            arch = space.parse(conf.final_desc, info)
        else:
            searched = self.searched()
            if searched is None:
                raise self._no_architecture()
            arch = searched.arch
        arch = space.check(arch, info)
        tune = conf.mode == EvalMode.tune
        if tune:
            build = lambda: space.tuned(arch, info, self.supernet_state(), self.strategy)  # noqa: E731
        else:
            build = lambda: space.network(arch, info)  # noqa: E731
        return Network(space.network_fingerprint(arch, info, tune), f"{space.describe(arch)} ({conf.mode})", build,
                       lambda folder: space.save_network(folder, arch, info), space.model_file_space(arch, info))

    def supernet_state(self) -> dict[str, Any]:
        """The weights the search trained (the last checkpoint of the supernet's phase)."""
        path = self.run.exp_dir / self.strategy.supernet_phase() / LAST
        if not path.is_file():
            raise ConfigError(f"nas.eval.mode: tune needs the search's supernet, {path}, which does not exist")
        return read_checkpoint(path)["state"]["model"]

    def inputs(self) -> tuple[str, ...]:
        if self.section.final_desc:
            return ()
        return ("search", self.strategy.supernet_phase()) if self.section.mode == EvalMode.tune else ("search",)

    def stale(self) -> bool:
        """An eval is stale when the architecture it trains changed (the search trained on to
        another one), or, fine-tuning, when the supernet it inherits trained on; an eval of the
        same architecture trained from scratch stands."""
        if not super().stale():
            return False
        if self.section.mode == EvalMode.tune:
            return True
        conf = self.run.conf
        fingerprint = self.network(dataset_info(conf.dataset, conf.common.cache_dir)).fingerprint
        recorded = self.recorded_fingerprint()
        return recorded is not None and recorded != fingerprint

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

    def report(self, summary: dict[str, Any]) -> list[str]:
        lines = [f"  test accuracy: {summary['test_top1']:.2%} ({summary['params_without_aux']:,} params, "
                 f"{summary['macs']:,} multiply-adds, {summary['train_time']:.0f}s of training)"]
        if summary.get("test_top1_best_val") is not None:
            lines.append(f"  best-on-val model (model_best.pt): val top-1 {summary['best_val_top1']:.2%}, "
                         f"test top-1 {summary['test_top1_best_val']:.2%}")
        return lines

    def work(self, ctx: PhaseContext) -> dict[str, Any]:
        conf = ctx.conf
        data = load_data(ctx, conf.loader)
        network = self.network(data.info)
        ctx.write(lambda: network.save(ctx.dir))
        model = network.build().to(ctx.device)
        stats = model_stats(model, [data.info.channels, *data.info.image_size])
        val = data.parts.get("val")
        held_out = f"{len(val)} val (model selection) / " if val is not None else ""
        ctx.log.info(
            f"{self.name}: {network.what}, {stats['params_without_aux']:,} parameters without the aux tower, "
            f"{stats['macs']:,} multiply-adds per image; {len(data.parts['train'])} train / {held_out}"
            f"{len(data.parts['test'])} test images"
        )
        if val is None:
            ctx.log.info(f"{self.name}: nas.eval.loader.val_ratio is 0: no model selection, the last epoch's model "
                         "is the result (and there is no model_best.pt)")
        input_spec = InputSpec((data.info.channels, *data.info.image_size), data.info.mean, data.info.std)
        classes = data.info.classes or tuple(str(i) for i in range(data.info.n_classes))
        trainer = self.build_trainer(ctx, model, network, input_spec, classes, data.info.name)
        history = trainer.fit(data.loader("train", training=True),
                              data.loader("val", training=False) if val is not None else None)
        # The test set, once per model the phase hands out: the last epoch's, then the best-on-val one.
        test_loader = data.loader("test", training=False)
        n_test = len(data.parts["test"])
        test = with_counts(trainer.evaluate(test_loader, "test"), n_test)
        last = history.last or {}
        if ctx.is_main:
            info = {"chosen_by": "last_epoch", "epoch": last.get("epoch"), "val_top1": last.get("val_top1"),
                    "val_loss": last.get("val_loss"), **test_fields(test)}
            save_model_file(ctx.dir / LAST_MODEL, model, info, input_spec=input_spec, classes=classes,
                            dataset=data.info.name, space=network.space)
        best_test = self.test_best(ctx, trainer, history, test, test_loader, n_test)
        metrics = self.summarize(history, test, best_test, stats, network.fingerprint)
        self.write_marker(ctx, metrics)  # last: marks the phase complete
        best = "" if best_test is None else \
            (f"; best val top-1 {metrics['best_val_top1']:.2%} at epoch {metrics['best_epoch']}, whose test "
             f"accuracy is {best_test['test_top1']:.2%} ({BEST_MODEL})")
        ctx.log.info(f"test accuracy {test['test_top1']:.2%} (the last epoch's model){best}; results in {ctx.dir}")
        return {**metrics, "config": self.config_record()}

    def test_best(self, ctx: PhaseContext, trainer: Trainer, history: MetricsHistory, last_test: dict[str, Any],
                  loader: Any, n_test: int) -> Optional[dict[str, Any]]:
        """The test metrics of the best-on-val model (None without a val split), also added to
        `model_best.pt`. Every rank reads the file rank 0 wrote, so a resumed run whose best epoch
        came before the interruption evaluates the same weights."""
        if history.best_epoch is None:
            return None
        if history.best_epoch == (history.last or {}).get("epoch"):
            best_test = last_test  # the last epoch is the best: one test pass serves both
        else:
            barrier()  # model_best.pt is complete on rank 0
            trainer.base_model.load_state_dict(read_model_file(ctx.dir / BEST_MODEL)["state_dict"])
            best_test = with_counts(trainer.evaluate(loader, "test"), n_test)
        if ctx.is_main:
            update_model_file_info(ctx.dir / BEST_MODEL, test_fields(best_test))
        return best_test

    def build_trainer(self, ctx: PhaseContext, model: nn.Module, network: Network, input_spec: InputSpec,
                      classes: Sequence[str], dataset: str) -> Trainer:
        """The trainer of the eval phase (also what `scripts/bench_supernet.py` times); what it
        trains on (`input_spec`, `classes`, `dataset`) goes into `model_best.pt`."""
        return Trainer(ctx.conf.trainer, model, ctx, checkpointer=self.checkpointer(ctx, network.fingerprint),
                       hooks=[SaveBestModel(network.space, input_spec, classes, dataset)])

    @staticmethod
    def summarize(history: MetricsHistory, test: dict[str, Any], best_test: Optional[dict[str, Any]],
                  stats: dict[str, Any], fingerprint: str) -> dict[str, Any]:
        """`test_*`: the last epoch's model on the test set (the final test accuracy);
        `best_val_top1` / `best_epoch`: the model selection on the val split (null without one);
        `test_top1_best_val`: the test accuracy of that best-on-val model (`model_best.pt`)."""
        last = history.last or {}
        return {
            **test_fields(test),
            "val_top1": last.get("val_top1"),
            "best_val_top1": history.best_value,
            "best_epoch": history.best_epoch,
            "test_top1_best_val": None if best_test is None else best_test["test_top1"],
            "test_correct_best_val": None if best_test is None else best_test["test_correct"],
            "epochs": len(history.records),
            "params": stats["params"],
            "params_without_aux": stats["params_without_aux"],
            "macs": stats["macs"],
            "train_time": sum(r.get("epoch_time", 0.0) for r in history.records),
            "fingerprint": fingerprint,
        }


def with_counts(test: dict[str, Any], n_images: int) -> dict[str, Any]:
    """Test metrics plus the number of correct predictions (exact: top-1 is a ratio of counts)."""
    return {**test, "test_correct": round(test["test_top1"] * n_images), "test_images": n_images}


def test_fields(test: dict[str, Any]) -> dict[str, Any]:
    return {k: test.get(k) for k in ("test_top1", "test_topk", "test_loss", "test_correct", "test_images")}
