"""`Strategy`: what makes one search algorithm different from another, in one small object.

An algorithm is a module with one `Strategy` subclass, registered by name:

    @register_algorithm
    class Gdas(Strategy):
        name = "gdas"
        config_class = GdasConf              # nas.search.gdas
        def weighting(self): ...             # one hard Gumbel sample per edge and forward
        def mixed_op(self, ...): ...         # the supernet edge runs only the sampled candidate

It says, over the one shared machinery (ArchTrainer, bilevel step, Finalizers, phases,
checkpoints, CLI):
- its recipe: the stages that run, in order (`phases`: search then eval by default; `manual`: eval
  only; `nas.extra_stages` appends registered stages after them), and which search spaces it can
  drive (`supports`: DARTS cells, spaces over a module, or both);
- what the supernet's edges compute (`mixed_op`) and how architecture parameters become one
  forward's weights (`weighting`: softmax for DARTS);
- what trains them (`arch_optimizer`: the name of a registered architecture optimizer, the
  bilevel step by default; `nas.search.arch_optimizer` replaces it), whether the bilevel step must
  be first order (`first_order_only`), when it steps (`takes_arch_step`), with which trainer
  hooks (`trainer_hooks`, e.g. a temperature schedule), and what each epoch records (`epoch_metrics`);
- how a searched supernet becomes a final architecture (`finalizers`).
Every method has the DARTS default, so an algorithm overrides only what it changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

from torch import nn

from archnas.config.schema import ExperimentConf
from archnas.descs.model_desc import ConvMacroParams, OpDesc
from archnas.errors import ConfigError
from archnas.latency import check_cost_conf, given_limits
from archnas.model.builder import ModelDescBuilder, darts_mixed_op
from archnas.latency.penalty import check_penalty
from archnas.nas.arch_optimizer import arch_optimizer_name, build_arch_optimizer
from archnas.nas.cost_search import cost_settings
from archnas.nas.evaluater import Evaluater, check_eval_mode
from archnas.nas.finalizers import Finalizers, RandomFinalizers, random_arch_seed
from archnas.nas.searcher import Searcher
from archnas.nas.spaces import Space, space_of
from archnas.space.store import Weighting
from archnas.training.hooks import HookBase

if TYPE_CHECKING:
    from archnas.model.model import Model
    from archnas.nas.phase import Phase


class Strategy:
    name: ClassVar[str] = ""
    config_class: ClassVar[Optional[type]] = None  # its config section, nas.search.<name>
    phases: ClassVar[tuple[type["Phase"], ...]] = (Searcher, Evaluater)
    # Set when the bilevel step must be first order by design; the reason is in the error.
    first_order_only: ClassVar[Optional[str]] = None
    # DDP must be told when a supernet's forward leaves parameters without gradient.
    find_unused_parameters: ClassVar[bool] = False
    # What `nas.search.finalizer.type: default | random` build.
    default_finalizers: ClassVar[type[Finalizers]] = Finalizers
    random_finalizers: ClassVar[type[RandomFinalizers]] = RandomFinalizers
    # Takes nas.search.cost limits and the soft cost term over a module space: its search trains a
    # distribution over the choices and exports the most probable architecture within the limits
    # (`archnas.nas.cost_search`; darts, gdas).
    cost_aware: ClassVar[bool] = False

    def __init__(self, conf: ExperimentConf):
        self.conf = conf
        self.section: Any = getattr(conf.nas.search, self.name) if self.config_class is not None else None
        self.check()

    def check(self) -> None:
        """Refuse settings this algorithm cannot honour, before anything runs (ConfigError)."""
        search = self.conf.nas.search
        if any(p.section_key == "nas.search" for p in self.phases):
            space = space_of(search)
            refusal = self.supports(space)
            if refusal is not None:
                raise ConfigError(f"{space.key}: {self.name} cannot search {space.title}: {refusal}")
        if search.space and any(p.section_key == "nas.search" for p in self.phases):
            if search.combinations.enabled or search.post_train.trainer.epochs > 0:
                raise ConfigError("nas.search.space: combinations and post_train vary or train DARTS cells; turn them "
                                  "off (nas.search.combinations.enabled=false, nas.search.post_train.trainer.epochs=0)")
        cost = search.cost
        limits = given_limits(cost)
        picks_subnets = any(getattr(phase, "picks_subnets", False) for phase in self.phases)
        cost_aware = self.cost_aware and bool(cost_settings(cost))
        if cost_aware:
            self.check_cost_aware(cost_settings(cost))
        takes_penalty = self.cost_aware or any(getattr(p, "takes_cost_penalty", False) for p in self.phases)
        if cost.penalty.weight and not takes_penalty:
            raise ConfigError(f"nas.search.cost.penalty.weight: {cost.penalty.weight!r}, but {self.name} trains no "
                              "architecture distribution under a soft cost term; leave it 0 (gradient searches over a "
                              "module space take it: darts, gdas)")
        if not picks_subnets and not cost_aware and (limits or search.ranking_check.n_archs):
            what = ", ".join(f"nas.search.cost.{k}" for k in limits) or "nas.search.ranking_check.n_archs"
            raise ConfigError(f"{what}: {self.name} does not pick subnets under limits or rank them; use an algorithm "
                              "that scores subnets (spos), or leave it unset")
        if search.ranking_check.n_archs and not picks_subnets:
            raise ConfigError(f"nas.search.ranking_check.n_archs: {self.name} does not pick subnets under limits or "
                              "rank them; use an algorithm that scores subnets (spos), or leave it unset")
        if search.ranking_check.n_archs and (search.ranking_check.n_archs < 5 or search.ranking_check.epochs < 1):
            raise ConfigError(f"nas.search.ranking_check: n_archs {search.ranking_check.n_archs} must be at least 5 "
                              f"(or 0: off) and epochs {search.ranking_check.epochs} at least 1; fewer architectures "
                              "give rank correlations too noisy to read")
        if picks_subnets:
            check_cost_conf(cost)  # names, values and counts checked before anything runs
        check_eval_mode(self.conf)
        trains = any(getattr(p, "trains_supernet", False) for p in self.phases)
        if search.arch_optimizer and not trains:
            raise ConfigError(f"nas.search.arch_optimizer: {search.arch_optimizer!r}, but {self.name} trains no supernet "
                              f"(its stages: {', '.join(p.name for p in self.phases)}), so no architecture optimizer "
                              "would run; leave it null")
        if trains and search.space and any(p.section_key == "nas.search" for p in self.phases):
            space = space_of(search)
            refusal = space.supernet_refusal()
            if refusal is not None:
                raise ConfigError(f"{space.key}: {self.name} trains a supernet and cannot search {space.title}: {refusal}")
        if trains:
            optimizer = build_arch_optimizer(self)
            optimizer.check()
            if search.distill.enabled and not optimizer.distills:
                raise ConfigError(f"nas.search.distill.enabled: the architecture optimizer "
                                  f"{arch_optimizer_name(self)!r} of {self.name} trains no sampled subnets to distill; "
                                  "in-place distillation is for single-path pretrains (spos: uniform_paths)")
        elif search.distill.enabled:
            raise ConfigError(f"nas.search.distill.enabled: {self.name} trains no supernet; leave it false")
        if search.ranking_monitor.anchors:
            from archnas.nas.ranking_monitor import check_ranking_monitor  # it trains anchors through a strategy

            check_ranking_monitor(search, space_of(search), trains, self.name)
        if any(p.section_key == "nas.search" for p in self.phases) and search.loader.val_ratio <= 0:
            raise ConfigError(
                f"nas.search.loader.val_ratio: {search.loader.val_ratio} holds out no validation images, but the "
                f"{self.name} search trains or scores architectures on them; set it between 0 and 1 "
                "(confs/darts.yaml: 0.5)"
            )

    def check_cost_aware(self, keys: list[str]) -> None:
        """Limits or a penalty on a cost-aware gradient search: only over a space over a module,
        with an architecture optimizer that takes the cost term when a penalty is set."""
        search = self.conf.nas.search
        first = f"nas.search.cost.{keys[0]}"
        space = space_of(search)
        if space.kind != "modules":
            raise ConfigError(f"{first}: {self.name} honours cost limits and the cost penalty only over a space over a "
                              "module (nas.search.space); DARTS cells' finalizer keeps the strongest edges whatever "
                              "they cost; search a module space, or leave the limits unset")
        check_cost_conf(search.cost)
        check_penalty(search.cost)
        optimizer = build_arch_optimizer(self)
        if search.cost.penalty.weight and not optimizer.takes_cost_term:
            raise ConfigError(f"nas.search.cost.penalty.weight: the architecture optimizer "
                              f"{arch_optimizer_name(self)!r} does not add the soft cost term to its architecture "
                              "loss; use the bilevel step (nas.search.arch_optimizer: null) or leave it 0")

    # -- the space ---------------------------------------------------------------------------

    def supports(self, space: Space) -> Optional[str]:
        """Why this algorithm cannot drive `space` (one sentence), or None when it can."""
        return None

    def supernet_phase(self) -> str:
        """The folder of the phase of the recipe that trains the supernet (a phase class with
        `trains_supernet`): what `nas.eval.mode: tune` and subnet scoring inherit weights from."""
        phase = next((p for p in self.phases if getattr(p, "trains_supernet", False)), None)
        if phase is None:
            raise ConfigError(f"nas.eval.mode: tune fine-tunes a trained supernet, but {self.name} trains none; use "
                              "nas.eval.mode=retrain")
        return phase.name

    # -- the supernet ------------------------------------------------------------------------

    def mixed_op(self, primitives: list[str], conv: ConvMacroParams, stride: int) -> OpDesc:
        """The op on every supernet edge (DARTS: the weighted sum of all candidates)."""
        return darts_mixed_op(primitives, conv, stride)

    def supernet_builder(self) -> ModelDescBuilder:
        return ModelDescBuilder(mixed_op=self.mixed_op)

    def weighting(self) -> Weighting:
        """How the architecture parameters become one forward's weights (DARTS: softmax)."""
        return Weighting()

    def build_module_supernet(self, build: Callable[[], nn.Module]) -> nn.Module:
        """The model of a space over a module, built for this algorithm's supernet (`build()` makes
        it; PC-DARTS builds it with partial-channel edges); a SpaceError says why it cannot be."""
        return build()

    # -- stepping ----------------------------------------------------------------------------

    def arch_optimizer(self) -> str:
        """The registered architecture optimizer its supernet trains with (archnas.nas.arch_optimizer)."""
        return "bilevel"

    def takes_arch_step(self, epoch: int) -> bool:
        """Whether the steps of `epoch` (0-based) train the architecture too."""
        return True

    def trainer_hooks(self) -> list[HookBase]:
        return []

    def cost_models(self) -> list[str]:
        """Cost models whose expectation its architecture optimizer reads (proxyless's latency loss):
        the search tables them over a module space even without limits (`CostGuide.build`)."""
        return []

    def epoch_metrics(self, model: "Model") -> dict[str, Any]:
        """Fields of the algorithm's own for each search epoch's record."""
        return {}

    # -- discretizing ------------------------------------------------------------------------

    def finalizers(self) -> Finalizers:
        search = self.conf.nas.search
        conf, edges = search.finalizer, search.model_desc.max_final_edges
        if conf.type == "default":
            return self.default_finalizers(conf, edges)
        if conf.type == "random":
            return self.random_finalizers(conf, edges, random_arch_seed(self.conf.common.seed, 1))
        raise ConfigError(f"nas.search.finalizer.type: {conf.type!r} is not one of default, random")
