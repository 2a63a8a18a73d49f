"""What a user names as "the architecture" (`nas.eval.final_desc`, `archnas stats --genotype/--desc`)
-> a checked ModelDesc at a given macro: desc files and genotypes with their op names checked
against the op registry, built by the ModelDescBuilder."""

from __future__ import annotations

from pathlib import Path

from archnas.config.schema.model_desc import ModelDescConf
from archnas.descs.dataset_info import DatasetInfo
from archnas.descs.desc_io import load_desc
from archnas.descs.genotypes import Genotype, named_genotypes, parse_genotype, resolve_genotype
from archnas.descs.model_desc import ModelDesc
from archnas.errors import DescError
from archnas.model.builder import ModelDescBuilder
from archnas.ops.registry import registered_ops


def load_checked_desc(path: str | Path) -> ModelDesc:
    """A desc file whose op names are all registered (else a DescError naming the file and op)."""
    return load_desc(path, known_ops=registered_ops())


def checked_genotype(spec: str) -> Genotype:
    """A named genotype or a genotype string/YAML whose ops are all registered."""
    return resolve_genotype(spec, known_ops=registered_ops())


def parse_checked_genotype(text: str, source: str = "genotype") -> Genotype:
    return parse_genotype(text, source, known_ops=registered_ops())


def genotype_to_desc(genotype: Genotype, conf: ModelDescConf, dataset_info: DatasetInfo,
                     builder: ModelDescBuilder | None = None) -> ModelDesc:
    """The network of `conf`'s macro with the genotype's cells (e.g. DARTS_V2 at 36 ch, 20 cells)."""
    return (builder or ModelDescBuilder()).build_with_nodes(conf, dataset_info, genotype.cell_nodes(),
                                                                  genotype.cell_concat())


def desc_from_spec(spec: str, conf: ModelDescConf, dataset_info: DatasetInfo,
                   builder: ModelDescBuilder | None = None) -> ModelDesc:
    """A desc file (its first regular and reduction cells are the template), a named genotype
    (DARTS_V2, ...) or a genotype string, built at `conf`'s macro."""
    builder = builder or ModelDescBuilder()
    if not spec.lstrip().startswith("Genotype") and (spec.endswith((".yaml", ".yml")) or _names_path(spec)):
        template = load_checked_desc(spec)
        _refuse_supernet(template, spec)
        return builder.build(conf, dataset_info, template=template)
    return genotype_to_desc(checked_genotype(spec), conf, dataset_info, builder)


def _names_path(spec: str) -> bool:
    """Whether `spec` names something on disk rather than a genotype: a file, or a folder or
    device given by mistake, which load_desc then refuses as what it is ("is a directory", "not a
    regular file") instead of calling it an unknown genotype. False for text no file can be named
    by (a genotype string is longer than a file name may be)."""
    try:
        path = Path(spec).expanduser()
        return path.is_file() or (path.exists() and spec.upper() not in named_genotypes())
    except (OSError, ValueError):
        return False


def _refuse_supernet(desc: ModelDesc, where: str) -> None:
    """A search's `full_model_desc.yaml` in place of its `final_model_desc.yaml` would train the
    whole supernet, every candidate on every edge, as if it were the found architecture."""
    for i, cell in enumerate(desc.cells):
        for j, node in enumerate(cell.nodes):
            for k, edge in enumerate(node.edges):
                if edge.op_desc.children:
                    raise DescError(
                        f"{where}: a search supernet, not an architecture (cells.{i}.nodes.{j}.edges.{k} is a "
                        f"{edge.op_desc.name} of {len(edge.op_desc.children)} candidates); give the search's "
                        "final_model_desc.yaml, its genotype.txt string or a named genotype"
                    )
