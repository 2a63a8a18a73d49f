"""Searcher: supernet desc -> model -> ArchTrainer.fit -> finalize -> (post-train) -> final desc.

The phase folder ends up with `full_model_desc.yaml` (the supernet), `final_model_desc.yaml`
(plain YAML), `genotype.txt` (DARTS format, when the cell has that shape), `split.json` (which
images were held out for the alphas) and, written last, `search_result.json`: the completion
marker. A rerun finds a completed search by that marker and skips it; an unfinished one resumes
from its checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from archnas.config import config_diff
from archnas.config.schema import SearchConf
from archnas.context import PhaseContext
from archnas.data import DataBundle, build_data
from archnas.descs.builder import ModelDescBuilder
from archnas.descs.desc_io import load_desc, save_desc
from archnas.descs.genotypes import desc_to_genotype
from archnas.descs.model_desc import ModelDesc
from archnas.errors import CheckpointError, DescError
from archnas.model import Model
from archnas.nas.arch_trainer import ArchTrainer
from archnas.nas.finalizers import Finalizers
from archnas.training.checkpoint import is_safe_key, phase_config
from archnas.training.trainer import Trainer
from archnas.utils import atomic

RESULT_FILE = "search_result.json"
FINAL_DESC_FILE = "final_model_desc.yaml"
FULL_DESC_FILE = "full_model_desc.yaml"


@dataclass
class SearchResult:
    final_desc: ModelDesc
    final_desc_path: Path
    genotype: Optional[str]
    metrics: dict[str, Any]


def load_data(ctx: PhaseContext, loader_conf) -> DataBundle:
    """The phase's data, split as its loader section says; the split is recorded in the phase folder."""
    conf = ctx.run.conf
    data = build_data(
        conf.dataset, loader_conf, seed=conf.common.seed, device=ctx.device, cache_dir=conf.common.cache_dir,
        rank=ctx.run.rank, world_size=ctx.run.world_size,
    )
    if ctx.run.is_main:
        data.split.save(ctx.dir / "split.json")
    return data


def check_completed(ctx: PhaseContext, marker: Path, force: bool) -> Optional[dict[str, Any]]:
    """The marker's contents if this phase already finished under a compatible config, else None.

    A finished phase whose config differs in keys that are not safe to change is an error, so an
    old result is never silently paired with a new config.
    """
    if not marker.is_file() or not ctx.common.resume:
        return None
    try:
        done = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # half-written by a killed run: redo what it marked
    unsafe = [k for k in config_diff(done.get("config", {}), phase_config(ctx.run.conf, ctx.conf)) if not is_safe_key(k)]
    if unsafe and not force:
        raise CheckpointError(
            f"{marker} records a finished {ctx.name} phase with a different config ({', '.join(unsafe[:8])}); "
            "use another experiment name, restore the settings, or pass --force to reuse it"
        )
    return done


class Searcher:
    """Override a step to change it; an algorithm provides the builder, trainer class and finalizers."""

    find_unused_parameters = False  # DDP: True when a supernet's forward skips some weights (GDAS)

    def __init__(self, builder: ModelDescBuilder, trainer_class: type[ArchTrainer], finalizers: Finalizers,
                 force: bool = False):
        self.builder = builder
        self.trainer_class = trainer_class
        self.finalizers = finalizers
        self.force = force

    def search(self, ctx: PhaseContext, make_phase: Callable[[str, Any], PhaseContext]) -> SearchResult:
        """Run (or resume, or skip if finished) the search phase described by `ctx.conf`.

        `make_phase(name, section)` opens a sub-phase context (the optional post-train).
        """
        conf: SearchConf = ctx.conf
        marker = ctx.dir / RESULT_FILE
        done = check_completed(ctx, marker, self.force)
        if done is not None:
            ctx.log.info(f"search already finished ({marker}); skipping it")
            return self.load_result(ctx.dir, done)

        data = load_data(ctx, conf.loader)
        desc = self.builder.build(conf.model_desc, data.info)
        if ctx.run.is_main:
            save_desc(desc, ctx.dir / FULL_DESC_FILE)
        model = self.build_model(desc).to(ctx.device)
        ctx.log.info(
            f"search: supernet of {conf.model_desc.n_cells} cells, {sum(p.numel() for p in model.weights()):,} weights, "
            f"{sum(p.numel() for p in model.arch_params()):,} architecture parameters; "
            f"{len(data.parts['train'])} train / {len(data.parts['val'])} val images"
        )
        trainer = self.trainer_class(
            conf.trainer, model, ctx, val_stream=data.loader("val", training=True),
            fingerprint=desc.fingerprint(), force=self.force, find_unused_parameters=self.find_unused_parameters,
        )
        history = trainer.fit(data.loader("train", training=True), data.loader("val", training=False))
        final = self.finalizers.finalize_model(model, desc)
        metrics = {
            "search_time": sum(r.get("epoch_time", 0.0) for r in history.records),
            "epochs": len(history.records),
            "best_val_top1": history.best_value,
            "final_val_top1": history.last.get("val_top1") if history.last else None,
            "supernet_fingerprint": desc.fingerprint(),
        }
        if conf.post_train.trainer.epochs > 0:
            metrics["post_train"] = self.post_train(make_phase("search/post_train", conf.post_train), final)
        return self.save_result(ctx, final, metrics)

    def build_model(self, desc: ModelDesc) -> Model:
        """DARTS searches with non-affine BatchNorm in the cells and no drop-path."""
        return Model(desc, droppath=False, affine=False)

    def post_train(self, ctx: PhaseContext, final: ModelDesc) -> dict[str, Any]:
        """Train the finalized desc at the search macro for a few epochs (e.g. to rank candidates)."""
        data = load_data(ctx, ctx.conf.loader)
        model = Model(final, droppath=True, affine=True).to(ctx.device)
        trainer = Trainer(ctx.conf.trainer, model, ctx, fingerprint=final.fingerprint(), force=self.force)
        parts = "val" if "val" in data.parts else "test"
        history = trainer.fit(data.loader("train", training=True), data.loader(parts, training=False))
        ctx.close()
        return {"best_top1": history.best_value, "time": sum(r.get("epoch_time", 0.0) for r in history.records)}

    def save_result(self, ctx: PhaseContext, final: ModelDesc, metrics: dict[str, Any]) -> SearchResult:
        path = ctx.dir / FINAL_DESC_FILE
        genotype = _genotype_or_none(final)
        if ctx.run.is_main:
            save_desc(final, path)
            if genotype is not None:
                atomic.write_text(ctx.dir / "genotype.txt", genotype + "\n")
            marker = {
                "final_desc": FINAL_DESC_FILE, "final_desc_fingerprint": final.fingerprint(), "genotype": genotype,
                "metrics": metrics, "config": phase_config(ctx.run.conf, ctx.conf),
            }
            atomic.write_json(ctx.dir / RESULT_FILE, marker)  # last: marks the phase complete
        if genotype:
            ctx.log.info(f"final genotype: {genotype}")
        return SearchResult(final, path, genotype, metrics)

    @staticmethod
    def load_result(folder: Path, done: dict[str, Any]) -> SearchResult:
        path = folder / done.get("final_desc", FINAL_DESC_FILE)
        final = load_desc(path)
        if final.fingerprint() != done.get("final_desc_fingerprint"):
            raise DescError(f"{path} does not match the search result recorded in {folder / RESULT_FILE}; "
                            "it was changed after the search finished")
        return SearchResult(final, path, done.get("genotype"), done.get("metrics", {}))


def _genotype_or_none(desc: ModelDesc) -> Optional[str]:
    try:
        return str(desc_to_genotype(desc))
    except DescError:
        return None  # not a DARTS-shaped cell (e.g. max_final_edges != 2): the desc file says it all

