"""Searcher: the search phase of a supernet algorithm.

supernet desc -> model -> ArchTrainer.fit -> finalize -> (post-train) -> final desc. The
algorithm's strategy says what the supernet's edges compute, how its architecture weights are
computed and stepped, and how the trained supernet is finalized.

The phase folder ends up with `full_model_desc.yaml` (the supernet), `final_model_desc.yaml`
(plain YAML), `genotype.txt` (DARTS format, when the cell has that shape), `split.json` (which
images were held out for the alphas) and, written last, `search_result.json`: the completion
marker. With `nas.search.combinations.enabled` the phase runs one such search per macro
combination (`archnas.nas.search_combinations`) and keeps the best. A DARTS result is also
written as an architecture under NNI's DARTS labels (`arch.yaml`, `arch.json`).

With `nas.search.space` set the supernet is a `SearchSpaceModel` over that space's module instead
(`archnas.nas.spaces`): the same trainer trains it, and the result is its architecture (`arch.yaml`
and `arch.json`: `{label: choice}`) with `space.yaml` describing the space it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from archnas.context import PhaseContext
from archnas.data import DataBundle, build_data
from archnas.descs.desc_io import load_desc, save_desc
from archnas.descs.genotypes import desc_to_genotype
from archnas.descs.model_desc import ModelDesc
from archnas.errors import ConfigError, DescError, SpaceError
from archnas.model import Model
from archnas.nas.arch_optimizer import bind_weighting
from archnas.nas.arch_trainer import ArchTrainer
from archnas.nas.phase import Phase
from archnas.nas.spaces import ARCH_FILE, ModuleSpace, check_space, module_space
from archnas.space.arch_io import arch_document, genotype_to_arch, parse_arch, save_arch
from archnas.space.store import Searchable
from archnas.training.trainer import Trainer
from archnas.utils import atomic

RESULT_FILE = "search_result.json"
FINAL_DESC_FILE = "final_model_desc.yaml"
FULL_DESC_FILE = "full_model_desc.yaml"
SPACE_FILE = "space.yaml"


@dataclass
class SearchResult:
    """A DARTS cell search gives a final desc; a search over a module space an architecture
    (`arch`); `final_desc_path` is the file a user hands to the eval phase either way."""

    final_desc: Optional[ModelDesc]
    final_desc_path: Path
    genotype: Optional[str]
    metrics: dict[str, Any]
    arch: Optional[dict[str, Any]] = None


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


def genotype_or_none(desc: ModelDesc) -> Optional[str]:
    try:
        return str(desc_to_genotype(desc))
    except DescError:
        return None  # not a DARTS-shaped cell (e.g. max_final_edges != 2): the desc file says it all


class SearchPhase(Phase):
    """What every search phase shares: its marker and result, and the optional post-train."""

    name = "search"
    section_key = "nas.search"
    marker = RESULT_FILE

    def load(self, done: dict[str, Any]) -> SearchResult:
        if "arch" in done:
            path = self.dir / ARCH_FILE
            self._check_arch_file(path, done)
            return SearchResult(None, path, done.get("genotype"), done.get("metrics", {}), done["arch"])
        path = self.dir / done.get("final_desc", FINAL_DESC_FILE)
        final = load_desc(path)
        if final.fingerprint() != done.get("final_desc_fingerprint"):
            raise DescError(f"{path} does not match the search result recorded in {self.dir / RESULT_FILE}; "
                            "it was changed after the search finished")
        return SearchResult(final, path, done.get("genotype"), done.get("metrics", {}))

    def _check_arch_file(self, path: Path, done: dict[str, Any]) -> None:
        """The architecture file is what users hand on (result.json names it as the final desc):
        a deleted or edited one would quietly disagree with the architecture the eval trains."""
        recorded = arch_document(done["arch"], "", None)["arch"] if isinstance(done["arch"], dict) else done["arch"]
        try:
            found: Any = parse_arch(str(path), done.get("space_fingerprint"))
            problem = "it holds another architecture"
        except SpaceError as exc:
            found, problem = None, str(exc)
        if found != recorded:
            raise DescError(f"{path} does not match the search result recorded in {self.dir / RESULT_FILE} ({problem}): "
                            "it was deleted or changed after the search finished; restore it, or pass --restart to "
                            "run the search again (the old folder is kept)")

    def summary(self, result: SearchResult) -> dict[str, Any]:
        return {**result.metrics, "genotype": result.genotype, "final_desc": str(result.final_desc_path),
                "peak_memory": self.peak_memory}

    def report(self, summary: dict[str, Any]) -> list[str]:
        lines = [f"  genotype: {summary['genotype']}"] if summary.get("genotype") else []
        lines.append(f"  search: {summary.get('search_time', 0):.0f}s, final desc {summary.get('final_desc')}")
        return lines

    def save_result(self, ctx: PhaseContext, final: ModelDesc, metrics: dict[str, Any]) -> SearchResult:
        """The final desc, its genotype and, last, the marker."""
        conf = ctx.conf
        if conf.post_train.trainer.epochs > 0:
            metrics["post_train"] = PostTrain(self.experiment, f"{self.folder}/post_train", self.run, final).execute()
        path = ctx.dir / FINAL_DESC_FILE
        genotype = genotype_or_none(final)
        if ctx.is_main:
            save_desc(final, path)
            if genotype is not None:
                atomic.write_text(ctx.dir / "genotype.txt", genotype + "\n")
                save_arch(ctx.dir, genotype_to_arch(desc_to_genotype(final)), "darts_cells", None)
        self.write_marker(ctx, {"final_desc": FINAL_DESC_FILE, "final_desc_fingerprint": final.fingerprint(),
                                "genotype": genotype, "metrics": metrics})
        if genotype:
            ctx.log.info(f"final genotype: {genotype}")
        return SearchResult(final, path, genotype, metrics)


class Searcher(SearchPhase):
    """The supernet search: train the supernet's weights and architecture parameters together,
    then finalize it."""

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
        conf = ctx.conf
        space = module_space(conf.space)
        if space is not None:
            return self.search_module(ctx, space)
        data = load_data(ctx, conf.loader)
        desc = self.strategy.supernet_builder().build(conf.model_desc, data.info)
        ctx.write(lambda: save_desc(desc, ctx.dir / FULL_DESC_FILE))
        model = self.build_model(desc)
        ctx.log.info(
            f"search: supernet of {conf.model_desc.n_cells} cells, {sum(p.numel() for p in model.weights()):,} weights, "
            f"{sum(p.numel() for p in model.arch_params()):,} architecture parameters; "
            f"{len(data.parts['train'])} train / {len(data.parts['val'])} val images"
        )
        trainer = self.build_trainer(ctx, model, desc.fingerprint(), data)
        history = trainer.fit(data.loader("train", training=True), data.loader("val", training=False))
        final = self.strategy.finalizers().finalize_model(model, desc)
        metrics = {
            "search_time": sum(r.get("epoch_time", 0.0) for r in history.records),
            "epochs": len(history.records),
            "best_val_top1": history.best_value,
            "final_val_top1": history.last.get("val_top1") if history.last else None,
            "supernet_fingerprint": desc.fingerprint(),
            "alphas": trainer.alpha_summary(),  # mean edge entropy at the start and the end, per cell type
        }
        return self.save_result(ctx, final, metrics)

    def search_module(self, ctx: PhaseContext, space: ModuleSpace) -> SearchResult:
        """The search over a module space: its SearchSpaceModel trained by the same ArchTrainer,
        then the strongest choice of every label."""
        data = load_data(ctx, ctx.conf.loader)
        model = check_space(space, data.info)
        bind_weighting(self.strategy, model.arch)
        fingerprint = space.fingerprint()
        ctx.write(lambda: atomic.write_text(ctx.dir / SPACE_FILE, yaml.safe_dump(
            {"space": space.description(), "space_fingerprint": model.fingerprint(),
             "labels": {label: [str(c) for c in spec.choices] for label, spec in model.specs.items()}},
            sort_keys=False)))
        ctx.log.info(f"search: {space.title}, {sum(p.numel() for p in model.weights()):,} weights, "
                     f"{len(model.specs)} choices ({sum(p.numel() for p in model.arch_params()):,} architecture "
                     f"parameters); {len(data.parts['train'])} train / {len(data.parts['val'])} val images")
        trainer = self.build_trainer(ctx, model, fingerprint, data)
        history = trainer.fit(data.loader("train", training=True), data.loader("val", training=False))
        arch = self.strategy.export(model)
        metrics = {
            "search_time": sum(r.get("epoch_time", 0.0) for r in history.records),
            "epochs": len(history.records),
            "best_val_top1": history.best_value,
            "final_val_top1": history.last.get("val_top1") if history.last else None,
            "supernet_fingerprint": fingerprint,
            "alphas": trainer.alpha_summary(),
        }
        path = ctx.dir / ARCH_FILE
        if ctx.is_main:
            save_arch(ctx.dir, arch, space.title, model.fingerprint())
        self.write_marker(ctx, {"arch": arch, "space": space.description(), "space_fingerprint": model.fingerprint(),
                                "metrics": metrics})
        ctx.log.info(f"final architecture: {arch}")
        return SearchResult(None, path, None, metrics, arch)

    def build_trainer(self, ctx: PhaseContext, model: Searchable, fingerprint: str, data: DataBundle) -> ArchTrainer:
        """The trainer of the search (also what `scripts/bench_supernet.py` times)."""
        return ArchTrainer(ctx.conf.trainer, model, ctx, strategy=self.strategy,
                           val_stream=data.loader("val", training=True), checkpointer=self.checkpointer(ctx, fingerprint))

    def build_model(self, desc: ModelDesc) -> Model:
        """DARTS searches with non-affine BatchNorm in the cells and no drop-path; the
        architecture optimizer says how the architecture parameters are weighted."""
        model = Model(desc, droppath=False, affine=False)
        if model.arch is None:
            raise DescError("the search supernet has no mixed-op edges (nas.search.model_desc.primitives is empty?)")
        bind_weighting(self.strategy, model.arch)
        return model


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
