"""DARTS genotypes: the compact way papers publish a searched cell, read and written here.

A genotype lists, for the regular (`normal`) and the reduction (`reduce`) cell, two
`(op, input_id)` pairs per node, plus the nodes concatenated into the cell output. It is read
from the DARTS string format (`Genotype(normal=[('sep_conv_3x3', 1), ...], normal_concat=[2, 3,
4, 5], reduce=[...], reduce_concat=range(2, 6))`) without evaluating any code, or from the same
fields as YAML. A genotype becomes a ModelDesc through the builder (`archnas.model.resolve`):
its nodes are the template copied into every cell of the macro, and its concat the nodes the
cell output concatenates: all of them (DARTS), or a subset, as the NASNet-style cells (NASNet,
AmoebaNet, ENAS) concatenate only their loose ends, the nodes no other node reads. Op names are checked against
`known_ops` when the caller gives them (the op registry lives above this package).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any, Collection

import yaml

from archnas.config.yaml_files import safe_load_bounded
from archnas.descs.model_desc import CellType, ConvMacroParams, EdgeDesc, ModelDesc, NodeDesc, OpDesc
from archnas.errors import DescError

CellNodes = dict[CellType, list[NodeDesc]]  # the nodes of each cell type, a template for the builder
CellConcat = dict[CellType, tuple[int, ...]]  # the states each cell type concatenates (2 = its first node)

Gene = tuple[tuple[str, int], ...]
_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")


@dataclass(frozen=True)
class Genotype:
    normal: Gene
    normal_concat: tuple[int, ...]
    reduce: Gene
    reduce_concat: tuple[int, ...]

    def __str__(self) -> str:
        """The DARTS format, as its `genotypes.py` and search logs print it."""
        def gene(g: Gene) -> str:
            return "[" + ", ".join(f"({op!r}, {i})" for op, i in g) + "]"

        return (f"Genotype(normal={gene(self.normal)}, normal_concat={list(self.normal_concat)}, "
                f"reduce={gene(self.reduce)}, reduce_concat={list(self.reduce_concat)})")

    def to_dict(self) -> dict[str, Any]:
        """The YAML form: the same four fields, pairs as two-element lists."""
        return {
            "normal": [[op, i] for op, i in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, i] for op, i in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    def cell_nodes(self) -> CellNodes:
        """The node structure of both cell types, for `ModelDescBuilder.build_with_nodes`.

        Channels are placeholders (1): the builder sets every edge to its cell's channels.
        """
        conv = ConvMacroParams(1, 1)
        out: CellNodes = {}
        for ctype, gene in ((CellType.regular, self.normal), (CellType.reduction, self.reduce)):
            nodes = []
            for j in range(0, len(gene), 2):
                edges = []
                for op, i in gene[j : j + 2]:
                    stride = 2 if ctype == CellType.reduction and i < 2 else 1
                    edges.append(EdgeDesc(OpDesc(op, {"conv": conv, "stride": stride}), [i]))
                nodes.append(NodeDesc(edges, conv))
            out[ctype] = nodes
        return out

    def cell_concat(self) -> CellConcat:
        """The states each cell type's output concatenates, for the builder's post-op."""
        return {CellType.regular: self.normal_concat, CellType.reduction: self.reduce_concat}


def unknown_op_message(name: str, known_ops: Collection[str]) -> str:
    return f"unknown op {name!r}; registered ops: {', '.join(sorted(known_ops))}"


def _checked(fields: dict[str, Any], source: str, known_ops: Collection[str] | None) -> Genotype:
    """Validate the four fields (types, op names when `known_ops` is given, input ids, concat)."""
    missing = [k for k in _FIELDS if k not in fields]
    unknown = [k for k in fields if k not in _FIELDS]
    if missing or unknown:
        raise DescError(f"{source}: a genotype has exactly the fields {', '.join(_FIELDS)}; "
                        f"missing {missing or 'none'}, unknown {unknown or 'none'}")
    genes: dict[str, Gene] = {}
    for key in ("normal", "reduce"):
        pairs = fields[key]
        if not isinstance(pairs, (list, tuple)) or not pairs or len(pairs) % 2:
            raise DescError(f"{source}: {key}: expected a non-empty list of (op, input) pairs, two per node")
        gene = []
        for n, pair in enumerate(pairs):
            ok = isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str)
            ok = ok and isinstance(pair[1], int) and not isinstance(pair[1], bool)
            if not ok:
                raise DescError(f"{source}: {key}[{n}]: expected an (op name, input id) pair, got {pair!r}")
            op, i = pair
            if known_ops is not None and op not in known_ops:
                raise DescError(f"{source}: {key}[{n}]: {unknown_op_message(op, known_ops)}")
            node = n // 2
            if not 0 <= i < node + 2:
                raise DescError(f"{source}: {key}[{n}]: node {node} can read inputs 0..{node + 1}, got {i}")
            gene.append((op, i))
        genes[key] = tuple(gene)
    concats: dict[str, tuple[int, ...]] = {}
    for key, gene_key in (("normal_concat", "normal"), ("reduce_concat", "reduce")):
        concat = fields[key]
        n_nodes = len(genes[gene_key]) // 2
        ids = list(concat) if isinstance(concat, (list, tuple, range)) else None
        ok = bool(ids) and all(isinstance(i, int) and not isinstance(i, bool) and 2 <= i < 2 + n_nodes for i in ids)
        if not ok or ids != sorted(set(ids)):
            raise DescError(f"{source}: {key}: expected the increasing ids of the nodes the cell output "
                            f"concatenates, some of {list(range(2, 2 + n_nodes))}, got {concat!r}")
        concats[key] = tuple(ids)
    return Genotype(genes["normal"], concats["normal_concat"], genes["reduce"], concats["reduce_concat"])


def _literal(node: ast.expr, source: str) -> Any:
    """A Python literal, or `range(a, b)` (DARTS writes concat that way); nothing else is evaluated."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range" and not node.keywords:
        return range(*(_literal(a, source) for a in node.args))
    try:
        return ast.literal_eval(node)
    except RecursionError:
        raise DescError(f"{source}: a genotype value is nested too deeply") from None
    except ValueError:
        raise DescError(f"{source}: only literals and range(a, b) are allowed in a genotype, got {ast.unparse(node)!r}") from None


def parse_genotype_string(text: str, source: str = "genotype", known_ops: Collection[str] | None = None) -> Genotype:
    """Parse `Genotype(normal=..., normal_concat=..., reduce=..., reduce_concat=...)`."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise DescError(f"{source}: not a genotype string: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise DescError(f"{source}: not a genotype string: nested too deeply") from None
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id == "Genotype"):
        raise DescError(f"{source}: expected Genotype(normal=..., normal_concat=..., reduce=..., reduce_concat=...)")
    if len(tree.args) > len(_FIELDS):
        raise DescError(f"{source}: Genotype takes {len(_FIELDS)} fields, got {len(tree.args)} positional values")
    fields = {k: _literal(a, source) for k, a in zip(_FIELDS, tree.args)}
    for kw in tree.keywords:
        if kw.arg is None or kw.arg in fields:
            raise DescError(f"{source}: field {kw.arg!r} given twice or as **kwargs")
        fields[kw.arg] = _literal(kw.value, source)
    return _checked(fields, source, known_ops)


def parse_genotype(text: str, source: str = "genotype", known_ops: Collection[str] | None = None) -> Genotype:
    """A genotype from the DARTS string format or from YAML with the same four fields."""
    if text.lstrip().startswith("Genotype"):
        return parse_genotype_string(text, source, known_ops)
    try:
        data = safe_load_bounded(text)
    except yaml.YAMLError as exc:
        raise DescError(f"{source}: neither a Genotype(...) string nor YAML: {exc}") from None
    except RecursionError:
        raise DescError(f"{source}: nested too deeply to be a genotype") from None
    if not isinstance(data, dict):
        raise DescError(f"{source}: expected Genotype(...) or a YAML mapping with {', '.join(_FIELDS)}")
    return _checked(data, source, known_ops)


def desc_to_genotype(desc: ModelDesc) -> Genotype:
    """The genotype of a final desc's first regular and first reduction cell."""
    genes: dict[CellType, Gene] = {}
    concat: dict[CellType, tuple[int, ...]] = {}
    for ctype in CellType:
        cell = desc.first_cell(ctype)
        if cell is None:
            raise DescError(f"a genotype needs a {ctype} cell; this desc has none")
        pairs = []
        for j, node in enumerate(cell.nodes):
            if len(node.edges) != 2:
                raise DescError(f"cell {cell.id} node {j}: a genotype has 2 edges per node, this one has {len(node.edges)}")
            for edge in node.edges:
                if edge.op_desc.children or len(edge.input_ids) != 1:
                    raise DescError(f"cell {cell.id} node {j}: op {edge.op_desc.name!r} is not a single-input final op")
                pairs.append((edge.op_desc.name, edge.input_ids[0]))
        genes[ctype] = tuple(pairs)
        concat[ctype] = tuple(cell.post_op.params.get("concat", range(2, 2 + len(cell.nodes))))
    return Genotype(genes[CellType.regular], concat[CellType.regular], genes[CellType.reduction], concat[CellType.reduction])


# The published cells (DARTS: Liu et al., 2019; PC-DARTS: Xu et al., 2020), as their code ships them,
# and the cells of the NASNet family in the DARTS cell format: NASNet-A (Zoph et al., 2018) and
# AmoebaNet-A (Real et al., 2019) as in the DARTS code's genotypes.py; PNASNet-5 (Liu et al., 2018)
# and ENAS (Pham et al., 2018) as DARTS-derived code carries them (PNASNet.pytorch's cell; ENAS's
# reduction cell concatenating its loose ends 2, 3, 6). Five nodes each; NASNet, AmoebaNet and ENAS
# concatenate only the nodes no other node reads.
_NAMED = {
    "NASNET": "Genotype(normal=[('sep_conv_5x5', 1), ('sep_conv_3x3', 0), ('sep_conv_5x5', 0), ('sep_conv_3x3', 0), "
    "('avg_pool_3x3', 1), ('skip_connect', 0), ('avg_pool_3x3', 0), ('avg_pool_3x3', 0), ('sep_conv_3x3', 1), "
    "('skip_connect', 1)], normal_concat=[2, 3, 4, 5, 6], reduce=[('sep_conv_5x5', 1), ('sep_conv_7x7', 0), "
    "('max_pool_3x3', 1), ('sep_conv_7x7', 0), ('avg_pool_3x3', 1), ('sep_conv_5x5', 0), ('skip_connect', 3), "
    "('avg_pool_3x3', 2), ('sep_conv_3x3', 2), ('max_pool_3x3', 1)], reduce_concat=[4, 5, 6])",
    "AMOEBANET": "Genotype(normal=[('avg_pool_3x3', 0), ('max_pool_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_5x5', 2), "
    "('sep_conv_3x3', 0), ('avg_pool_3x3', 3), ('sep_conv_3x3', 1), ('skip_connect', 1), ('skip_connect', 0), "
    "('avg_pool_3x3', 1)], normal_concat=[4, 5, 6], reduce=[('avg_pool_3x3', 0), ('sep_conv_3x3', 1), "
    "('max_pool_3x3', 0), ('sep_conv_7x7', 2), ('sep_conv_7x7', 0), ('avg_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('max_pool_3x3', 1), ('conv_7x1_1x7', 0), ('sep_conv_3x3', 5)], reduce_concat=[3, 4, 6])",
    "PNAS": "Genotype(normal=[('sep_conv_5x5', 0), ('max_pool_3x3', 0), ('sep_conv_7x7', 1), ('max_pool_3x3', 1), "
    "('sep_conv_5x5', 1), ('sep_conv_3x3', 1), ('sep_conv_3x3', 4), ('max_pool_3x3', 1), ('sep_conv_3x3', 0), "
    "('skip_connect', 1)], normal_concat=[2, 3, 4, 5, 6], reduce=[('sep_conv_5x5', 0), ('max_pool_3x3', 0), "
    "('sep_conv_7x7', 1), ('max_pool_3x3', 1), ('sep_conv_5x5', 1), ('sep_conv_3x3', 1), ('sep_conv_3x3', 4), "
    "('max_pool_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 1)], reduce_concat=[2, 3, 4, 5, 6])",
    "ENAS": "Genotype(normal=[('sep_conv_3x3', 1), ('skip_connect', 1), ('sep_conv_5x5', 1), ('skip_connect', 0), "
    "('avg_pool_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('avg_pool_3x3', 0), ('sep_conv_5x5', 1), "
    "('avg_pool_3x3', 0)], normal_concat=[2, 3, 4, 5, 6], reduce=[('sep_conv_5x5', 0), ('avg_pool_3x3', 1), "
    "('sep_conv_3x3', 1), ('avg_pool_3x3', 1), ('avg_pool_3x3', 1), ('sep_conv_3x3', 1), ('sep_conv_5x5', 4), "
    "('avg_pool_3x3', 1), ('sep_conv_3x3', 5), ('sep_conv_5x5', 0)], reduce_concat=[2, 3, 6])",
    "DARTS_V1": "Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1), "
    "('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)], reduce_concat=[2, 3, 4, 5])",
    "DARTS_V2": "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])",
    "PC_DARTS_CIFAR": "Genotype(normal=[('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 0), ('dil_conv_3x3', 1), "
    "('sep_conv_5x5', 0), ('sep_conv_3x3', 1), ('avg_pool_3x3', 0), ('dil_conv_3x3', 1)], normal_concat=range(2, 6), "
    "reduce=[('sep_conv_5x5', 1), ('max_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_5x5', 2), ('sep_conv_3x3', 0), "
    "('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2)], reduce_concat=range(2, 6))",
    "PC_DARTS_IMAGENET": "Genotype(normal=[('skip_connect', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 0), ('skip_connect', 1), "
    "('sep_conv_3x3', 1), ('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('dil_conv_5x5', 4)], normal_concat=range(2, 6), "
    "reduce=[('sep_conv_3x3', 0), ('skip_connect', 1), ('dil_conv_5x5', 2), ('max_pool_3x3', 1), ('sep_conv_3x3', 2), "
    "('sep_conv_3x3', 1), ('sep_conv_5x5', 0), ('sep_conv_3x3', 3)], reduce_concat=range(2, 6))",
}


def named_genotypes() -> list[str]:
    return sorted(_NAMED)


def named_genotype(name: str) -> Genotype:
    """A published genotype by name (case-insensitive: `PC_DARTS_cifar` works as in their code)."""
    key = name.upper()
    if key not in _NAMED:
        raise DescError(f"unknown genotype {name!r}; known genotypes: {', '.join(named_genotypes())}")
    return parse_genotype_string(_NAMED[key], key)


def resolve_genotype(spec: str, known_ops: Collection[str] | None = None) -> Genotype:
    """A named genotype, or a genotype given inline (DARTS string or YAML)."""
    if spec.upper() in _NAMED:
        return named_genotype(spec)
    if spec.lstrip().startswith("Genotype") or ":" in spec:
        return parse_genotype(spec, known_ops=known_ops)
    raise DescError(f"unknown genotype {spec!r}; known genotypes: {', '.join(named_genotypes())} "
                    "(or give a Genotype(...) string)")
