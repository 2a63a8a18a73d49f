"""The DARTS cell space (`nas.search.model_desc`, used when `nas.search.space` is empty): the
search-space protocol over descs, `ModelDescBuilder`, `Finalizers` and genotypes.

An architecture is a final desc: cells whose nodes keep `max_final_edges` inputs with one op each
(every cell of a type alike), at any macro; the network of it is the space's macro
(`model_desc`: cells, channels) with those cells copied in. The supernet is built with the
strategy's mixed op and weighting; export is the strategy's Finalizers; a search folder gets
`full_model_desc.yaml` (the supernet), `final_model_desc.yaml`, `genotype.txt` (when the cell has
DARTS's shape) and `arch.yaml`/`arch.json` (under NNI's DARTS labels). A final cell keeps
full-channel ops no supernet trained as such (PC-DARTS trains C/k channels, GDAS one sample per
step), so networks are retrained, never tuned.

The genome of an architecture: per cell type (regular, then reduction), per node, which inputs
it keeps (one gene: the index of that set among the node's possible ones) and, per kept input in
input order, its op (an index into the candidates other than `none`).

A single path (spos) is such an architecture set on the supernet (`use`): each edge runs the op
the path keeps on it alone (the strategy's `gdas_mixed_op` under fixed one-hot weights), an edge
the path drops runs `none`, so the supernet computes the network of the path's cells at its own
macro; `draw` picks a uniform genome from a torch generator.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Optional, Sequence

import torch

from archnas.config.schema import FinalizerConf
from archnas.config.schema.model_desc import ModelDescConf
from archnas.descs.dataset_info import DatasetInfo
from archnas.descs.desc_io import load_desc, save_desc
from archnas.descs.genotypes import desc_to_genotype
from archnas.descs.model_desc import CellDesc, CellType, ModelDesc, NodeDesc
from archnas.errors import DescError
from archnas.model import Model, ModelDescBuilder, desc_from_spec
from archnas.nas.arch_optimizer import bind_weighting
from archnas.nas.finalizers import NONE_OP, RandomFinalizers
from archnas.nas.spaces.base import Genome, Space
from archnas.space.arch_io import genotype_to_arch, save_arch
from archnas.space.store import ChoiceSpec, FixedWeighting
from archnas.utils import atomic

if TYPE_CHECKING:
    from archnas.nas.strategy import Strategy

FINAL_DESC_FILE = "final_model_desc.yaml"
FULL_DESC_FILE = "full_model_desc.yaml"
GENOTYPE_FILE = "genotype.txt"


def genotype_or_none(desc: ModelDesc) -> Optional[str]:
    try:
        return str(desc_to_genotype(desc))
    except DescError:
        return None  # not a DARTS-shaped cell (e.g. max_final_edges != 2): the desc file says it all


@dataclass(frozen=True)
class CellSpace(Space):
    conf: ModelDescConf
    key: str  # nas.search.model_desc or nas.eval.model_desc

    kind: ClassVar[str] = "cells"

    @property
    def title(self) -> str:
        return "darts_cells"

    def description(self) -> dict[str, Any]:
        return {"name": self.title, "n_cells": self.conf.n_cells, "n_nodes": self.conf.n_nodes,
                "primitives": list(self.conf.primitives)}

    # -- the supernet ------------------------------------------------------------------------

    def supernet(self, info: DatasetInfo, strategy: Optional["Strategy"] = None) -> Model:
        """DARTS searches with non-affine BatchNorm in the cells and no drop-path; the strategy
        says what every edge computes and how the architecture parameters are weighted."""
        builder = strategy.supernet_builder() if strategy is not None else ModelDescBuilder()
        model = Model(builder.build(self.conf, info), droppath=False, affine=False)
        if model.arch is None:
            raise DescError(f"the search supernet has no mixed-op edges ({self.key}.primitives is empty?)")
        if strategy is not None:
            bind_weighting(strategy, model.arch)
        return model

    def supernet_fingerprint(self, supernet: Model) -> str:
        return supernet.desc.fingerprint()

    def describe_supernet(self, supernet: Model) -> str:
        return (f"supernet of {self.conf.n_cells} cells, {sum(p.numel() for p in supernet.weights()):,} weights, "
                f"{sum(p.numel() for p in supernet.arch_params()):,} architecture parameters")

    def save_supernet(self, folder: Path, supernet: Model) -> None:
        save_desc(supernet.desc, folder / FULL_DESC_FILE)

    def export(self, supernet: Model, strategy: "Strategy") -> ModelDesc:
        """The strategy's Finalizers over the trained architecture weights."""
        return strategy.finalizers().finalize_model(supernet, supernet.desc)

    # -- architectures -----------------------------------------------------------------------

    def parse(self, text: str, info: DatasetInfo) -> ModelDesc:
        """A desc file (its first regular and reduction cells), a genotype string or a named genotype
        such as DARTS_V2, at this space's macro."""
        return desc_from_spec(text, self.conf, info)

    def check(self, arch: ModelDesc, info: DatasetInfo) -> ModelDesc:
        return arch

    def save(self, folder: Path, arch: ModelDesc, info: Optional[DatasetInfo] = None,
             write: bool = True) -> tuple[dict[str, Any], Path]:
        genotype = genotype_or_none(arch)
        if write:
            save_desc(arch, folder / FINAL_DESC_FILE)
            if genotype is not None:
                atomic.write_text(folder / GENOTYPE_FILE, genotype + "\n")
                save_arch(folder, genotype_to_arch(desc_to_genotype(arch)), self.title, None)
        fields = {"final_desc": FINAL_DESC_FILE, "final_desc_fingerprint": arch.fingerprint(), "genotype": genotype}
        return fields, folder / FINAL_DESC_FILE

    def load(self, folder: Path, done: dict[str, Any], marker: Path) -> tuple[ModelDesc, Path, Optional[str]]:
        path = folder / done.get("final_desc", FINAL_DESC_FILE)
        final = load_desc(path)
        if final.fingerprint() != done.get("final_desc_fingerprint"):
            raise DescError(f"{path} does not match the search result recorded in {marker}; it was changed after "
                            "the search finished")
        return final, path, done.get("genotype")

    def describe(self, arch: ModelDesc) -> str:
        return genotype_or_none(arch) or f"{len(arch.cells)} cells"

    # -- networks ----------------------------------------------------------------------------

    def network_desc(self, arch: ModelDesc, info: DatasetInfo) -> ModelDesc:
        """This macro with the cells of `arch` copied in."""
        return ModelDescBuilder().build(self.conf, info, template=arch)

    def network(self, arch: ModelDesc, info: DatasetInfo) -> Model:
        return Model(self.network_desc(arch, info), droppath=True, affine=True)

    def tune_refusal(self) -> Optional[str]:
        return ("nas.eval.mode: tune fine-tunes a searched space over a module (nas.search.space); DARTS cells are "
                "retrained (nas.eval.mode=retrain)")

    def fingerprint(self, arch: Optional[ModelDesc] = None, info: Optional[DatasetInfo] = None) -> str:
        """The fingerprint of the network's desc (of the plain supernet without `arch`)."""
        if info is None:
            raise ValueError("a cell space's networks depend on the images' shape: pass info")
        desc = ModelDescBuilder().build(self.conf, info) if arch is None else self.network_desc(arch, info)
        return desc.fingerprint()

    def save_network(self, folder: Path, arch: ModelDesc, info: DatasetInfo) -> None:
        save_desc(self.network_desc(arch, info), folder / FULL_DESC_FILE)

    # -- genomes -----------------------------------------------------------------------------

    def sample(self, info: DatasetInfo, seed: int) -> ModelDesc:
        """What `RandomFinalizers` picks with `seed` (the random-finalizer baseline's architecture)."""
        supernet = ModelDescBuilder().build(self.conf, info)
        return RandomFinalizers(FinalizerConf(), self.conf.max_final_edges, seed).finalize_desc(supernet)

    def genome(self, info: DatasetInfo) -> Genome:
        return cell_genome(ModelDescBuilder().build(self.conf, info), self.conf.max_final_edges)

    # -- single paths ------------------------------------------------------------------------

    def draw(self, supernet: Model, generator: torch.Generator) -> ModelDesc:
        """A uniform genome of the supernet's cells: per node, a set of kept inputs, then an op
        (other than `none`) for each."""
        genome = cell_genome(supernet.desc, self.conf.max_final_edges)
        return genome.decode([int(torch.randint(c, (1,), generator=generator)) for c in genome.counts])

    def use(self, supernet: Model, arch: ModelDesc) -> None:
        """Every supernet edge runs the op `arch` keeps on it alone; an edge `arch` drops runs
        `none` (zeros: it adds nothing to its node)."""
        indices = {}
        for label, spec in supernet.arch.specs.items():
            cell, final = supernet.desc.first_cell(CellType(label)), arch.first_cell(CellType(label))
            if final is None or len(final.nodes) != len(cell.nodes):
                raise DescError(f"the architecture's {label} cell does not have the supernet's {len(cell.nodes)} nodes")
            rows = []
            for node, kept in zip(cell.nodes, final.nodes):
                ops = {e.input_ids[0]: e.op_desc.name for e in kept.edges}
                rows += [spec.candidates.index(ops.get(e.input_ids[0], NONE_OP)) for e in node.edges]
            indices[label] = rows
        supernet.arch.use(FixedWeighting(indices))

    def record(self, arch: ModelDesc) -> dict[str, list[list[tuple[int, str]]]]:
        """Per cell type, per node, the kept inputs with their ops."""
        return {str(t): [[(e.input_ids[0], e.op_desc.name) for e in node.edges] for node in arch.first_cell(t).nodes]
                for t in CellType if arch.first_cell(t) is not None}


def cell_genome(template: ModelDesc, keep: int) -> Genome:
    """The genome of the cells of `template` (a supernet desc) whose nodes keep `keep` inputs."""
    cells = {t: template.first_cell(t) for t in CellType if template.first_cell(t) is not None}
    genes: list[int] = []
    labels: list[str] = []
    for ctype, cell in cells.items():
        for j, node in enumerate(cell.nodes):
            k = min(keep, len(node.edges))
            genes.append(len(list(itertools.combinations(range(len(node.edges)), k))))
            genes += [len(_ops(node, 0))] * k
            labels += [f"{ctype}.n{j}.inputs", *(f"{ctype}.n{j}.op{s}" for s in range(k))]
    specs = {label: ChoiceSpec(label, tuple(str(i) for i in range(n)), values=tuple(range(n)))
             for label, n in zip(labels, genes)}

    def decode(row: Sequence[int]) -> ModelDesc:
        out, picks, at = template.clone(), {}, 0
        for ctype, cell in cells.items():
            nodes = []
            for node in cell.nodes:
                k = min(keep, len(node.edges))
                inputs = list(itertools.combinations(range(len(node.edges)), k))[int(row[at])]
                ops = [_ops(node, i)[int(row[at + 1 + s])] for s, i in enumerate(inputs)]
                nodes.append([(i, op) for i, op in zip(inputs, ops)])
                at += 1 + k
            picks[ctype] = nodes
        out.cells = [_finalized(cell, picks[cell.cell_type]) for cell in out.cells]
        return out

    def encode(desc: ModelDesc) -> tuple[int, ...]:
        row: list[int] = []
        for ctype, cell in cells.items():
            final = desc.first_cell(ctype)
            if final is None or len(final.nodes) != len(cell.nodes):
                raise DescError(f"the architecture's {ctype} cell does not have the space's {len(cell.nodes)} nodes")
            for j, (node, kept) in enumerate(zip(cell.nodes, final.nodes)):
                by_input = {e.input_ids[0]: i for i, e in enumerate(node.edges)}
                chosen = sorted((by_input[e.input_ids[0]], e.op_desc.name) for e in kept.edges)
                k = min(keep, len(node.edges))
                sets = list(itertools.combinations(range(len(node.edges)), k))
                inputs = tuple(i for i, _ in chosen)
                if inputs not in sets:
                    raise DescError(f"{ctype} cell node {j}: keeps inputs {inputs}, not {k} of the node's edges")
                row.append(sets.index(inputs))
                row += [_ops(node, i).index(op) for i, op in chosen]
        return tuple(row)

    return Genome(tuple(genes), encode, decode, specs)


def _ops(node: NodeDesc, edge: int) -> list[str]:
    """The candidates of a supernet edge a final cell may keep (all but `none`)."""
    return [c.name for c in node.edges[edge].op_desc.children if c.name != NONE_OP]


def _finalized(cell: CellDesc, nodes: list[list[tuple[int, str]]]) -> CellDesc:
    return replace(cell, nodes=[NodeDesc([node.edges[i].finalized(op) for i, op in picks], node.conv_params)
                                for node, picks in zip(cell.nodes, nodes)])
