"""`archnas stats`: parameters and multiply-adds, printed as JSON.

DARTS cells: the eval network of a desc file (`--desc`), a genotype (`--genotype`), of
`nas.eval.final_desc`, or the search supernet (`--supernet`, the default without those). A space
over a module (`nas.search.space`): one architecture of it (`--arch FILE|STRING`), or the range
over the whole space (`--space`: min, max, mean and median of every exact cost model of the
registry, params and macs and a plugin's, with the architectures at min and max; `--latency` adds
the predicted latency, timed here as `nas.search.cost.timing` says, which is what a subnet search
writes to its `latency_stats.json`). The space
is counted as configured: NAS-Bench-201's reference sizes are C=16, N=5 on CIFAR-10's 3x32x32
(`--dataset.name cifar10`).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from archnas.config import ExperimentConf
from archnas.descs.dataset_info import DatasetInfo
from archnas.descs.model_desc import ModelDesc
from archnas.errors import ConfigError
from archnas.model import Model, ModelDescBuilder, checked_genotype, desc_from_spec, genotype_to_desc, load_checked_desc
from archnas.nas.spaces import module_space
from archnas.latency import SpaceCosts, check_cost_model, exact_cost_models, latency_models
from archnas.stats import dataset_info, model_stats


def _stats_desc(conf: ExperimentConf, args: Any, info: DatasetInfo) -> tuple[str, str, ModelDesc]:
    """(which model, where it came from, its desc) for the CLI's source flags."""
    eval_conf = conf.nas.eval.model_desc
    if args.desc:  # its cells, at the eval macro: the same as nas.eval.final_desc does with a desc file
        return "eval", f"desc file {args.desc}", ModelDescBuilder().build(eval_conf, info, load_checked_desc(args.desc))
    if args.genotype:
        return "eval", f"genotype {args.genotype}", genotype_to_desc(checked_genotype(args.genotype), eval_conf, info)
    if not args.supernet and conf.nas.eval.final_desc:
        spec = conf.nas.eval.final_desc
        return "eval", f"nas.eval.final_desc {spec}", desc_from_spec(spec, eval_conf, info)
    return "supernet", "nas.search.model_desc", ModelDescBuilder().build(conf.nas.search.model_desc, info)


def _space_stats(conf: ExperimentConf, args: Any, info: DatasetInfo) -> dict[str, Any]:
    if not conf.nas.search.space:
        raise ConfigError("--space / --arch count a space over a module; this config searches DARTS cells "
                          "(nas.search.space is empty): use --supernet, --desc or --genotype")
    shape = [info.channels, *info.image_size]
    space = module_space(conf.nas.search.space)
    supernet = space.supernet(info)
    out: dict[str, Any] = {"space": space.description(), "dataset": conf.dataset.name, "input_shape": shape,
                           "n_classes": info.n_classes, "space_fingerprint": supernet.labels_key()}
    if args.arch:
        arch = supernet.check_arch(space.parse(args.arch, info, supernet.labels_key()))
        return {**out, "model": "architecture", "arch": arch, **model_stats(space.network(arch, info), shape)}
    if supernet.constrained:
        raise ConfigError(f"--space: {space.title}'s architectures are constrained across labels (NAS-Bench-101's edge "
                          "limit), and its cost range is taken over every label's options alone; count one "
                          "architecture with --arch")
    costs = SpaceCosts.from_conf(conf.nas.search.cost, supernet.specs, lambda arch: space.network(arch, info), shape,
                                 seed=conf.common.seed)
    latency = [check_cost_model(args.latency, "--latency")] if args.latency else []
    if latency and latency[0] not in latency_models():
        raise ConfigError(f"--latency {args.latency}: expected a latency model, one of {', '.join(latency_models())}")
    names = [*exact_cost_models(), *latency]
    return {**out, "model": "space", **costs.report(names)}


def stats_from_cli(conf: ExperimentConf, args: Any) -> int:
    """Print the counts as JSON (see the module docstring for what is counted)."""
    if args.latency and not args.space:
        raise ConfigError("--latency times the architectures of a space: use it with --space")
    info = dataset_info(conf.dataset, conf.common.cache_dir)
    if args.space or args.arch:
        out = _space_stats(conf, args, info)
    else:
        kind, source, desc = _stats_desc(conf, args, info)
        model = Model(desc, droppath=False, affine=kind == "eval")  # DARTS searches with non-affine cells
        out = {"model": kind, "source": source, "dataset": conf.dataset.name, "n_classes": info.n_classes,
               "fingerprint": desc.fingerprint()}
        out.update(model_stats(model, [info.channels, *info.image_size], detail=args.detail))
    sys.stdout.write(json.dumps(out, indent=2) + "\n")
    return 0
