"""A trained network as standalone PyTorch source (`archnas export --format py`): a `model.py`
that needs only torch, and its weights as a plain state dict.

`torch.fx` traces the network down to modules of `torch.nn` (the leaves) and torch functions. The
source is one class: `__init__` rebuilds every leaf from its constructor arguments (read back from
the module's attributes, and checked: the rebuilt module must hold the same settings and tensor
shapes), `forward` is the traced code. Leaves become flat attributes named by their path in the
network (`cells.0.dag.1.0.op` -> `cells_0_dag_1_0_op`), which the state dict keys follow. Anything
the code calls must come from torch or Python itself: a function of archnas, or a leaf that is not
a `torch.nn` module, is refused by name, so the file never needs archnas.

What does not trace (Python control flow on tensor values, tensor-dependent shapes) is refused
naming the module it happened in. archnas's own ops keep their speed-only branches (memory
layouts, matrix-product 1x1 convolutions) out of a traced graph.
"""

from __future__ import annotations

import ast
import inspect
import keyword
import math
import re
from typing import Any

import torch
from torch import Tensor, fx, nn

from archnas.errors import ExportError

CLASS_NAME = "Network"
WEIGHTS_FILE = "weights.pt"
# Names fx's generated code may use, and where the standalone file gets them.
_BUILTIN_GLOBALS = {
    "torch": "import torch",
    "inf": "from math import inf",
    "nan": "from math import nan",
    "NoneType": "NoneType = type(None)",
    "device": "from torch import device",
}
_ALLOWED_MODULES = ("torch", "operator", "math", "builtins", "_operator")


class _PathTracer(fx.Tracer):
    """fx's tracer, remembering the path of the module being traced, for the error message."""

    def __init__(self) -> None:
        super().__init__()
        self.path: list[str] = []

    def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        self.path.append(self.path_of_module(m))
        try:
            return super().call_module(m, forward, args, kwargs)
        finally:
            self.path.pop()


def _identifier(path: str, taken: set[str]) -> str:
    """A Python attribute name for a module path, unique in `taken`, clear of nn.Module's own."""
    name = re.sub(r"\W", "_", path) or "module"
    if name[0].isdigit() or keyword.iskeyword(name) or hasattr(nn.Module, name):
        name = f"m_{name}"
    unique, k = name, 2
    while unique in taken:
        unique, k = f"{name}_{k}", k + 1
    taken.add(unique)
    return unique


def _literal(value: Any, where: str) -> str:
    """`value` as source that evaluates back to it (plain constants and tuples of them)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ExportError(f"{where}: the value {value!r} has no literal form in source")
    text = repr(value)
    try:
        same = ast.literal_eval(text) == value
    except (ValueError, SyntaxError):
        same = False
    if not same:
        raise ExportError(f"{where}: its setting {value!r} ({type(value).__name__}) cannot be written as source")
    return text


def _settings(module: nn.Module) -> dict[str, Any]:
    """A module's plain settings (its public non-tensor attributes), what a rebuild must reproduce."""
    return {k: v for k, v in vars(module).items() if not k.startswith("_") and k != "training"
            and not isinstance(v, Tensor)}


def constructor(module: nn.Module, where: str) -> str:
    """Source that builds a module like `module` (its weights aside): `torch.nn.Conv2d(...)`.

    The arguments are the constructor's parameters read back from the attributes of the same name
    (a tensor or None for a boolean parameter, such as `bias`, becomes whether it is there); the
    module built from them must hold the same settings and the same tensor shapes."""
    cls = type(module)
    if getattr(nn, cls.__name__, None) is not cls:
        raise ExportError(f"{where}: {cls.__module__}.{cls.__qualname__} is not a torch.nn module, so the "
                          "standalone source cannot build it")
    args: dict[str, Any] = {}
    for name, param in list(inspect.signature(cls.__init__).parameters.items())[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or name in ("device", "dtype"):
            continue
        if not hasattr(module, name):
            if param.default is param.empty:
                raise ExportError(f"{where}: torch.nn.{cls.__name__} keeps no attribute {name!r} to rebuild it from")
            continue
        value = getattr(module, name)
        if isinstance(param.default, bool) and (value is None or isinstance(value, Tensor)):
            value = value is not None
        args[name] = value
    rebuilt = cls(**args)
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    if _settings(rebuilt) != _settings(module) or shapes(rebuilt) != shapes(module):
        raise ExportError(f"{where}: torch.nn.{cls.__name__} built from its constructor arguments differs from the "
                          "trained one, so the standalone source cannot rebuild it")
    listed = ", ".join(f"{k}={_literal(v, where)}" for k, v in args.items())
    return f"torch.nn.{cls.__name__}({listed})"


def _import_line(name: str, obj: Any, where: str) -> str:
    """How the standalone file gets a global the traced code uses."""
    if name in _BUILTIN_GLOBALS:
        return _BUILTIN_GLOBALS[name]
    module = getattr(obj, "__module__", None) or ""
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", "")
    if module.split(".")[0] not in _ALLOWED_MODULES or not qualname or "." in qualname:
        raise ExportError(f"{where}: the traced code calls {module}.{qualname or name}, which is not part of "
                          "torch or Python, so the standalone source cannot call it")
    return f"from {module} import {qualname} as {name}" if qualname != name else f"from {module} import {name}"


def _tensor_attr(net: nn.Module, target: str) -> Tensor:
    obj: Any = net
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def trace(net: nn.Module) -> fx.Graph:
    """The network's fx graph (leaves: torch.nn modules), or one line saying where tracing failed."""
    tracer = _PathTracer()
    try:
        return tracer.trace(net)
    except Exception as exc:  # fx raises TraceError, TypeError, RuntimeError... from the module's own code
        where = tracer.path[-1] if tracer.path else "the network"
        owner = type(net.get_submodule(where)).__name__ if tracer.path and where else type(net).__name__
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"export --format py: torch.fx cannot trace {where or 'the network'} ({owner}): "
                          f"{detail}") from None


def network_source(net: nn.Module, doc: str) -> tuple[str, dict[str, Tensor]]:
    """The standalone `model.py` of `net` (eval mode) and the state dict its `Network` loads."""
    net.eval()
    graph = trace(net)
    paths = [n.target for n in graph.nodes if n.op in ("call_module", "get_attr")]
    heads = {p.split(".")[0] for p in paths}
    strip = len(next(iter(heads))) + 1 if len(heads) == 1 and all("." in p for p in paths) else 0  # a wrapper's name
    taken: set[str] = set()
    flat: dict[str, str] = {}
    root = nn.Module()
    init: list[str] = []
    for node in graph.nodes:
        if node.op == "call_module" and node.target not in flat:
            module = net.get_submodule(node.target)
            name = flat[node.target] = _identifier(node.target[strip:], taken)
            init.append(f"self.{name} = {constructor(module, node.target)}")
            setattr(root, name, module)
        elif node.op == "get_attr" and node.target not in flat:
            tensor = _tensor_attr(net, node.target)
            name = flat[node.target] = _identifier(node.target[strip:], taken)
            empty = f"torch.empty({list(tensor.shape)}, dtype={tensor.dtype})"
            if isinstance(tensor, nn.Parameter):
                init.append(f"self.{name} = torch.nn.Parameter({empty}, requires_grad={tensor.requires_grad})")
                root.register_parameter(name, tensor)
            else:
                init.append(f"self.register_buffer({name!r}, {empty})")
                root.register_buffer(name, tensor)
        if node.op in ("call_module", "get_attr"):
            node.target = flat[node.target]
        node.type = None  # annotations of the traced code (strings under postponed evaluation) are left out
    code = graph.python_code(root_module="self")
    used = {name for name in code.globals if re.search(rf"\b{re.escape(name)}\b", code.src)}
    imports = sorted({_import_line(name, code.globals[name], "export --format py") for name in used} | {"import torch"})
    forward = "\n".join(("    " + line) if line.strip() else "" for line in code.src.strip().splitlines())
    source = "\n".join([
        f'"""{doc}"""', "", "from __future__ import annotations", "", "import os", *imports, "",
        f'WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "{WEIGHTS_FILE}")', "", "",
        f"class {CLASS_NAME}(torch.nn.Module):",
        '    """The network, its layers as torch.nn modules; `load()` gives it with its trained weights."""', "",
        "    def __init__(self) -> None:", "        super().__init__()",
        *(f"        {line}" for line in init), "", forward, "", "",
        f"def load(weights: str = WEIGHTS) -> {CLASS_NAME}:",
        '    """The network with the trained weights (a plain state dict, read with weights_only=True), in',
        '    eval mode on the CPU."""',
        f"    net = {CLASS_NAME}()",
        '    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))',
        "    return net.eval()", "",
    ])
    state = {k: v.detach().clone().contiguous() for k, v in root.state_dict().items()}
    return source, state


def load_source(source: str, state: dict[str, Tensor]) -> nn.Module:
    """The `Network` a generated source defines, with `state` loaded: what the parity check runs."""
    namespace: dict[str, Any] = {"__name__": "archnas_exported_model", "__file__": WEIGHTS_FILE}
    exec(compile(source, "model.py", "exec"), namespace)  # noqa: S102  (source this module generated)
    net = namespace[CLASS_NAME]()
    net.load_state_dict(state)
    return net.eval()

