"""Bad input, as a new user gives it: one row per mistake (configs, overrides, descs, checkpoints,
datasets, signals, the command line), each run through the `archnas` command in this process.

Every row asserts the exit code, that stderr holds exactly one `archnas: error:` line matching
what the row expects (it names the file, key or value) and no traceback, and, for rows that run
against an existing experiment, that every file of it is byte-identical afterwards.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import re
import shutil
import signal
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
import torch
from PIL import Image

from archnas.cli import main
from archnas.descs.genotypes import named_genotype
from archnas.training.checkpoint import FORMAT

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "fixtures" / "confs" / "tiny_darts.yaml")
FIXTURES = REPO / "tests" / "fixtures" / "confs"
QUICK = ["nas.search.trainer.epochs=1", "nas.eval.trainer.epochs=1", "common.tensorboard=false"]
GENOTYPE = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], "
            "normal_concat=[2, 3], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
            "('max_pool_3x3', 1)], reduce_concat=[2, 3])")
KILL_SEED = int(os.environ.get("ARCHNAS_KILL_SEED", "0"))  # set and printed by conftest.py


# -- files the rows read ----------------------------------------------------------------------------

def idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape) + array.tobytes()


def write_mnist(root: Path) -> Path:
    """Four small, valid IDX .gz files in `<root>/mnist`."""
    folder = root / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", 40), ("t10k", 20)):
        (folder / f"{part}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(idx_bytes(rng.integers(0, 255, (n, 8, 8), dtype=np.uint8))))
        (folder / f"{part}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.arange(n, dtype=np.uint8) % 10)))
    return folder


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def corrupt(path: Path) -> None:
    """Flip bytes in the middle of a compressed stream (zlib then fails, or the CRC check)."""
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 16):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def write_cifar_tarball(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(REPO / "tests" / "fixtures" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return archive


def write_images(root: Path, classes: dict[str, int]) -> Path:
    """`<root>/<class>/<i>.png`, 8x8 RGB, `classes[name]` images per class."""
    for name, n in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / name / f"{i}.png")
    return root


def imagefolder(train: dict[str, int], test: Optional[dict[str, int]] = None) -> Callable[[Path], None]:
    def prepare(tmp: Path) -> None:
        write_images(tmp / "data" / "train", train)
        write_images(tmp / "data" / "test", test or {"a": 2, "b": 2})
    return prepare


def files(**named: bytes | str) -> Callable[[Path], None]:
    """Write each file (a name with '__' for '/') into the row's folder."""
    def prepare(tmp: Path) -> None:
        for name, content in named.items():
            path = tmp / name.replace("__", "/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content.encode() if isinstance(content, str) else content)
    return prepare


def deep_yaml(levels: int) -> str:
    return "x: " + "[" * levels + "]" * levels + "\n"


# -- damaging a copy of the finished experiment -----------------------------------------------------

def eval_unfinished(exp: Path) -> None:
    """The eval phase as if killed after its last checkpoint: a rerun resumes from checkpoint_last.pt."""
    (exp / "eval" / "metrics.json").unlink()


def nothing_finished(exp: Path) -> None:
    """Every stage as if killed before its end: no marker left."""
    for marker in ("search/search_result.json", "eval/metrics.json", "plot/plots.json"):
        (exp / marker).unlink()


def eval_checkpoint(write: Callable[[Path], None]) -> Callable[[Path], None]:
    def damage(exp: Path) -> None:
        eval_unfinished(exp)
        path = exp / "eval" / "checkpoint_last.pt"
        assert not (exp / "eval" / "checkpoint_prev.pt").exists()
        write(path)
    return damage


def save(obj) -> Callable[[Path], None]:
    return lambda path: torch.save(obj, path)


def edit_text(rel: str, old: str, new: str) -> Callable[[Path], None]:
    def damage(exp: Path) -> None:
        path = exp / rel
        text = path.read_text()
        assert old in text, (rel, old)
        path.write_text(text.replace(old, new, 1))
    return damage


def replace_dir(path: Path) -> None:
    path.unlink()
    path.mkdir()


class Harmful:
    """Unpickling it would run code; checkpoints load with weights_only and refuse it."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


# -- the table ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    id: str
    args: list[str]  # `{tmp}`, `{res}` and `{tiny}` are filled in
    match: str  # a regex the error line must match
    code: int = 2
    run: bool = True  # prepend --config tiny, results in {res}, --exp-name e, the quick epochs
    prepare: Optional[Callable[[Path], None]] = None  # writes the row's files into {tmp}
    damage: Optional[Callable[[Path], None]] = field(default=None)  # run against a damaged copy of the experiment
    existing: bool = False  # run against the finished experiment (a copy of it): nothing may change


def cfg(*args: str, name: str = "", **kw) -> Row:
    """A row of the tiny run with these arguments added; named by them (or by `name`)."""
    return Row(name or " ".join(args), list(args), **kw)


ROWS = [
    # config files
    Row("config: not UTF-8", ["--config", "{tmp}/c.yaml"], r"c\.yaml: not UTF-8 text \(byte 0xe9", run=False,
        prepare=files(**{"c.yaml": b"common:\n  seed: 3\n# caf\xe9\n"})),
    Row("config: nested very deeply (flow)", ["--config", "{tmp}/c.yaml"], r"c\.yaml: nested too deeply", run=False,
        prepare=files(**{"c.yaml": deep_yaml(3000)})),
    Row("config: nested deeply (blocks)", ["--config", "{tmp}/c.yaml"], r"c\.yaml: nested too deeply", run=False,
        prepare=files(**{"c.yaml": "".join("  " * i + f"k{i}:\n" for i in range(60)) + "  " * 60 + "v: 1\n"})),
    Row("config: empty file", ["--config", "{tmp}/c.yaml"], r"c\.yaml: the file is empty", run=False,
        prepare=files(**{"c.yaml": ""})),
    Row("config: comments only", ["--config", "{tmp}/c.yaml"], r"c\.yaml: the file is empty", run=False,
        prepare=files(**{"c.yaml": "# nothing here yet\n"})),
    Row("config: top level is a list", ["--config", "{tmp}/c.yaml"], r"top level must be a mapping", run=False,
        prepare=files(**{"c.yaml": "- a\n- b\n"})),
    Row("config: invalid YAML", ["--config", "{tmp}/c.yaml"], r"c\.yaml: invalid YAML", run=False,
        prepare=files(**{"c.yaml": "common: {seed: 1\n"})),
    Row("config: binary file", ["--config", "{tmp}/c.yaml"], r"c\.yaml: invalid YAML", run=False,
        prepare=files(**{"c.yaml": b"\x00\x01\x02binary"})),
    Row("config: duplicate key", ["--config", str(FIXTURES / "duplicate.yaml")], r"duplicate key", run=False),
    Row("config: python tag", ["--config", str(FIXTURES / "python_tag.yaml")], r"python_tag\.yaml", run=False),
    Row("config: recursive alias", ["--config", "{tmp}/c.yaml"], r"c\.yaml: invalid YAML", run=False,
        prepare=files(**{"c.yaml": "a: &x\n  b: *x\n"})),
    Row("config: integer key", ["--config", "{tmp}/c.yaml"], r"key '1' must be a string", run=False,
        prepare=files(**{"c.yaml": "1: 2\n"})),
    Row("config: misspelt key", ["--config", str(FIXTURES / "typo.yaml")], r"typo\.yaml.*nas\.search\.trainer\.epoch\b.*did you mean",
        run=False),
    Row("config: missing file", ["--config", "{tmp}/nope.yaml"], r"config file not found: .*nope\.yaml", run=False),
    Row("config: a folder", ["--config", "{tmp}"], r"config file not found", run=False),
    Row("config: include missing", ["--config", "{tmp}/c.yaml"], r"c\.yaml: included file 'gone\.yaml' not found",
        run=False, prepare=files(**{"c.yaml": "__include__: gone.yaml\n"})),
    Row("config: include cycle", ["--config", str(FIXTURES / "cycle_a.yaml")], r"include cycle: .*cycle_a\.yaml", run=False),
    Row("config: include not a path", ["--config", "{tmp}/c.yaml"], r"__include__ must be a file path", run=False,
        prepare=files(**{"c.yaml": "__include__: 5\n"})),
    Row("config: include below the top", ["--config", "{tmp}/c.yaml"], r"only allowed at the top level", run=False,
        prepare=files(**{"c.yaml": "common:\n  __include__: x.yaml\n"})),
    Row("config: _copy target missing", ["--config", str(FIXTURES / "copy_missing.yaml")], r"_copy", run=False),
    Row("config: _copy cycle", ["--config", str(FIXTURES / "copy_cycle.yaml")], r"cycle", run=False),
    Row("config: empty search trainer section", ["--config", "{tiny},{tmp}/c.yaml"],
        r"c\.yaml: nas\.search\.trainer is empty \(null\), but it is the search phase's section 'trainer'", run=False,
        prepare=files(**{"c.yaml": "nas:\n  search:\n    trainer:\n"})),
    Row("config: empty eval trainer section", ["--config", "{tiny},{tmp}/c.yaml"],
        r"c\.yaml: nas\.eval\.trainer is empty \(null\), but it is the eval phase's section", run=False,
        prepare=files(**{"c.yaml": "nas:\n  eval:\n    trainer:\n"})),
    Row("config: finalizer: 5", ["--config", "{tiny},{tmp}/c.yaml"],
        r"c\.yaml: nas\.search\.finalizer is 5, but it is the search phase's section 'finalizer'", run=False,
        prepare=files(**{"c.yaml": "nas:\n  search:\n    finalizer: 5\n"})),
    Row("config: seed as a list", ["--config", "{tmp}/c.yaml"], r"c\.yaml: invalid value for 'common\.seed'", run=False,
        prepare=files(**{"c.yaml": "common: {seed: [1, 2]}\n"})),
    Row("config: negative seed in a file", ["--config", "{tiny},{tmp}/c.yaml"], r"c\.yaml: common\.seed: -4 is not a seed",
        run=False, prepare=files(**{"c.yaml": "common: {seed: -4}\n"})),
    # overrides
    cfg("common.seed=-1", match=r"common\.seed=-1: common\.seed: -1 is not a seed"),
    cfg("common.seed=18446744073709551616", match=r"common\.seed: 18446744073709551616 is not a seed"),
    cfg("nas.search.loader.val_ratio=0", match=r"nas\.search\.loader\.val_ratio: 0\.0 holds out no validation images"),
    cfg("nas.algo=random", "nas.search.loader.val_ratio=0", match=r"val_ratio: 0\.0 .*random search"),
    cfg("nas.search.loader.val_ratio=1", match=r"val_ratio: 1\.0 is not in \[0, 1\)"),
    cfg("common.log_level=LOUD", match=r"common\.log_level: 'LOUD' is not one of DEBUG"),
    cfg("nas.search.trainer.optimizer.lr=fast", match=r"expects a number .* got 'fast'"),
    cfg("nas.search.trainer.optimizer.type=adamx", match=r"Invalid value 'adamx', expected one of"),
    cfg("nas.search.trainer.bilevel_order=third", match=r"Invalid value 'third'"),
    cfg("nas.algo=gdas", "nas.search.trainer.bilevel_order=second", match=r"bilevel_order: gdas .* got 'second'"),
    cfg("nas.algo=proxyless", match=r"nas\.search\.model_desc: proxyless cannot search .*DARTS cell"),
    cfg("nas.algo=proxyless", "nas.search.space={name: nb201, C: 4, N: 1}",
        match=r"nas\.search\.trainer\.bilevel_order: 'second'; binary gates train the architecture first order"),
    cfg("nas.algo=proxyless", "nas.search.space={name: nb201, C: 4, N: 1}", "nas.search.trainer.bilevel_order=first",
        "nas.search.proxyless.form=log",
        match=r"nas\.search\.proxyless\.form: 'log'; expected one of multiplicative, additive"),
    cfg("nas.algo=proxyless", "nas.search.space={name: nb201, C: 4, N: 1}", "nas.search.trainer.bilevel_order=first",
        "nas.search.proxyless.latency_target=0",
        match=r"nas\.search\.proxyless\.latency_target: 0\.0; expected a positive number"),
    cfg("nas.algo=dartz", match=r"unknown algorithm 'dartz'; registered: darts"),
    cfg("nas.search.arch_optimizer=bilevle", match=r"nas\.search\.arch_optimizer: unknown architecture optimizer "
                                                    r"'bilevle'; registered: bilevel"),
    cfg("nas.algo=random", "nas.search.arch_optimizer=bilevel",
        match=r"nas\.search\.arch_optimizer: 'bilevel', but random trains no supernet"),
    cfg("dataset.name=foo", match=r"unknown dataset 'foo'"),
    cfg("nas.search.model_desc.n_cells=0", match=r"n_cells: must be at least 1"),
    cfg("nas.search.model_desc.primitives=[foo]", match=r"primitives\[0\]: unknown op 'foo'"),
    cfg("nas.search.model_desc.primitives=[]", match=r"at least one primitive"),
    cfg("--common.seed", match=r"--common\.seed needs a value"),
    cfg("foo.bar=1", match=r"unknown config key 'foo\.bar'"),
    cfg("common..seed=1", match=r"'common\.\.seed' is not a config key"),
    cfg("nas.search.trainer.epochs=[1,", match=r"is not valid YAML"),
    cfg("dataset.params=" + "[" * 100 + "]" * 100, match=r"nested too deeply"),
    cfg("--no-search", "nas.eval.final_desc=DARTS_V2", "nas.eval.trainer.epochs=-1", match=r"epochs.{0,3}-1"),
    cfg("nas.search.loader.train_batch=0", match=r"train_batch: 0 is not a positive batch size"),
    cfg("--no-search", "nas.eval.final_desc=DARTS_V2", "nas.eval.trainer.drop_path_prob=1.5",
        match=r"drop_path_prob: 1\.5 is not a probability"),
    cfg("common.device=tpu", match=r"common\.device: 'tpu' is not a device"),
    cfg("common.num_threads=-2", match=r"num_threads: -2 is negative"),
    cfg("nas.search.trainer=null", match=r"nas\.search\.trainer=null: nas\.search\.trainer is empty"),
    cfg("dataset.params={foo: 1}", match=r"dataset\.params: unknown key\(s\) 'foo' for the digits dataset"),
    cfg("dataset.limit_train=-5", match=r"limit_train: -5 is negative"),
    cfg("common.results_dir={tmp}/file", match=r"common\.results_dir: .*file is a file", prepare=files(file="x")),
    cfg("common.results_dir={tmp}/file/sub", match=r"common\.results_dir: .* is below .*file, which is a file",
        prepare=files(file="x")),
    cfg("common.cache_dir={tmp}/file", match=r"common\.cache_dir: .*file is a file", prepare=files(file="x")),
    cfg("common.results_dir=" + "x" * 5000, name="common.results_dir too long", match=r"common\.results_dir: .* cannot be a folder"),
    Row("config: results_dir with a NUL", ["--config", "{tiny},{tmp}/c.yaml", "--exp-name", "q"],
        r"common\.results_dir: 'a\\x00b' holds a NUL character", run=False,
        prepare=files(**{"c.yaml": 'common:\n  results_dir: "a\\0b"\n'})),
    cfg("--exp-name", "y" * 300, name="--exp-name too long", match=r"--exp-name.*(not a usable folder name|File name too long)"),
    cfg("nas.search.space={name: nope}", match=r"unknown space 'nope'"),
    cfg("nas.search.space={name: autogen, model: {name: plain_cnn}, exclude: [nope]}",
        match=r"nas\.search\.space \(autogen\): autogen: exclude 'nope' is not a module of PlainCNN"),
    cfg("nas.search.space={name: autogen, model: {name: plain_cnn}, width_multipliers: [1.0]}",
        match=r"nas\.search\.space \(autogen\): autogen: PlainCNN has no convolution block with two variants"),
    cfg("common.ray.enabled=true", "common.ray.address=auto", "--seeds", "0",
        match=r"common\.ray\.address=auto: no running Ray cluster was found.*ray start --head"),
    # descs and genotypes
    cfg("--no-search", "nas.eval.final_desc={tmp}/nope.yaml", match=r"desc file not found: .*nope\.yaml"),
    cfg("--no-search", "nas.eval.final_desc={tmp}/d.yaml", match=r"d\.yaml: not a desc file: not UTF-8",
        prepare=files(**{"d.yaml": b"model_desc: caf\xe9\n"})),
    cfg("--no-search", "nas.eval.final_desc={tmp}/d.yaml", match=r"d\.yaml: nested too deeply",
        prepare=files(**{"d.yaml": deep_yaml(3000)})),
    cfg("--no-search", "nas.eval.final_desc={tmp}/d.yaml", match=r"d\.yaml: top level: expected a mapping",
        prepare=files(**{"d.yaml": ""})),
    cfg("--no-search", "nas.eval.final_desc={tmp}/d.yaml", match=r"d\.yaml: refused: desc files are plain YAML",
        prepare=files(**{"d.yaml": "model_desc: !!python/object/apply:os.system [echo]\n"})),
    cfg("--no-search", "nas.eval.final_desc=Genotype(foo", match=r"not a genotype string"),
    cfg("--no-search", "nas.eval.final_desc=" + GENOTYPE.replace("sep_conv_3x3", "foo_conv", 1),
        match=r"normal\[0\]: unknown op 'foo_conv'"),
    cfg("--no-search", "nas.eval.final_desc=" + GENOTYPE.replace("normal_concat=[2, 3]", "normal_concat=[2, 5]"),
        match=r"normal_concat: expected the increasing ids of the nodes .* some of \[2, 3\], got \[2, 5\]"),
    cfg("--no-search", "nas.eval.final_desc=Genotype(normal=" + "[" * 300 + "]" * 300 + ")",
        match=r"not a genotype string"),
    cfg("--no-search", "nas.eval.final_desc=__import__('os').system('true')", match=r"unknown genotype"),
    cfg("--no-search", match=r"the eval phase has no architecture"),
    # an existing experiment: refused reruns and descs from it
    cfg("nas.search.model_desc.n_nodes=3", existing=True,
        match=r"search_result\.json records a finished search phase with a different config \(nas\.search\.model_desc\.n_nodes\)"),
    cfg("--no-search", "nas.eval.final_desc={res}/e/search/full_model_desc.yaml", damage=eval_unfinished,
        match=r"full_model_desc\.yaml: a search supernet, not an architecture"),
    cfg("--no-search", "nas.eval.final_desc={res}/e/mine.yaml", damage=lambda exp: (eval_unfinished(exp), (exp / "mine.yaml")
        .write_text((exp / "search/final_model_desc.yaml").read_text().replace("name: sep_conv", "name: sepp_conv"))),
        match=r"mine\.yaml: model_desc\.cells\.\d+\.nodes.* unknown op 'sepp_conv"),
    cfg(name="final desc edited after the search", damage=edit_text("search/final_model_desc.yaml", "sep_conv", "dil_conv"),
        match=r"final_model_desc\.yaml does not match the search result recorded in .*search_result\.json"),
    # checkpoints (the eval phase resumes from a damaged checkpoint_last.pt, with no previous one)
    cfg(name="checkpoint: empty file", damage=eval_checkpoint(lambda p: p.write_bytes(b"")), match=r"no usable checkpoint.*", existing=True),
    cfg(name="checkpoint: truncated", damage=eval_checkpoint(truncate), match=r"no usable checkpoint", existing=True),
    cfg(name="checkpoint: no fields", damage=eval_checkpoint(save({"format": FORMAT})), match=r"no usable checkpoint", existing=True),
    cfg(name="checkpoint: a state that does not load",
        damage=eval_checkpoint(save({"format": FORMAT, "config": {}, "rng": {}, "state": {"model": 5}})),
        match=r"checkpoint_last\.pt", existing=True),
    cfg(name="checkpoint: not an archnas checkpoint", damage=eval_checkpoint(save({"weights": torch.zeros(2)})), match=r"no usable checkpoint", existing=True),
    cfg(name="checkpoint: a harmful pickle", damage=eval_checkpoint(save({"format": FORMAT, "x": Harmful()})), match=r"no usable checkpoint", existing=True),
    cfg(name="checkpoint: a folder", damage=eval_checkpoint(replace_dir), match=r"no usable checkpoint", existing=True),
    cfg(name="checkpoint: of another phase", damage=eval_checkpoint(lambda p: shutil.copy(p.parents[1] / "search" / "checkpoint_last.pt", p)),
        match=r"checkpoint_last\.pt was written by a different run", existing=True),
    # datasets
    cfg("dataset.name=mnist", "dataset.dataroot={tmp}/root", match=r"IDX files not found"),
    cfg("dataset.name=mnist", "dataset.dataroot={tmp}/root",
        prepare=lambda t: truncate(write_mnist(t / "root") / "train-images-idx3-ubyte.gz"),
        match=r"train-images-idx3-ubyte\.gz: cannot read IDX file \(truncated or corrupt\?\)"),
    cfg("dataset.name=mnist", "dataset.dataroot={tmp}/root",
        prepare=lambda t: corrupt(write_mnist(t / "root") / "train-labels-idx1-ubyte.gz"),
        match=r"train-labels-idx1-ubyte\.gz: cannot read IDX file"),
    cfg("dataset.name=mnist", "dataset.dataroot={tmp}/root",
        prepare=lambda t: (write_mnist(t / "root") / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"junk")),
        match=r"t10k-images-idx3-ubyte\.gz: not an IDX file"),
    cfg("dataset.name=mnist", "dataset.dataroot={tmp}/root", "dataset.params={size: 4}",
        prepare=lambda t: write_mnist(t / "root"), match=r"unknown key\(s\) 'size' for the mnist dataset"),
    cfg("dataset.name=cifar10", "dataset.dataroot={tmp}/root",
        prepare=lambda t: truncate(write_cifar_tarball(t / "root")),
        match=r"cifar-10-python\.tar\.gz: cannot read the tarball \(truncated or corrupt\?\)"),
    cfg("dataset.name=cifar10", "dataset.dataroot={tmp}/root",
        prepare=lambda t: corrupt(write_cifar_tarball(t / "root")), match=r"cifar-10-python\.tar\.gz: (cannot read|no member)"),  # where flipped bytes land (gzip mtime varies)
    cfg("dataset.name=imagefolder", "dataset.dataroot={tmp}/data", prepare=imagefolder({"a": 2, "b": 0}),
        match=r"class folder .*train/b holds no image files"),
    cfg("dataset.name=imagefolder", "dataset.dataroot={tmp}/data", prepare=imagefolder({"a": 3}),
        match=r"train has only one class folder \(a\); a classification set needs at least 2"),
    cfg("dataset.name=imagefolder", "dataset.dataroot={tmp}/data", "dataset.params={sise: 4}",
        prepare=imagefolder({"a": 2, "b": 2}), match=r"unknown key\(s\) 'sise' for the imagefolder dataset: it reads train"),
    cfg("dataset.name=imagefolder", "dataset.dataroot={tmp}/data", prepare=imagefolder({"a": 2, "b": 2}, {"c": 1}),
        match=r"class folders the train split lacks: c"),
    cfg("dataset.name=imagefolder", "dataset.params={train: {tmp}/train.tar.gz, test: {tmp}/train.tar.gz}",
        "common.cache_dir={tmp}/cache", match=r"train\.tar\.gz: cannot unpack",
        prepare=lambda t: (write_images(t / "d" / "train", {"a": 2, "b": 2}),
                           shutil.make_archive(str(t / "train"), "gztar", t / "d"), truncate(t / "train.tar.gz"))),
    cfg("dataset.name=imagefolder", "dataset.dataroot={tmp}/data",
        prepare=lambda t: (imagefolder({"a": 2, "b": 2})(t), (t / "data/train/a/0.png").write_bytes(b"not a png")),
        match=r"0\.png: cannot decode image"),
    cfg("dataset.name=imagefolder", "dataset.dataroot={tmp}/data", "dataset.params={n_classes: 3}",
        prepare=imagefolder({"a": 2, "b": 2}), match=r"train has 2 class folders, but dataset.params.n_classes is 3"),
    # the command line
    cfg("--no-search", "--no-eval", match=r"--no-search --no-eval: that leaves none of the stages of darts \(search, eval, plot\), so nothing would run"),
    cfg("--stages", "search,evl", match=r"--stages: no stage named 'evl'; the stages of darts are search, eval, plot$"),
    cfg("--skip", "export", match=r"--skip: no stage named 'export'; the stages of darts are search, eval, plot$"),
    cfg("--stages", ",", match=r"--stages ',': no stage named; give stage names separated by commas"),
    cfg("nas.extra_stages=[plots]", match=r"nas\.extra_stages: unknown stage 'plots'; registered: .*export"),
    cfg("nas.extra_stages=[plot]", match=r"nas\.extra_stages: 'plot' ends every recipe already; leave it out"),
    cfg("nas.plot.epochs_shown=1", match=r"nas\.plot\.epochs_shown: 1; the grid over epochs shows at least the first "
        r"and the last \(2 or more\)$"),
    cfg("--skip", "search,eval,plot", match=r"--skip search,eval,plot: that leaves none of the stages of darts"),
    cfg("nas.extra_stages=[export]", "nas.export.formats=[onnx,tflite]",
        match=r"nas\.export\.formats: unknown format 'tflite'; expected one of onnx, torchscript, pt, py$"),
    # archnas export
    Row("export: unfinished run", ["export", "{res}/e", "--format", "onnx"], run=False, damage=eval_unfinished,
        match=r"e: no final network to export: its eval stage has not finished \(.*metrics\.json does not exist\)"),
    Row("export: unknown format", ["export", "{res}/e", "--format", "py,tflite"], run=False, existing=True,
        match=r"--format: unknown format 'tflite'; expected one of onnx, torchscript, pt, py$"),
    Row("export: no such folder", ["export", "{tmp}/nope", "--format", "py"], r"nope: no such experiment folder$",
        run=False),
    # archnas plot
    Row("plot: no such folder", ["plot", "{tmp}/nope"], r"nope: no such results folder$", run=False),
    Row("plot: a folder without results", ["plot", "{tmp}/f"], r"f: not an archnas experiment, or nothing of it has "
        r"run: no stage folder", run=False, prepare=lambda t: ((t / "f" / "eval").mkdir(parents=True),
                                                              (t / "f" / "notes.txt").write_text("mine"))),
    Row("plot: unfinished run", ["plot", "{res}/e"], r"e: no stage of darts \(search, eval\) has finished, so "
        r"there is nothing to draw; run the experiment first$", run=False, damage=nothing_finished),
    Row("plot: a summary that is not archnas's", ["plot", "{tmp}/s"], r"seeds\.json: no seeds recorded$", run=False,
        prepare=files(**{"s__seeds.json": b"{\"seeds\": 5}"})),
    cfg("--seeds", "-1", match=r"--seeds '-1': give distinct integers from 0"),
    cfg("--seeds", "1,1", match=r"--seeds '1,1'"),
    cfg("--seeds", "a,b", match=r"--seeds 'a,b'"),
    Row("cli: --algos with --seeds", ["--algos", "darts", "--seeds", "0,1"], r"--seeds with --algos", run=False),
    Row("cli: --algos unknown", ["--algos", "foo"], r"unknown algorithm 'foo'", run=False),
    Row("cli: no config", [], r"no config given; use --config FILE", run=False),
    Row("cli: -c without a value", ["-c"], r"argument --config/-c: expected one argument", run=False),
    Row("cli: stray argument", ["--config", "{tiny}", "stray"], r"unrecognized arguments: stray", run=False),
    Row("cli: --import unknown", ["--import", "no_such_module_x", "--config", "{tiny}"],
        r"--import no_such_module_x: (cannot import it|there is no module .no_such_module_x.)", run=False),
    cfg("--frobnicate", match=r"--frobnicate needs a value"),
    cfg("--exp-name", "../../elsewhere", match=r"--exp-name '\.\./\.\./elsewhere': a name inside common\.results_dir"),
    Row("stats: two sources", ["stats", "--config", "{tiny}", "--supernet", "--space"],
        r"argument --space: not allowed with argument --supernet", run=False),
    Row("stats: --genotype unknown", ["stats", "--config", "{tiny}", "--genotype", "DARTS_V9"], r"unknown genotype 'DARTS_V9'",
        run=False),
    Row("stats: --genotype without a value", ["stats", "--config", "{tiny}", "--genotype"],
        r"argument --genotype: expected one argument", run=False),
    Row("stats: --desc not UTF-8", ["stats", "--config", "{tiny}", "--desc", "{tmp}/d.yaml"], r"d\.yaml: not a desc file",
        run=False, prepare=files(**{"d.yaml": b"\xff\xfe"})),
    Row("stats: an NDS supernet over several widths", ["stats", "--config", "{tiny}", "--space",
        "nas.search.space={name: enas, width: [4, 8], num_cells: 3}"],
        r"enas: width \(4, 8\) is a choice \('width'\); a supernet over several widths is not built", run=False),
    Row("stats: --space of DARTS cells", ["stats", "--config", "{tiny}", "--space"], r"--space / --arch count a space",
        run=False),
    Row("stats: --latency without --space", ["stats", "--config", "{tiny}", "--latency"], r"--latency .* use it with --space",
        run=False),
    Row("cost: unknown model in limits", ["--config", str(REPO / "confs" / "spos_nb201.yaml"), "common.results_dir={tmp}",
                                           "nas.search.cost.limits={flops: 5}"],
        r"nas\.search\.cost\.limits\.flops: unknown cost model 'flops'; expected one of params, macs", run=False),
    Row("cost: a model limited twice", ["--config", str(REPO / "confs" / "spos_nb201.yaml"), "common.results_dir={tmp}",
                                        "nas.search.cost.limits={params: 90000}"],
        r"nas\.search\.cost\.limits\.params: params is limited twice \(also by nas\.search\.cost\.max_params\)",
        run=False),
    Row("cost: limits on an algorithm that picks no subnets",
        ["--config", "{tiny}", "common.results_dir={tmp}", "nas.algo=pc_darts", "nas.search.cost.limits={macs: 100000}"],
        r"nas\.search\.cost\.limits\.macs: pc_darts does not pick subnets under limits", run=False),
    Row("cost: limits on DARTS cells", ["--config", "{tiny}", "common.results_dir={tmp}",
                                        "nas.search.cost.limits={macs: 100000}"],
        r"nas\.search\.cost\.limits\.macs: darts honours cost limits and the cost penalty only over a space over a "
        r"module", run=False),
    Row("cost: a penalty on an algorithm without an architecture distribution",
        ["--config", str(REPO / "confs" / "spos_nb201.yaml"), "common.results_dir={tmp}",
         "nas.search.cost.penalty.weight=0.5"],
        r"nas\.search\.cost\.penalty\.weight: 0\.5, but spos trains no architecture distribution", run=False),
    Row("stats: --latency not a latency model", ["stats", "--config", str(REPO / "confs" / "spos_nb201.yaml"), "--space",
                                                 "--latency", "convs"],
        r"--latency: unknown cost model 'convs'", run=False),
    Row("stats: --arch not UTF-8", ["stats", "--config", str(REPO / "confs" / "spos_mobilenet.yaml"), "--arch",
                                    "{tmp}/a.yaml"], r"architecture file .*a\.yaml: not UTF-8", run=False,
        prepare=files(**{"a.yaml": b"s1_i0: caf\xe9\n"})),
    Row("spos: unknown sampler", ["--config", str(REPO / "confs" / "spos_nb201.yaml"), "common.results_dir={res}",
                                  "nas.search.spos.strategy=gird"],
        r"nas\.search\.spos\.strategy: 'gird' is not one of evolution, random, grid, optuna_tpe, optuna_nsga2", run=False),
    Row("spos: grid over a large space", ["--config", str(REPO / "confs" / "spos_nb201.yaml"), "common.results_dir={res}",
                                          "nas.search.spos.strategy=grid"],
        r"nas\.search\.spos\.grid\.max_archs: the space has 15,625 architectures, more than the 10,000", run=False),
    Row("spos: NSGA-II population of 1", ["--config", str(REPO / "confs" / "spos_nb201.yaml"), "common.results_dir={res}",
                                          "nas.search.spos.strategy=optuna_nsga2", "nas.search.spos.optuna_nsga2.population=1"],
        r"nas\.search\.spos\.optuna_nsga2: need population >= 2", run=False),
    Row("enas: DARTS cells without none", ["--config", str(REPO / "confs" / "enas.yaml"), "common.results_dir={res}",
                                           "nas.search.model_desc.primitives=[skip_connect, max_pool_3x3]"],
        r"nas\.search\.model_desc: enas cannot search .*runs 'none' on the edges its nodes drop", run=False),
    Row("enas optimizer under darts: cells without none", ["--config", str(REPO / "confs" / "darts.yaml"),
                                                          "common.results_dir={res}", "nas.search.arch_optimizer=enas",
                                                          "nas.search.model_desc.primitives=[skip_connect, max_pool_3x3]"],
        r"nas\.search\.model_desc: the enas architecture optimizer cannot search .*has no 'none'", run=False),
    Row("enas: unknown controller", ["--config", str(REPO / "confs" / "enas_nb201.yaml"), "common.results_dir={res}",
                                     "nas.search.enas.controller=gru"],
        r"nas\.search\.enas\.controller: 'gru'; expected one of independent, lstm", run=False),
    Row("enas: baseline decay of 1", ["--config", str(REPO / "confs" / "enas_nb201.yaml"), "common.results_dir={res}",
                                      "nas.search.enas.baseline_decay=1.0"],
        r"nas\.search\.enas\.baseline_decay: 1\.0; expected a number in \[0, 1\)", run=False),
    Row("zero_cost: unknown proxy", ["--config", str(REPO / "confs" / "zero_cost_nb201.yaml"), "common.results_dir={res}",
                                     "nas.search.zero_cost.fallback=none", "nas.search.zero_cost.proxy=synflo"],
        r"nas\.search\.zero_cost\.proxy: 'synflo' is not a zero-cost proxy; expected one of params, macs", run=False),
    Row("zero_cost: trust check of 4 anchors", ["--config", str(REPO / "confs" / "zero_cost_nb201.yaml"),
                                                "common.results_dir={res}", "nas.search.zero_cost.trust.anchors=4"],
        r"nas\.search\.zero_cost\.trust\.anchors: 4 anchors; a trust check needs at least 5", run=False),
    Row("ranking_monitor: 3 anchors", ["--config", str(REPO / "confs" / "spos_nb201.yaml"), "common.results_dir={res}",
                                       "nas.search.ranking_monitor.anchors=3"],
        r"nas\.search\.ranking_monitor\.anchors: 3 anchors; a trust check needs at least 5", run=False),
    Row("ranking_monitor: DARTS cells", ["--config", "{tiny}", "common.results_dir={res}",
                                         "nas.search.ranking_monitor.anchors=5"],
        r"nas\.search\.ranking_monitor\.anchors: the monitor's anchors are architectures of a space over a module",
        run=False),
    Row("hub: a NAS-Bench-101 spec of 10 edges",
        ["stats", "--config", str(REPO / "confs" / "spos_nb201.yaml"), "nas.search.space={name: nasbench101}", "--arch",
         "{module_adjacency: [[0,1,1,1,1,1,1],[0,0,1,0,0,0,1],[0,0,0,1,0,0,1],[0,0,0,0,0,0,0],[0,0,0,0,0,0,0],"
         "[0,0,0,0,0,0,0],[0,0,0,0,0,0,0]], module_operations: [input, maxpool3x3, maxpool3x3, maxpool3x3, maxpool3x3, "
         "maxpool3x3, output]}"], r"NAS-Bench-101 spec: 10 edges, at most max_num_edges=9 allowed", run=False),
    Row("hub: a supernet strategy over nasbench101", ["--config", str(REPO / "confs" / "darts_nb201.yaml"),
                                                      "common.results_dir={res}", "nas.search.space={name: nasbench101}"],
        r"nas\.search\.space: darts trains a supernet and cannot search nasbench101: its NasBench101Cell has no "
        r"supernet forward", run=False),
    Row("hub: the cost range of nasbench101", ["stats", "--config", str(REPO / "confs" / "spos_nb201.yaml"),
                                                "nas.search.space={name: nasbench101, num_stacks: 1}", "--space"],
        r"--space: nasbench101's architectures are constrained across labels", run=False),
    Row("hub: an NNI parameter name and its alias both", ["stats", "--config", str(REPO / "confs" / "spos_nb201.yaml"),
                                                           "nas.search.space.stem_out_channels=4", "--arch", "x.yaml"],
        r"space nb201: C and stem_out_channels are the same parameter", run=False),
    Row("multi_trial: a trial budget of 0", ["--config", str(REPO / "confs" / "evolution_nb201.yaml"),
                                             "common.results_dir={res}", "nas.search.multi_trial.max_trials=0"],
        r"nas\.search\.multi_trial\.max_trials: 0; a search trains at least 1 trial", run=False),
    Row("multi_trial: a tournament larger than the population", [
        "--config", str(REPO / "confs" / "evolution_nb201.yaml"), "common.results_dir={res}",
        "nas.search.multi_trial.regularized_evolution.sample_size=7"],
        r"nas\.search\.multi_trial\.regularized_evolution\.sample_size: 7; a tournament draws between 1 and "
        r"population_size \(6\)", run=False),
    Row("random baseline: a negative count", ["--config", str(REPO / "confs" / "darts.yaml"), "common.results_dir={res}",
                                              "nas.eval.random_baseline.n_archs=-1"],
        r"nas\.eval\.random_baseline\.n_archs: -1; expected 0 \(off\) or more", run=False),
    Row("random baseline: the found architecture fine-tuned", [
        "--config", str(REPO / "confs" / "spos_nb201.yaml"), "common.results_dir={res}", "nas.eval.mode=tune",
        "nas.eval.random_baseline.n_archs=2"],
        r"nas\.eval\.random_baseline\.n_archs: the random architectures are trained from scratch, but nas\.eval\.mode "
        r"is tune", run=False),
    # the dry run (--dry-run, archnas plan)
    cfg("--dry-run", "nas.search.model_desc.model_stems.init_node_ch=0", name="dry run: a stage that cannot build",
        match=r"^ dry run, stage search: model_desc\.model_stems\.init_node_ch: must be at least 1, got 0$"),
    cfg("--json", name="dry run: --json without --dry-run", match=r"--json prints a dry run's plan: add --dry-run"),
]
def _row_ids() -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for row in ROWS:
        n = seen[row.id] = seen.get(row.id, 0) + 1
        out.append(row.id if n == 1 else f"{row.id} #{n}")
    return out


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One finished tiny experiment (1 search epoch, 1 eval epoch), copied by the rows that use one."""
    res = tmp_path_factory.mktemp("finished")
    assert main(["--config", TINY, f"common.results_dir={res}", "--exp-name", "e", *QUICK]) == 0
    return res / "e"


def run_row(row: Row, tmp: Path, capsys) -> tuple[int, str]:
    res = tmp / "res"
    args = [a.replace("{tmp}", str(tmp)).replace("{res}", str(res)).replace("{tiny}", TINY) for a in row.args]
    argv = (["--config", TINY, f"common.results_dir={res}", "--exp-name", "e", *QUICK, *args] if row.run else args)
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("row", ROWS, ids=_row_ids())
def test_bad_input_is_one_clear_error(row: Row, tmp_path, capsys, request):
    if row.prepare is not None:
        row.prepare(tmp_path)
    exp = None
    if row.existing or row.damage is not None:
        exp = tmp_path / "res" / "e"
        shutil.copytree(request.getfixturevalue("finished"), exp)
        if row.damage is not None:
            row.damage(exp)
    before = digests(exp) if exp is not None else None
    code, err = run_row(row, tmp_path, capsys)
    errors = [line for line in err.splitlines() if line.startswith("archnas: error:")]
    assert code == row.code, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert len(errors) == 1, err[-3000:]
    assert re.search(row.match, err.split("archnas: error:", 1)[1], re.S), errors[0]
    if exp is not None:
        assert digests(exp) == before, "a refused run changed the experiment's files"


def test_there_are_at_least_60_rows():
    assert len(ROWS) >= 60


def test_a_checkpoint_missing_its_fields_falls_back_to_the_previous_one(finished, tmp_path, capsys):
    exp = tmp_path / "res" / "e"
    shutil.copytree(finished, exp)
    eval_unfinished(exp)
    last = exp / "eval" / "checkpoint_last.pt"
    shutil.copy(last, exp / "eval" / "checkpoint_prev.pt")
    torch.save({"format": FORMAT, "config": {}}, last)
    capsys.readouterr()
    code = main(["--config", TINY, f"common.results_dir={tmp_path / 'res'}", "--exp-name", "e", *QUICK])
    out = "".join(capsys.readouterr())
    assert code == 0, out[-3000:]
    assert "incomplete checkpoint (no valid rng, state); trying the previous checkpoint" in out
    assert "resumed from" in out and "checkpoint_prev.pt" in out, out[-3000:]
    assert (exp / "eval" / "metrics.json").is_file() and "Traceback" not in out


def test_a_genotype_as_archnas_writes_it_is_a_final_desc_and_a_stats_value(finished, tmp_path, capsys):
    """`nas.eval.final_desc="$(cat genotype.txt)"` and `archnas stats --genotype "Genotype(...)"`."""
    darts_v2 = str(named_genotype("DARTS_V2"))
    assert len(darts_v2) > 255  # longer than a file name may be: it must never be looked up as a file
    capsys.readouterr()
    assert main(["stats", "--config", TINY, "--genotype", darts_v2]) == 0
    assert '"params"' in capsys.readouterr().out
    genotype = (finished / "search" / "genotype.txt").read_text().strip()
    code = main(["--config", TINY, f"common.results_dir={tmp_path}", "--exp-name", "g", "--no-search",
                 f"nas.eval.final_desc={genotype}", *QUICK])
    assert code == 0
    assert (tmp_path / "g" / "eval" / "metrics.json").is_file()


# -- signals ------------------------------------------------------------------------------------------

PROGRESS = re.compile(r"search epoch (\d+)/\d+: step (\d+)/(\d+)")


class SignalAtStep(io.StringIO):
    """The run's stdout: sends this process `signum` when the run reports its `step`-th step (1-based),
    from inside the training loop, as a user's Ctrl-C or a scheduler's SIGTERM arrives."""

    def __init__(self, step: int, signum: int):
        super().__init__()
        self.step, self.signum, self.sent = step, signum, False

    def write(self, text: str) -> int:
        m = PROGRESS.search(text)
        if m and not self.sent and (int(m[1]) - 1) * int(m[3]) + int(m[2]) >= self.step:
            self.sent = True
            os.kill(os.getpid(), self.signum)
        return super().write(text)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_with_one_message_and_no_traceback(tmp_path, signum, monkeypatch, capsys):
    """Not a mistake, but the same promise: one message (how to resume), its exit code, no traceback."""
    step = random.Random(f"{KILL_SEED}:{int(signum)}").randint(2, 3)  # 2 steps per epoch, 4 in all
    where = f"ARCHNAS_KILL_SEED={KILL_SEED}, {signal.Signals(signum).name} at step {step}"
    out = SignalAtStep(step, signum)
    monkeypatch.setattr(sys, "stdout", out)
    code = main(["--config", TINY, f"common.results_dir={tmp_path}", "--exp-name", "s", "common.log_every_steps=1",
                 "common.tensorboard=false", "nas.search.trainer.epochs=2", "nas.search.trainer.bilevel_order=first",
                 "dataset.limit_train=160", "--no-eval"])
    err = capsys.readouterr().err
    assert out.sent, f"{where}: the search ended first"
    assert code == 128 + signum, f"{where}: {err[-3000:]}"
    assert "Traceback" not in err and "archnas: error:" not in err, f"{where}: {err[-3000:]}"
    stopped = [ln for ln in err.splitlines() if ln.startswith("archnas: ") and "stopped by" in ln]
    assert len(stopped) == 1 and signal.Signals(signum).name in stopped[0], f"{where}: {err[-3000:]}"
    assert (tmp_path / "s" / "search" / "checkpoint_last.pt").is_file(), where
    assert not (tmp_path / "s" / "search" / "search_result.json").exists(), where
