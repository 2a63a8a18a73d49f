"""ENOT's optimizers for a plain PyTorch loop, over archnas's machinery: the pretrain's uniform
paths, the search rule of the `enot` algorithm (`archnas.enot.core.SearchCore`: one core, two
front ends) and plain training.

    opt = build_enot_optimizer("pretrain", space, torch.optim.SGD(space.model_parameters(), lr=0.05))
    opt = build_enot_optimizer("search", space, torch.optim.Adam(space.architecture_parameters(), lr=0.05),
                               bn_tune_dataloader=train_loader, max_latency_value=30000)
    opt = build_enot_optimizer("train", network, torch.optim.Adam(network.parameters(), lr=2e-4))

Each wraps the user's optimizer: `step(closure)` runs the phase's work around the closure (which
computes the loss and calls `backward`) and steps the wrapped optimizer; `model_step(closure)`
accumulates over a ghost batch (one pretrain path or search sample for all of its batches) and
`step()` then steps once. Loss averaging: `step()` divides the gradients accumulated since the
last step by the number of `model_step` calls, so k closures that each take the mean loss of
one of k equal batches step exactly as one closure on their concatenation would.

Errors as ENOT documents them: an unknown phase or option is a ValueError; a model of the wrong
type for the phase, or an optimizer that is not a `torch.optim.Optimizer`, a TypeError.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Optional, Sequence

import torch
from torch import nn

from archnas.enot.core import SearchCore
from archnas.enot.model import SearchSpaceModel
from archnas.errors import UsageError
from archnas.latency import Limits
from archnas.latency.table import arch_to_row
from archnas.space import SearchSpaceModel as BaseSearchSpaceModel
from archnas.utils.seeding import derive_seed

Closure = Callable[[], Any]


def default_sample_to_model_inputs(sample: Any) -> Any:
    """A dataloader item (inputs, labels) -> the model's input: the first element."""
    return sample[0] if isinstance(sample, (tuple, list)) else sample


class BaseEnotOptimizer:
    """What every phase's optimizer shares: the wrapped optimizer, ghost batches, averaging."""

    phase: ClassVar[str] = ""
    options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, **options: Any):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"{type(self).__name__}: optimizer must be a torch.optim.Optimizer, got "
                            f"{type(optimizer).__name__}")
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown options {', '.join(unknown)}; known: "
                             f"{', '.join(self.options) or 'none'}")
        self._model, self._optimizer = model, optimizer
        self._accumulated = 0  # model_step calls since the last step
        self.steps = 0  # optimizer steps taken

    @property
    def model(self) -> nn.Module:
        return self._model

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self._optimizer.param_groups

    def zero_grad(self) -> None:
        self._optimizer.zero_grad()

    def state_dict(self) -> dict[str, Any]:
        return self._optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._optimizer.load_state_dict(state_dict)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self._optimizer.add_param_group(param_group)

    def _begin_ghost_batch(self) -> None:
        """The phase's work before the first closure of a ghost batch (a path, a sample)."""

    def _run(self, closure: Closure) -> Any:
        return closure()

    def model_step(self, closure: Closure) -> Any:
        """Accumulate the gradients of `closure` (forward, loss, backward); `step()` applies them."""
        if self._accumulated == 0:
            self._begin_ghost_batch()
        result = self._run(closure)
        self._accumulated += 1
        return result

    def step(self, closure: Optional[Closure] = None) -> Any:
        """`model_step(closure)` (when given), then one step of the wrapped optimizer on the
        gradients accumulated since the last step, averaged over their closures."""
        result = None if closure is None else self.model_step(closure)
        if self._accumulated == 0:
            raise RuntimeError(f"{type(self).__name__}.step(): no gradients accumulated; pass a closure or call "
                               "model_step(closure) first")
        if self._accumulated > 1:
            for group in self._optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.div_(self._accumulated)
        self._optimizer.step()
        self._accumulated = 0
        self.steps += 1
        return result


def _search_space(model: nn.Module, who: str) -> BaseSearchSpaceModel:
    if not isinstance(model, BaseSearchSpaceModel):
        raise TypeError(f"{who}: the model must be a SearchSpaceModel (wrap your model with its "
                        f"SearchVariantsContainers in one), got {type(model).__name__}")
    return model


class _DistillGradient(torch.autograd.Function):
    """Identity on the student's logits whose backward is the gradient of the distillation loss
    `weight * T**2 * KL(softmax(teacher / T) || softmax(logits / T))` (batch mean) with respect to
    the logits, `weight * T * (softmax(logits / T) - softmax(teacher / T)) / N`, in place of the
    gradient the user's label loss sends: the sampled path learns from the teacher only, as in
    the sandwich rule, while the user's closure stays as it is."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, teacher: torch.Tensor, temperature: float,
                weight: float) -> torch.Tensor:
        ctx.save_for_backward(logits, teacher)
        ctx.temperature, ctx.weight = temperature, weight
        return logits.view_as(logits)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], None, None, None]:
        logits, teacher = ctx.saved_tensors
        t = ctx.temperature
        diff = torch.softmax(logits.float() / t, dim=-1) - torch.softmax(teacher.float() / t, dim=-1)
        return (ctx.weight * t * diff / logits.shape[0]).to(grad.dtype), None, None, None


class EnotPretrainOptimizer(BaseEnotOptimizer):
    """Pretrain: each ghost batch trains one uniformly drawn path (as the `enot` and `spos`
    pretrain stage: a path is a function of `seed` and the step number).

    With output distribution optimization on (`search_space.initialize_output_distribution_optimization`)
    each closure runs twice: on the largest architecture (its loss on the labels, as the user's
    closure computes it; the logits are kept as the teacher's) and on the ghost batch's path, whose
    logits then learn the teacher's softened outputs instead of the labels (`_DistillGradient`;
    `distill_temperature`, `distill_weight` options, default 1.0). The closure's result returned is
    the largest architecture's loss."""

    phase = "pretrain"
    options = ("check_recommended_optimizations", "seed", "distill_temperature", "distill_weight")

    def __init__(self, search_space: BaseSearchSpaceModel, optimizer: torch.optim.Optimizer,
                 check_recommended_optimizations: bool = True, **options: Any):
        super().__init__(_search_space(search_space, type(self).__name__), optimizer, **options)
        self.seed = int(options.get("seed", 0))
        self.temperature = float(options.get("distill_temperature", 1.0))
        self.weight = float(options.get("distill_weight", 1.0))
        if not self.temperature > 0 or not self.weight >= 0:
            raise ValueError(f"EnotPretrainOptimizer: distill_temperature ({self.temperature}) must be above 0 and "
                             f"distill_weight ({self.weight}) at least 0")
        self._path: Optional[dict[str, Any]] = None

    @property
    def search_space(self) -> BaseSearchSpaceModel:
        return self._model  # type: ignore[return-value]

    def _begin_ghost_batch(self) -> None:
        self._path = self.search_space.sample_random_arch(
            torch.Generator().manual_seed(derive_seed(self.seed, "paths", self.steps)))

    def _run(self, closure: Closure) -> Any:
        space = self.search_space
        largest = getattr(space, "largest_architecture", None)
        if largest is None:
            return closure()
        kept: list[torch.Tensor] = []
        hook = space.register_forward_hook(lambda module, args, out: kept.append(out.detach()))
        try:
            space.set_architecture(largest)
            result = closure()
        finally:
            hook.remove()
            space.set_architecture(self._path)
        if len(kept) != 1:
            raise RuntimeError(f"EnotPretrainOptimizer: the closure ran the model {len(kept)} times; output "
                               "distribution optimization needs exactly one forward per closure")
        teacher = kept[0]
        hook = space.register_forward_hook(
            lambda module, args, out: _DistillGradient.apply(out, teacher, self.temperature, self.weight))
        try:
            closure()
        finally:
            hook.remove()
        return result


class EnotSearchOptimizer(BaseEnotOptimizer):
    """Search: the rule of the `enot` search stage (`SearchCore`): per ghost batch one architecture
    sampled from the distribution and BN-tuned on `bn_tune_batches` batches of `bn_tune_dataloader`
    (None: no tuning); the closures then run in eval mode (the tuned statistics) and their loss
    reaches the architecture logits; the wrapped optimizer must hold `architecture_parameters()`.
    `prepare_validation_model()` sets the most probable architecture (within the limit, for the
    fixed-latency optimizer), BN-tuned on `bn_validation_tune_batches`."""

    phase = "search"
    options = ("bn_tune_dataloader", "bn_tune_batches", "bn_validation_tune_batches", "sample_to_model_inputs",
               "seed", "tau")

    def __init__(self, search_space: BaseSearchSpaceModel, optimizer: torch.optim.Optimizer,
                 bn_tune_dataloader: Any = None, bn_tune_batches: int = 10, bn_validation_tune_batches: int = 50,
                 sample_to_model_inputs: Callable[[Any], Any] = default_sample_to_model_inputs, **options: Any):
        space = _search_space(search_space, type(self).__name__)
        super().__init__(space, optimizer, **options)
        if bn_tune_batches < 0 or bn_validation_tune_batches < 0:
            raise ValueError(f"bn_tune_batches ({bn_tune_batches}) and bn_validation_tune_batches "
                             f"({bn_validation_tune_batches}) must be at least 0")
        self._bn_loader, self._bn_iter = bn_tune_dataloader, None
        self._bn_tune_batches, self._bn_validation_tune_batches = bn_tune_batches, bn_validation_tune_batches
        self._to_inputs = sample_to_model_inputs
        self.seed = int(options.get("seed", 0))
        self.core = SearchCore(space, *self._limits(space), tau=float(options.get("tau", 1.0)))

    def _limits(self, space: BaseSearchSpaceModel) -> tuple[Any, Optional[Limits]]:
        return None, None

    @property
    def search_space(self) -> BaseSearchSpaceModel:
        return self._model  # type: ignore[return-value]

    @property
    def bn_tune_batches(self) -> int:
        return self._bn_tune_batches

    @property
    def bn_validation_tune_batches(self) -> int:
        return self._bn_validation_tune_batches

    def _next_bn_batches(self, n: int) -> list[tuple[Any, None]]:
        """`n` batches of the BN-tuning loader, going on from where the last tuning stopped."""
        out: list[tuple[Any, None]] = []
        if self._bn_loader is None:
            return out
        fresh = False
        while len(out) < n:
            if self._bn_iter is None:
                self._bn_iter, fresh = iter(self._bn_loader), True
            try:
                sample = next(self._bn_iter)
            except StopIteration:
                self._bn_iter = None
                if fresh:
                    break  # an empty loader
                continue
            fresh = False
            out.append((self._to_inputs(sample), None))
        return out

    def _begin_ghost_batch(self) -> None:
        self.core.sample(torch.Generator().manual_seed(derive_seed(self.seed, "enot_search", self.steps)))
        self.core.tune_bn(self._next_bn_batches(self._bn_tune_batches))

    def _run(self, closure: Closure) -> Any:
        if self._bn_loader is None:
            return closure()
        was = self.search_space.training
        self.search_space.eval()
        try:
            return closure()
        finally:
            self.search_space.train(was)

    def prepare_validation_model(self, architecture_indices: Optional[Sequence[int]] = None) -> list[int]:
        """Set the architecture validation runs (the most probable within the limits, or the one of
        `architecture_indices`: one option index per label) and BN-tune it; returns its indices."""
        space = self.search_space
        if architecture_indices is None:
            arch = self.core.best_arch()
        else:
            try:
                arch = space._by_indexes(architecture_indices)
            except UsageError as exc:
                raise ValueError(str(exc)) from None
        self.core.use(arch)
        self.core.tune_bn(self._fixed_validation_batches())
        return arch_to_row(space.specs, arch)

    def _fixed_validation_batches(self) -> list[tuple[Any, None]]:
        """The first `bn_validation_tune_batches` of the loader, the same before every validation."""
        out: list[tuple[Any, None]] = []
        if self._bn_loader is not None:
            for sample in self._bn_loader:
                if len(out) >= self._bn_validation_tune_batches:
                    break
                out.append((self._to_inputs(sample), None))
        return out


class EnotFixedLatencySearchOptimizer(EnotSearchOptimizer):
    """Search under a hard limit: every architecture `prepare_validation_model()` picks has a
    latency of at most `max_latency_value` (the exact constrained argmax of the distribution);
    the model's latency must be initialized (`initialize_latency`)."""

    def __init__(self, search_space: BaseSearchSpaceModel, optimizer: torch.optim.Optimizer,
                 max_latency_value: float, **options: Any):
        self.max_latency_value = float(max_latency_value)
        super().__init__(search_space, optimizer, **options)

    def _limits(self, space: BaseSearchSpaceModel) -> tuple[Any, Optional[Limits]]:
        if not isinstance(space, SearchSpaceModel) or space.latency_type is None:
            raise ValueError("EnotFixedLatencySearchOptimizer: the search space has no latency; call "
                             "search_space.initialize_latency(kind, sample_inputs) first")
        kind, costs = space.latency_type, space.space_costs
        limits = Limits({kind: self.max_latency_value}, {kind: "search.max_latency_value"}, "search")
        try:
            limits.check_reachable(costs)
        except UsageError as exc:
            raise ValueError(str(exc)) from None
        return costs, limits


class EnotTrainOptimizer(BaseEnotOptimizer):
    """Train or tune the extracted network (a plain module, not a search space)."""

    phase = "train"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, **options: Any):
        if isinstance(model, BaseSearchSpaceModel):
            raise TypeError("EnotTrainOptimizer trains an extracted network, not a SearchSpaceModel: take "
                            "search_space.get_network_with_best_arch() first")
        if not isinstance(model, nn.Module):
            raise TypeError(f"EnotTrainOptimizer: the model must be a torch.nn.Module, got {type(model).__name__}")
        super().__init__(model, optimizer, **options)


def build_enot_optimizer(phase_name: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                         **options: Any) -> BaseEnotOptimizer:
    """The optimizer of `phase_name` (pretrain, search, train); a search with `max_latency_value`
    is the fixed-latency search."""
    if phase_name == "pretrain":
        return EnotPretrainOptimizer(model, optimizer, **options)  # type: ignore[arg-type]
    if phase_name == "search":
        if "max_latency_value" in options:
            return EnotFixedLatencySearchOptimizer(model, optimizer, **options)  # type: ignore[arg-type]
        return EnotSearchOptimizer(model, optimizer, **options)  # type: ignore[arg-type]
    if phase_name == "train":
        return EnotTrainOptimizer(model, optimizer, **options)
    raise ValueError(f"build_enot_optimizer: unknown phase {phase_name!r}; expected pretrain, search or train")


def make_portable(model: nn.Module) -> nn.Module:
    """The extracted network as a torch.fx GraphModule: generated code over torch.nn modules, with
    the trained weights, that pickles and runs without archnas's search-space modules (a
    SearchSpaceModel is first extracted at its best architecture). For a file that needs only
    torch, use `archnas export --format py` on an experiment."""
    if isinstance(model, BaseSearchSpaceModel):
        model = model.get_network_with_best_arch()
    if not isinstance(model, nn.Module):
        raise TypeError(f"make_portable: expected a torch.nn.Module, got {type(model).__name__}")
    left = sorted({type(m).__name__ for m in model.modules() if type(m).__module__.startswith("archnas.space")})
    if left:
        raise ValueError(f"make_portable: the network still holds search-space modules ({', '.join(left)}); "
                         "extract it with get_network_with_best_arch() or get_network_by_indexes()")
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as exc:  # torch.fx raises many kinds (TraceError, TypeError, ...) on control flow
        raise ValueError(f"make_portable: {type(model).__name__} cannot be traced by torch.fx ({exc})") from None
