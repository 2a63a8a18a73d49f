"""Searcher: the search phase of a supernet algorithm, over any search space.

space -> supernet -> ArchTrainer.fit -> export -> (post-train) -> the architecture. The space
(`archnas.nas.spaces`: DARTS cells of `nas.search.model_desc`, or a space over a module,
`nas.search.space`) builds the supernet with the strategy's edges and weighting and turns the
trained supernet into an architecture (the strategy's Finalizers for cells, the strongest choice
of every label for a module space); the same trainer trains either.

The phase folder ends up with the supernet's description (`full_model_desc.yaml` for cells,
`space.yaml` for a module space), the architecture (`final_model_desc.yaml`, `genotype.txt` when
the cell has DARTS's shape, and `arch.yaml`/`arch.json` under NNI's DARTS labels; or
`arch.yaml`/`arch.json` as `{label: choice}`), `split.json` (which images were held out for the
alphas) and, written last, `search_result.json`: the completion marker. With
`nas.search.combinations.enabled` the phase runs one such search per macro combination
(`archnas.nas.search_combinations`) and keeps the best.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

from archnas.context import PhaseContext
from archnas.data import DataBundle, build_data
from archnas.descs.dataset_info import DatasetInfo
from archnas.descs.model_desc import ModelDesc
from archnas.errors import ConfigError
from archnas.model import Model
from archnas.nas.arch_trainer import ArchTrainer
from archnas.nas.cost_search import CostGuide
from archnas.nas.phase import Phase
from archnas.nas.spaces import space_of
from archnas.space.store import Searchable
from archnas.training.trainer import Trainer
from archnas.utils import atomic

RESULT_FILE = "search_result.json"


@dataclass
class SearchResult:
    """The architecture a search found, in its space's form (a final desc for DARTS cells,
    `{label: choice}` for a module space); `final_desc_path` is the file a user hands to the eval
    phase either way."""

    arch: Any
    final_desc_path: Path
    genotype: Optional[str]
    metrics: dict[str, Any]


def load_data(ctx: PhaseContext, loader_conf) -> DataBundle:
    """The phase's data, split as its loader section says; the split is recorded in the phase
    folder (`split.json`), with the dataset and where its files were actually read from."""
    conf = ctx.run.conf
    data = build_data(
        conf.dataset, loader_conf, seed=conf.common.seed, device=ctx.device, cache_dir=conf.common.cache_dir,
        rank=ctx.rank, world_size=ctx.world_size,
    )
    ctx.log.info(f"data: {conf.dataset.name} read from {data.source}")
    ctx.write(lambda: atomic.write_json(ctx.dir / "split.json", {"dataset": conf.dataset.name, "source": data.source,
                                                                 **data.split.to_dict()}))  # held until the phase commits
    return data


class SearchPhase(Phase):
    """What every search phase shares: its marker and result, and the optional post-train."""

    name = "search"
    section_key = "nas.search"
    marker = RESULT_FILE

    def load(self, done: dict[str, Any]) -> SearchResult:
        arch, path, genotype = space_of(self.run.conf.nas.search).load(self.dir, done, self.dir / self.marker)
        return SearchResult(arch, path, genotype, done.get("metrics", {}))

    def summary(self, result: SearchResult) -> dict[str, Any]:
        return {**result.metrics, "genotype": result.genotype, "final_desc": str(result.final_desc_path),
                "peak_memory": self.peak_memory}

    def report(self, summary: dict[str, Any]) -> list[str]:
        lines = [f"  genotype: {summary['genotype']}"] if summary.get("genotype") else []
        lines.append(f"  search: {summary.get('search_time', 0):.0f}s, final desc {summary.get('final_desc')}")
        return lines

    def save_result(self, ctx: PhaseContext, arch: Any, metrics: dict[str, Any],
                    info: Optional[DatasetInfo] = None) -> SearchResult:
        """The architecture in the space's files and, last, the marker (`info`: the images'
        shape, which a module space's architecture file records the labels of)."""
        space = space_of(ctx.conf)
        if ctx.conf.post_train.trainer.epochs > 0:
            metrics["post_train"] = PostTrain(self.experiment, f"{self.folder}/post_train", self.run, arch).execute()
        fields, path = space.save(ctx.dir, arch, info, write=ctx.is_main)
        self.write_marker(ctx, {**fields, "metrics": metrics})
        ctx.log.info(f"final architecture: {space.describe(arch)}")
        return SearchResult(arch, path, fields.get("genotype"), metrics)


class Searcher(SearchPhase):
    """The supernet search: train the supernet's weights and architecture parameters together,
    then export it."""

    trains_supernet: ClassVar[bool] = True  # its checkpoint is what `nas.eval.mode: tune` inherits

    def work(self, ctx: PhaseContext) -> SearchResult:
        if ctx.conf.trainer.epochs < 1 and ctx.conf.finalizer.type != "random":
            # the untrained supernet's argmax is an accident of the alphas' initialization; a random
            # finalization of it is the documented baseline (random search with n_archs 1)
            raise ConfigError(
                f"nas.search.trainer.epochs: {ctx.conf.trainer.epochs}; a search trains at least 1 epoch (to train "
                "an architecture without searching, pass --no-search with nas.eval.final_desc or nas.algo=manual; "
                "for the random-finalizer baseline, nas.search.finalizer.type=random)"
            )
        if ctx.conf.combinations.enabled:
            from archnas.nas.search_combinations import search_combinations

            return search_combinations(self, ctx)
        return self.search(ctx)

    def search(self, ctx: PhaseContext) -> SearchResult:
        space = space_of(ctx.conf)
        data = load_data(ctx, ctx.conf.loader)
        model = space.supernet(data.info, self.strategy)
        ctx.write(lambda: space.save_supernet(ctx.dir, model))
        ctx.log.info(f"search: {space.describe_supernet(model)}; {len(data.parts['train'])} train / "
                     f"{len(data.parts['val'])} val images")
        fingerprint = space.supernet_fingerprint(model)
        cost = None if space.kind != "modules" else CostGuide.build(ctx.conf.cost, space, model.arch, data.info,
                                                                     ctx.seed, self.strategy.cost_models())
        trainer = self.build_trainer(ctx, model, fingerprint, data, cost)
        history = trainer.fit(data.loader("train", training=True), data.loader("val", training=False))
        arch = trainer.arch_optimizer.final_arch()
        if arch is None:
            arch = space.export(model, self.strategy)
        cost_metrics: dict[str, Any] = {}
        if cost is not None:
            argmax, arch = arch, cost.pick(arch)
            cost_metrics = {"limits": cost.limits.describe(), "costs": cost.costs_of(arch),
                            "argmax_costs": cost.costs_of(argmax), "argmax_within_limits": argmax == arch,
                            "penalty": {"model": ctx.conf.cost.penalty.model, "weight": ctx.conf.cost.penalty.weight}}
            if cost.limits:
                ctx.log.info(f"the most probable architecture within {cost.limits.describe()}: costs "
                             f"{cost.costs_of(arch)} (the argmax costs {cost.costs_of(argmax)})")
        metrics = {
            "search_time": sum(r.get("epoch_time", 0.0) for r in history.records),
            "epochs": len(history.records),
            "best_val_top1": history.best_value,
            "final_val_top1": history.last.get("val_top1") if history.last else None,
            "supernet_fingerprint": fingerprint,
            "alphas": trainer.alpha_summary(),  # mean edge entropy at the start and the end, per label
            **cost_metrics,
        }
        return self.save_result(ctx, arch, metrics, data.info)

    def build_trainer(self, ctx: PhaseContext, model: Searchable, fingerprint: str, data: DataBundle,
                      cost: Optional[CostGuide] = None) -> ArchTrainer:
        """The trainer of the search (also what `scripts/bench_supernet.py` times); `cost`: the
        search's limits and penalty over a module space."""
        from archnas.nas.ranking_monitor import attach_ranking_monitor  # it trains anchors, which load_data here

        trainer = ArchTrainer(ctx.conf.trainer, model, ctx, strategy=self.strategy,
                              val_stream=data.loader("val", training=True),
                              checkpointer=self.checkpointer(ctx, fingerprint), cost=cost)
        attach_ranking_monitor(trainer, ctx, space_of(ctx.conf), data, self.force)
        return trainer


class PostTrain(Phase):
    """Optional training of the finalized desc at the search macro inside the search phase
    (`nas.search.post_train`), e.g. to rank candidates; marked by `post_train.json`."""

    section_key = "nas.search.post_train"
    marker = "post_train.json"

    def __init__(self, experiment, folder: str, run, final: ModelDesc):
        super().__init__(experiment, folder, run)
        self.final = final

    def stale(self) -> bool:
        """Trained on another final desc (the search trained on to another one): start over."""
        recorded = self.recorded_fingerprint()
        return recorded is not None and recorded != self.final.fingerprint()

    def finished(self) -> Optional[dict[str, Any]]:
        done = super().finished()
        return done if done is None or done.get("fingerprint", self.final.fingerprint()) == self.final.fingerprint() else None

    def work(self, ctx: PhaseContext) -> dict[str, Any]:
        data = load_data(ctx, ctx.conf.loader)
        model = Model(self.final, droppath=True, affine=True)
        trainer = Trainer(ctx.conf.trainer, model, ctx, checkpointer=self.checkpointer(ctx, self.final.fingerprint()))
        # Scored on its own held-out share of train, never on the test set (no val split: not scored).
        val = data.loader("val", training=False) if "val" in data.parts else None
        history = trainer.fit(data.loader("train", training=True), val)
        result = {"best_val_top1": history.best_value, "best_epoch": history.best_epoch,
                  "time": sum(r.get("epoch_time", 0.0) for r in history.records)}
        self.write_marker(ctx, {"result": result, "fingerprint": self.final.fingerprint()})
        return result

    def load(self, done: dict[str, Any]) -> dict[str, Any]:
        return done["result"]
