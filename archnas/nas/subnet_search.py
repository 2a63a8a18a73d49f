"""The search phase of a single-path one-shot algorithm (spos): subnets of a pretrained supernet,
scored on the weights they inherit, under hardware limits.

    pretrain/checkpoint_last.pt -> supernet -> cost models, latency_stats.json
        -> batches of candidates (a sampler: evolution, random, grid, optuna_tpe, optuna_nsga2),
           each BN-recalibrated and scored (`archnas.nas.selection`)
        -> pareto.csv, pareto.png, arch.yaml (the best allowed candidate), search_result.json

Before the first candidate is drawn, the cost models are built (`archnas.latency`), every limit
is checked against the space's minimum (a limit no architecture meets is a usage error naming
the minimum), and `latency_stats.json` records each cost's min, max, mean and median over the
space. The cost tables are part of the search checkpoint, so a resumed search uses the latency
predictions it started with rather than new, noisy measurements. The search checkpoints after
every batch (`checkpoint_last.pt`: the sampler's state, the tables, the RNG); a killed search
reruns at most the batch it was in, and since a candidate's score depends only on the inherited
weights, its architecture and fixed batches, it ends exactly where an uninterrupted one ends.
`optuna_nsga2` trades accuracy against the `nas.search.cost.pareto` cost.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

from archnas.context import PhaseContext
from archnas.descs.dataset_info import DatasetInfo
from archnas.errors import ConfigError
from archnas.latency import Limits, SpaceCosts, cost_model
from archnas.latency.table import row_to_arch
from archnas.nas.samplers import Genomes, Sampler, build_sampler, sampler_class
from archnas.nas.cost_search import allowed_genomes, space_costs
from archnas.nas.pareto import write_pareto
from archnas.nas.searcher import SearchPhase, SearchResult, load_data
from archnas.nas.selection import InheritedWeights, select
from archnas.nas.spaces import Genome, Space, space_of
from archnas.nas.subnets import inherited_supernet, subnet_scorer
from archnas.training.checkpoint import Checkpointer
from archnas.utils import atomic
from archnas.utils.seeding import derive_seed

LATENCY_STATS_FILE = "latency_stats.json"


class CostTables:
    """The cost tables of a search, as checkpoint state (so a resumed search keeps its predictions)."""

    def __init__(self, costs: SpaceCosts):
        self.costs = costs

    def state_dict(self) -> dict[str, Any]:
        return self.costs.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.costs.load_state_dict(state)


class SubnetSearchPhase(SearchPhase):
    """`search` of spos: a sampler over the pretrained supernet's subnets, scored on inherited weights."""

    picks_subnets: ClassVar[bool] = True  # a strategy with this phase takes cost limits and the ranking check
    scored_as: ClassVar[str] = "inherited"  # what a candidate's accuracy is (the log, pareto.png)

    def inputs(self) -> tuple[str, ...]:
        return (self.strategy.supernet_phase(),)

    def work(self, ctx: PhaseContext) -> SearchResult:
        conf = ctx.conf
        section = self.strategy.section
        space = space_of(conf)
        data = load_data(ctx, conf.loader)
        supernet = inherited_supernet(space, ctx, data.info, self.strategy.supernet_phase(), self.strategy)
        genome = space.genome(data.info)
        costs = space_costs(conf.cost, space, genome, data.info, ctx.seed)
        limits = Limits.from_conf(conf.cost)
        names = limits.reported(conf.cost.pareto)
        search = self.sampler(section, genome, costs, limits, conf.cost.pareto,
                              derive_seed(ctx.seed, self.name, "sampler"))
        fingerprint = space.supernet_fingerprint(supernet)
        checkpointer = self.checkpointer(ctx, fingerprint)
        checkpointer.register("search", search)
        checkpointer.register("cost_tables", CostTables(costs))
        resumed = checkpointer.resume() if ctx.resume else None
        ctx.commit()
        if resumed is None:
            self.start_tables(ctx, space, costs, limits, names, checkpointer)
        else:
            ctx.log.info(f"resumed the search from {resumed.path} after generation {search.generation}")
        scorer = subnet_scorer(space, supernet, data, ctx, section.bn_recalibration.batches, section.score_batches)
        select(search, InheritedWeights(scorer, genome.decode), checkpointer, ctx.log, probe=ctx.probe)
        return self.finish(ctx, space, genome, data.info, fingerprint, search, costs, limits, names)

    def sampler(self, section: Any, genome: Genome, costs: SpaceCosts, limits: Limits, pareto: str,
                seed: int) -> Sampler:
        """`nas.search.spos.strategy` with its settings over the space's genomes; the limits say
        which genomes it may propose, and a multi-objective one trades accuracy against the Pareto cost."""
        genomes = Genomes(genome.counts, allowed_genomes(genome, costs, limits),
                          # the Pareto cost model is built (or restored) when first asked
                          lambda row: costs.model(pareto).cost(row_to_arch(genome.specs, row)))
        return build_sampler(section.strategy, getattr(section, section.strategy, None), genomes, seed)

    @staticmethod
    def check_space(section: Any, genome: Genome, key: str = "nas.search.spos") -> None:
        """Before pretraining: the sampler can search a space of this size (a grid refuses a large one);
        `key`: the settings' section."""
        sampler_class(section.strategy, f"{key}.strategy").check_space(
            getattr(section, section.strategy, None), list(genome.counts), f"{key}.{section.strategy}")

    def start_tables(self, ctx: PhaseContext, space: Space, costs: SpaceCosts, limits: Limits, names: list[str],
                     checkpointer: Checkpointer) -> None:
        """A fresh selection's start: the limits judged reachable, the space's cost statistics
        written (`latency_stats.json`) and logged, and the tables checkpointed before any candidate
        is scored, so a resumed one reads them back instead of building them again."""
        limits.check_reachable(costs)
        report = {"space": space.description(), **costs.report(names)}
        if ctx.is_main:
            atomic.write_json(ctx.dir / LATENCY_STATS_FILE, report)
        self.log_costs(ctx, report, names)
        checkpointer.save(last=True)

    def log_costs(self, ctx: PhaseContext, report: dict[str, Any], names: list[str]) -> None:
        for name in names:
            s = report[name]
            ctx.log.info(f"{name} over the space ({s['over']}): min {s['min']:,}, median {s['median']:,}, max "
                         f"{s['max']:,} {cost_model(name).unit}; {s['method']}")

    def finish(self, ctx: PhaseContext, space: Space, genome: Genome, info: DatasetInfo, fingerprint: str,
               search: Sampler, costs: SpaceCosts, limits: Limits, names: list[str],
               extra: Optional[dict[str, Any]] = None) -> SearchResult:
        """pareto.csv/png, arch.yaml and the marker; `extra`: metrics of the subclass's own."""
        specs = genome.specs
        candidates = []
        for s in search.scored:
            choices = row_to_arch(specs, s.row)
            candidates.append({"arch": space.record(genome.decode(s.row)), "accuracy": s.score,
                               "generation": s.generation, **{n: costs.model(n).cost(choices) for n in names}})
        if not candidates:
            raise ConfigError("the search scored no candidate: no architecture of the space is within the limits")
        pareto = ctx.conf.cost.pareto
        front = write_pareto(ctx.dir, candidates, pareto, names, limits.bounds, self.scored_as) if ctx.is_main else []
        best = search.best(1)[0]
        arch = genome.decode(best.row)
        chosen = candidates[search.scored.index(best)]
        metrics = {
            "strategy": self.strategy.section.strategy,
            "generations": search.generation,
            "candidates_scored": len(candidates),
            "search_time": search.seconds,
            "best_val_top1": best.score,
            "best_generation": best.generation,
            "best_costs": {n: chosen[n] for n in names},
            "limits": limits.describe(),
            # one row per limit given, for the summary: the chosen architecture's cost against it
            "best_within_limits": [{"limit": limits.setting(m), "bound": b, "cost_model": m,
                                    "cost": chosen[m]} for m, b in limits.bounds.items()],
            "pareto_cost": pareto,
            "pareto_front_size": sum(front),
            "supernet_fingerprint": fingerprint,
            **(extra or {}),
        }
        ctx.log.info(f"best of {len(candidates)} candidates: val top-1 {best.score:.2%} ({self.scored_as}), "
                     + ", ".join(f"{n} {chosen[n]:,.6g}" for n in names)
                     + ("" if not limits else f"; limits {limits.describe()}"))
        fields, path = space.save(ctx.dir, arch, info, write=ctx.is_main)
        self.write_marker(ctx, {**fields, "metrics": metrics})
        ctx.log.info(f"final architecture: {space.describe(arch)}")
        return SearchResult(arch, path, fields.get("genotype"), metrics)

    def summary(self, result: SearchResult) -> dict[str, Any]:
        return {**result.metrics, "final_desc": str(result.final_desc_path),
                "arch": space_of(self.run.conf.nas.search).record(result.arch),
                "genotype": result.genotype, "peak_memory": self.peak_memory}

    def report(self, summary: dict[str, Any]) -> list[str]:
        return super().report(summary) + [
            f"  best within {row['limit']} {row['bound']:,g}: {summary['arch']} ({row['cost_model']} "
            f"{row['cost']:,.6g}, inherited val top-1 {summary['best_val_top1']:.2%})"
            for row in summary.get("best_within_limits") or ()]

