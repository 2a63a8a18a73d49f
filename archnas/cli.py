"""The `archnas` command (also `python scripts/main.py`): run an experiment or print model stats."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import textwrap
from typing import TYPE_CHECKING, Sequence

import torch

from archnas.config import (
    ExperimentConf,
    config_to_yaml,
    load_config,
    parse_override_tokens,
)
from archnas.config.validate import check_experiment_name
from archnas.errors import ConfigError, UsageError
from archnas.training.signals import RunInterrupted, StopSignals
from archnas.utils.atomic import write_failure
from archnas.utils.lock import under_parent
from archnas.utils.plugins import load_plugins
from archnas.utils.versions import check_torch_version
from archnas.utils.usage_parser import UsageParser

if TYPE_CHECKING:
    from archnas.nas.runner import StageSelection

OVERRIDE_HELP = textwrap.dedent(
    """\
    overrides:
      Any config key can be set after the flags, in either style:
        --nas.search.trainer.epochs 3          nas.search.trainer.epochs=3
      Values are YAML: 3, 0.1, true, null, cosine, [1, 2], {type: adam, lr: 0.001}.
      A value must fit the key it replaces (an int key takes an int, a list key a list);
      a key whose default is null takes any value. An unknown key is an error that
      suggests the closest existing keys. A mapping merges into a mapping key by key.

    examples:
      archnas --config confs/darts.yaml
      archnas --config confs/darts.yaml --nas.search.trainer.epochs 3 common.seed=7 --print-config
      archnas --config confs/darts.yaml,confs/my_overrides.yaml --exp-name try2
      archnas --config confs/darts.yaml --no-search nas.eval.final_desc=DARTS_V2
      archnas --config confs/spos_nb201.yaml --stages eval       # only the eval (the search's result reused)
      archnas --import my_stages --config confs/darts.yaml nas.extra_stages=[export] --stages export
          a plugin's stage (registered as export) run on the finished eval
      archnas --config confs/darts.yaml nas.eval.trainer.epochs=600   # train a finished eval on
      archnas --config confs/darts.yaml --restart --no-search         # the eval again, old kept in eval.old-1
      archnas plan --config confs/darts.yaml                    # each stage's time and memory, from a few steps
      archnas --config confs/darts.yaml --dry-run --json        # the same as JSON (nothing written under results/)
      archnas stats --config confs/darts_cifar10.yaml --genotype DARTS_V2 --detail
      archnas predict results/darts/eval/model_best.pt digit.png images.npy
      archnas plot results/darts                # its pictures again, in results/darts/plot/
      archnas --import my_module --config confs/darts.yaml dataset.name=my_set   (a plugin's dataset)

    many processes, GPUs and machines:
      torchrun --nproc_per_node 2 scripts/main.py --config confs/darts.yaml
          one run on 2 ranks (DDP; gloo on CPU, nccl on CUDA); loader batches are global
      archnas --config confs/darts.yaml --seeds 0,1,2 [common.ray.enabled=true]
          the whole experiment once per seed, in <experiment>/seed_<s>/ (on Ray when enabled)
    """
)


def _common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--import", dest="imports", action="append", default=[], metavar="MODULE",
        help="import a Python module before the run, so the ops, datasets, algorithms or spaces it registers "
        "can be named in configs (repeatable; the module must be importable, e.g. on PYTHONPATH). Installed "
        "packages' 'archnas.plugins' entry points are imported too, always",
    )
    parser.add_argument(
        "--config", "-c", action="append", default=[], metavar="FILE",
        help="config file(s), merged left to right; repeat the flag or separate with commas. "
        "A bare name such as 'darts' means confs/darts.yaml",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")


def build_run_parser() -> argparse.ArgumentParser:
    parser = UsageParser(
        prog="archnas",
        description="Run a neural architecture search experiment: the named stages of the algorithm's recipe "
        "(search, finalize, then evaluate the final architecture; spos: pretrain, search, ranking, eval; "
        "enot: pretrain, search, tune; then nas.extra_stages). Rerunning the same command resumes an interrupted run. "
        "Use 'archnas stats --help' for parameter and multiply-add counts, 'archnas predict --help' to "
        "classify images with a saved model file, 'archnas export --help' to export the final network "
        "(ONNX, TorchScript, torch.export, standalone PyTorch source), 'archnas plot --help' to draw a finished "
        "experiment's pictures again. 'archnas plan' (or --dry-run) estimates each stage's time and memory from a "
        "few steps, writing nothing.",
        epilog=OVERRIDE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    _common_flags(parser)
    parser.add_argument("--exp-name", metavar="NAME", help="experiment folder name (overrides common.experiment_name)")
    parser.add_argument("--stages", metavar="A,B", help="run only these stages of the recipe (e.g. --stages eval); a "
                        "stage left out that one of them reads is reused when it finished (eval needs "
                        "nas.eval.final_desc or a finished search)")
    parser.add_argument("--skip", metavar="A,B", help="leave these stages out (e.g. --skip ranking)")
    parser.add_argument("--no-search", action="store_true", help="leave out every stage of nas.search (spos: pretrain, "
                        "search, ranking; enot: pretrain, search); eval needs nas.eval.final_desc or a finished search")
    parser.add_argument("--no-eval", action="store_true", help="leave out the stages of nas.eval (the eval, enot's tune; a registered "
                        "stage of its own section, such as an export, still runs)")
    parser.add_argument("--algos", metavar="A,B", help="run several algorithms in sequence, each with confs/<algo>.yaml under "
                        "the given configs, and write summary.md and summary.csv")
    parser.add_argument("--seeds", metavar="S,S", help="repeat the whole experiment once per seed (common.seed), each in "
                        "its own subfolder seed_<s>/; finished seeds are skipped; runs them as Ray tasks when "
                        "common.ray.enabled is true")
    parser.add_argument("--force", action="store_true", help="resume even if the config changed in ways that are not "
                        "safe to change: the changes take effect from the step the stage resumes at (a change of the "
                        "model's structure is still refused)")
    parser.add_argument("--restart", action="store_true", help="start the stages that run over; each keeps its old "
                        "folder as <stage>.old-<k> (never overwriting an earlier one)")
    parser.add_argument("--dry-run", action="store_true", help="plan instead of run: build every stage's model and "
                        "data, take a few steps of each, and print per stage the estimated time (steps x measured "
                        "step time x epochs, validation passes, checkpoints; with the spread of the steps) and peak "
                        "memory, and for a search space its cost range and whether its cheapest and largest "
                        "architectures build, train and export to ONNX. Writes nothing under results/ "
                        "(same as 'archnas plan')")
    parser.add_argument("--dry-run-steps", type=int, default=5, metavar="N", help="timed steps per training (and "
                        "candidates per selection) in a dry run (default 5)")
    parser.add_argument("--dry-run-warmup", type=int, default=1, metavar="N", help="untimed steps before them "
                        "(default 1)")
    parser.add_argument("--json", action="store_true", help="with --dry-run: print the plan as one JSON object")
    return parser


def build_stats_parser() -> argparse.ArgumentParser:
    parser = UsageParser(
        prog="archnas stats",
        description="Print JSON with the parameter count and multiply-adds of one forward pass of the "
        "eval model (or the search supernet, a search space's range, one architecture of it) at the "
        "dataset's input size.",
        epilog=OVERRIDE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    _common_flags(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--desc", metavar="FILE", help="a model desc YAML file (final_model_desc.yaml or full_model_desc.yaml)")
    source.add_argument("--genotype", metavar="G", help="a named genotype (DARTS_V2, ...) or a genotype string")
    source.add_argument("--supernet", action="store_true", help="count the search supernet instead of the eval model")
    source.add_argument("--space", action="store_true", help="a space over a module (nas.search.space): min, max, mean "
                        "and median over its architectures, with the architectures at min and max")
    source.add_argument("--arch", metavar="A", help="one architecture of the space: an arch.yaml/.json file, a "
                        "{label: choice} mapping or a NAS-Bench-201 string (counted at the space's configured size: "
                        "NAS-Bench-201's reference is nas.search.space.C=16, N=5 with --dataset.name cifar10)")
    parser.add_argument("--latency", nargs="?", const="cpu_ms", metavar="MODEL", help="with --space: also the "
                        "predicted latency (a registered latency model: cpu_ms, the default, ort_ms or a plugin's), "
                        "timed on this machine as nas.search.cost.timing says; the same numbers a spos search writes "
                        "to latency_stats.json")
    parser.add_argument("--detail", action="store_true", help="add a per-cell breakdown")
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str]):
    """argparse for the flags; everything else must be a well-formed override."""
    known = {opt for action in parser._actions for opt in action.option_strings}
    valued = {opt for action in parser._actions if action.nargs is None and action.option_strings
              for opt in action.option_strings}
    overrides, rest = parse_override_tokens(list(argv), known, valued)
    args = parser.parse_args(rest)
    args.config = [part for item in args.config for part in item.split(",") if part]
    if getattr(args, "algos", None) is not None and not args.algos.replace(",", "").strip():
        raise ConfigError(f"--algos {args.algos!r}: no algorithm named; give names separated by commas "
                          "(e.g. --algos darts,gdas)")
    if not args.config and not getattr(args, "algos", None):  # --algos brings confs/<algo>.yaml
        parser.error("no config given; use --config FILE (for example --config confs/darts.yaml)")
    args.overrides = overrides
    return args


def import_plugins(modules: Sequence[str]) -> None:
    """The built-in algorithms, then the user's plugins (`archnas.plugins` entry points and
    `--import` modules), which register their own ops, datasets, algorithms and spaces."""
    import archnas.algos  # noqa: F401  (registers the built-in algorithms and their config sections)

    load_plugins(modules)


def resolve_conf(args) -> ExperimentConf:
    from archnas.launch.experiment import default_experiment_name

    conf = load_config(args.config, args.overrides)
    if getattr(args, "exp_name", None) is not None:
        check_experiment_name(args.exp_name, "--exp-name")
        conf.common.experiment_name = args.exp_name
    if not conf.common.experiment_name:
        conf.common.experiment_name = default_experiment_name(args.config)
    return conf


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with StopSignals(at_once=True):  # SIGINT/SIGTERM from here to the end stop at a safe point
            check_torch_version(torch.__version__)
            if argv and argv[0] == "stats":
                return _stats(argv[1:])
            if argv and argv[0] == "predict":
                return _predict(argv[1:])
            if argv and argv[0] == "export":
                return _export(argv[1:])
            if argv and argv[0] == "plot":
                return _plot(argv[1:])
            if argv and argv[0] == "plan":
                return _run([*argv[1:], "--dry-run"])
            if argv and argv[0] == "run":
                argv = argv[1:]
            return _run(argv)
    except UsageError as exc:
        print(f"archnas: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a write outside archnas.utils.atomic refused: the log, metrics.jsonl, a folder
        failure = write_failure(exc)
        if failure is None:
            raise
        print(f"archnas: error: {failure}", file=sys.stderr)
        return failure.exit_code
    except RunInterrupted as exc:  # SIGINT/SIGTERM: stopped at a safe point (the trainer saves a checkpoint first)
        print(f"archnas: {exc}", file=sys.stderr)
        if not under_parent():  # an --algos child's parent says how to resume the whole command
            again = [a for a in sys.orig_argv if a != "--restart"]  # resuming must not start over once more
            print(f"archnas: resume with: {shlex.join(again)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("archnas: interrupted", file=sys.stderr)
        return 130


def _run(argv: list[str]) -> int:
    args = parse_args(build_run_parser(), argv)
    import_plugins(args.imports)
    args.selection = stage_selection(args)
    conf = resolve_conf(args)
    if args.algos is None:
        args.selection.pick(check_algorithm_settings(conf), conf.nas.algo)
    if args.print_config:
        sys.stdout.write(config_to_yaml(conf))
        return 0
    if args.json and not args.dry_run:
        raise ConfigError("--json prints a dry run's plan: add --dry-run (or run 'archnas plan')")
    if args.dry_run:
        if args.algos is not None or args.seeds is not None:
            raise ConfigError("--dry-run plans one experiment: drop --algos / --seeds (plan each config on its own)")
        from archnas.launch.plan import plan_from_cli

        return plan_from_cli(conf, args.selection, args.dry_run_steps, args.dry_run_warmup, args.json, argv)
    return run_from_cli(conf, args, argv)


def check_algorithm_settings(conf: ExperimentConf) -> tuple[type, ...]:
    """The algorithm's own judgement of the config (`Strategy.check`: its section, limits, counts)
    and its recipe (`nas.extra_stages` registered), when the config is loaded: before an experiment
    folder is made or anything runs. Returns the recipe's stage classes."""
    from archnas.nas.registry import algorithm_class
    from archnas.nas.runner import recipe

    return recipe(algorithm_class(conf.nas.algo)(conf))


def stage_selection(args: argparse.Namespace) -> "StageSelection":
    """`--stages`, `--skip`, `--no-search`, `--no-eval` as a `StageSelection`; an empty list is refused
    here, names the recipe does not have where the recipe is known."""
    from archnas.nas.runner import StageSelection

    def names(flag: str, text: str | None) -> tuple[str, ...] | None:
        if text is None:
            return None
        parts = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
        if not parts:
            raise ConfigError(f"{flag} {text!r}: no stage named; give stage names separated by commas "
                              f"(e.g. {flag} search,eval)")
        return parts

    return StageSelection(only=names("--stages", args.stages), skip=names("--skip", args.skip) or (),
                          no_search=args.no_search, no_eval=args.no_eval)


def run_from_cli(conf: ExperimentConf, args, argv: Sequence[str]) -> int:
    from archnas.distributed import distributed_session, ranks_from_env
    from archnas.launch.compare import run_algorithms
    from archnas.launch.experiment import run_experiment
    from archnas.launch.seeds import parse_seeds, run_seeds

    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    if args.algos is not None:  # `--algos ''` is refused there, not taken for no --algos
        if seeds is not None:
            raise ConfigError("--seeds with --algos: repeat one algorithm per command (--seeds runs a whole "
                              "experiment once per seed)")
        if ranks_from_env(os.environ)[1] > 1:
            raise ConfigError("--algos under torchrun: --algos starts one process per stage itself; run each "
                              "algorithm with its own torchrun command (--config confs/<algo>.yaml) instead")
        return run_algorithms(args, argv)
    with distributed_session(conf.common.device) as session:
        if seeds is None:
            run_experiment(conf, argv, args.selection, force=args.force, session=session, restart=args.restart)
        else:
            run_seeds(conf, argv, seeds, args.selection, force=args.force, session=session, restart=args.restart)
    return 0


def _stats(argv: list[str]) -> int:
    args = parse_args(build_stats_parser(), argv)
    import_plugins(args.imports)
    conf = resolve_conf(args)
    if args.print_config:
        sys.stdout.write(config_to_yaml(conf))
        return 0
    from archnas.launch.stats import stats_from_cli

    return stats_from_cli(conf, args)


def _predict(argv: list[str]) -> int:
    from archnas.launch.predict import build_predict_parser, predict_from_cli

    args = build_predict_parser().parse_args(argv)
    import_plugins(args.imports)
    return predict_from_cli(args)


def _export(argv: list[str]) -> int:
    from archnas.launch.export import build_export_parser, export_from_cli

    args = build_export_parser().parse_args(argv)
    import_plugins(args.imports)
    return export_from_cli(args)


def _plot(argv: list[str]) -> int:
    from archnas.launch.plot import build_plot_parser, plot_from_cli

    args = build_plot_parser().parse_args(argv)
    import_plugins(args.imports)
    return plot_from_cli(args)


if __name__ == "__main__":
    raise SystemExit(main())
