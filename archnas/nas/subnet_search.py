"""The search phase of a single-path one-shot algorithm (spos): subnets of a pretrained supernet,
scored on the weights they inherit, under hardware limits.

    pretrain/checkpoint_last.pt -> supernet -> cost models, latency_stats.json
        -> generations of candidates (evolution or random), each BN-recalibrated and scored
        -> pareto.csv, pareto.png, arch.yaml (the best allowed candidate), search_result.json

Before the first candidate is drawn, the cost models are built (`archnas.latency`), every limit
is checked against the space's minimum (a limit no architecture meets is a usage error naming
the minimum), and `latency_stats.json` records each cost's min, max, mean and median over the
space. The cost tables are part of the search checkpoint, so a resumed search uses the latency
predictions it started with rather than new, noisy measurements. The search checkpoints after
every generation (`checkpoint_last.pt`: its state, the tables, the RNG); a killed search reruns
at most the generation it was in, and since a candidate's score depends only on the inherited
weights, its architecture and fixed batches, it ends exactly where an uninterrupted one ends.
"""

from __future__ import annotations

import time
from typing import Any

from archnas.context import PhaseContext
from archnas.errors import ConfigError
from archnas.latency import UNITS, Limits, SpaceCosts
from archnas.latency.table import option_count, row_to_arch
from archnas.nas.evolution import Evolution, EvolutionSettings, RandomSampling, Row, SubnetSearch
from archnas.nas.pareto import write_pareto
from archnas.nas.searcher import SearchPhase, SearchResult, load_data
from archnas.nas.spaces import ModuleSpace, space_of
from archnas.nas.subnets import inherited_supernet, subnet_scorer
from archnas.space.arch_io import save_arch
from archnas.space.model import SearchSpaceModel
from archnas.utils import atomic

LATENCY_STATS_FILE = "latency_stats.json"


class CostTables:
    """The cost tables of a search, as checkpoint state (so a resumed search keeps its predictions)."""

    def __init__(self, costs: SpaceCosts):
        self.costs = costs

    def state_dict(self) -> dict[str, Any]:
        return self.costs.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.costs.load_state_dict(state)


def cost_names(conf: Any, limits: Limits) -> list[str]:
    """The cost models a search reports: params and macs always, the latency model when a limit
    or the Pareto front uses it."""
    names = ["params", "macs"]
    for name in [*limits.bounds, conf.cost.pareto]:
        if name not in names:
            names.append(name)
    return names


class SubnetSearchPhase(SearchPhase):
    """`search` of spos: evolution (or random sampling) over the pretrained supernet's subnets."""

    def inputs(self) -> tuple[str, ...]:
        return (self.strategy.supernet_phase(),)

    def work(self, ctx: PhaseContext) -> SearchResult:
        conf = ctx.conf
        section = self.strategy.section
        space = space_of(conf)
        data = load_data(ctx, conf.loader)
        supernet = inherited_supernet(space, ctx, data.info, self.strategy.supernet_phase())
        shape = [data.info.channels, *data.info.image_size]
        costs = SpaceCosts.from_conf(conf.cost, supernet.specs, lambda arch: space.network(arch, data.info), shape,
                                     seed=ctx.seed)
        limits = Limits.from_conf(conf.cost)
        names = cost_names(conf, limits)
        search = self.subnet_search(section, supernet, costs, limits, ctx.seed)
        checkpointer = self.checkpointer(ctx, space.fingerprint())
        checkpointer.register("search", search.state)
        checkpointer.register("cost_tables", CostTables(costs))
        resumed = checkpointer.resume() if ctx.resume else None
        ctx.commit()
        if resumed is None:
            limits.check_reachable(costs)
            report = {"space": space.description(), **costs.report(names)}
            if ctx.is_main:
                atomic.write_json(ctx.dir / LATENCY_STATS_FILE, report)
            self.log_costs(ctx, report, names)
            checkpointer.save(last=True)  # the tables, before any candidate is scored
        else:
            ctx.log.info(f"resumed the search from {resumed.path} after generation {search.state.generation}")
        scorer = subnet_scorer(supernet, data, ctx, section.bn_recalibration.batches, section.score_batches)
        while not search.done:
            start = time.perf_counter()
            new = search.run_generation(lambda row: scorer.score(row_to_arch(supernet.specs, row)))
            search.state.seconds += time.perf_counter() - start
            best = search.best(1)
            ctx.log.info(f"generation {search.state.generation}/{search.generations}: {len(new)} candidates scored"
                         + (f", best so far {best[0].score:.2%}" if best else ""))
            checkpointer.save(last=True)
            if not new:
                ctx.log.info("no new candidate within the limits: the search ends early")
                break
        return self.finish(ctx, space, supernet, search, costs, limits, names)

    def subnet_search(self, section: Any, supernet: SearchSpaceModel, costs: SpaceCosts, limits: Limits,
                      seed: int) -> SubnetSearch:
        counts = [option_count(s) for s in supernet.specs.values()]

        def allows(row: Row) -> bool:
            return limits.allows(costs, row_to_arch(supernet.specs, row))

        if section.strategy == "evolution":
            e = section.evolution
            settings = EvolutionSettings(e.population, e.parents, e.mutations, e.crossovers, e.mutation_prob,
                                         e.generations)
            return Evolution(counts, settings, seed, allows)
        return RandomSampling(counts, section.random.n_archs, section.random.per_generation, seed, allows)

    def log_costs(self, ctx: PhaseContext, report: dict[str, Any], names: list[str]) -> None:
        for name in names:
            s = report[name]
            ctx.log.info(f"{name} over the space ({s['over']}): min {s['min']:,}, median {s['median']:,}, max "
                         f"{s['max']:,} {UNITS[name]}; {s['method']}")

    def finish(self, ctx: PhaseContext, space: ModuleSpace, supernet: SearchSpaceModel, search: SubnetSearch,
               costs: SpaceCosts, limits: Limits, names: list[str]) -> SearchResult:
        specs = supernet.specs
        candidates = []
        for s in search.state.scored:
            arch = row_to_arch(specs, s.row)
            candidates.append({"arch": arch, "accuracy": s.score, "generation": s.generation,
                               **{n: costs.model(n).cost(arch) for n in names}})
        if not candidates:
            raise ConfigError("the search scored no candidate: no architecture of the space is within the limits")
        pareto = ctx.conf.cost.pareto
        front = write_pareto(ctx.dir, candidates, pareto, names, limits.bounds) if ctx.is_main else []
        best = search.best(1)[0]
        arch = row_to_arch(specs, best.row)
        chosen = candidates[search.state.scored.index(best)]
        metrics = {
            "strategy": self.strategy.section.strategy,
            "generations": search.state.generation,
            "candidates_scored": len(candidates),
            "search_time": search.state.seconds,
            "best_val_top1": best.score,
            "best_generation": best.generation,
            "best_costs": {n: chosen[n] for n in names},
            "limits": limits.describe(),
            # one row per limit given, for the summary: the chosen architecture's cost against it
            "best_within_limits": [{"limit": limits.keys[m].rsplit(".", 1)[1], "bound": b, "cost_model": m,
                                    "cost": chosen[m]} for m, b in limits.bounds.items()],
            "pareto_cost": pareto,
            "pareto_front_size": sum(front),
            "supernet_fingerprint": space.fingerprint(),
        }
        ctx.log.info(f"best of {len(candidates)} candidates: val top-1 {best.score:.2%} (inherited), "
                     + ", ".join(f"{n} {chosen[n]:,.6g}" for n in names)
                     + ("" if not limits else f"; limits {limits.describe()}"))
        if ctx.is_main:
            save_arch(ctx.dir, arch, space.title, supernet.labels_key())
        self.write_marker(ctx, {"arch": arch, "space": space.description(), "space_fingerprint": supernet.labels_key(),
                                "metrics": metrics})
        ctx.log.info(f"final architecture: {arch}")
        return SearchResult(arch, ctx.dir / "arch.yaml", None, metrics)

    def summary(self, result: SearchResult) -> dict[str, Any]:
        return {**result.metrics, "final_desc": str(result.final_desc_path), "arch": result.arch,
                "genotype": None, "peak_memory": self.peak_memory}

