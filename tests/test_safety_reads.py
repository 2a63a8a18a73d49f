"""Hostile and careless files around a run (issue 22, parts 3, 8, 10 and the smaller ones):
unbounded reads, folders and devices named as files, refused writes (read-only or full file
systems), damaged checkpoints, an edited search result, a tampered dataset cache.

Each case runs the `archnas` command and asserts one `archnas: error:` line, exit code 2, no
traceback and, where it runs against an existing experiment, that no file of it changed.
Read-only and full file systems are simulated by making the write fail the way the kernel does
(tests run as root, where a 0o555 folder does not stop writes); one test mounts a real small
tmpfs in a private mount namespace where `unshare` allows it.
"""

from __future__ import annotations

import errno
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from archnas.cli import main
from archnas.config.schema import DatasetConf
from archnas.data import load_dataset
from archnas.data.idx import read_idx
from archnas.errors import DatasetError
from test_bad_input import FORMAT, Harmful, QUICK, REPO, TINY, digests, idx_bytes, truncate, write_images

NB201 = ["--config", str(REPO / "confs" / "darts_nb201.yaml"), "common.tensorboard=false", "dataset.limit_train=200",
         "dataset.limit_test=40", "nas.search.space={name: nb201, C: 4, N: 1}", "nas.search.loader.train_batch=40",
         "nas.search.trainer.epochs=1", "nas.eval.loader.train_batch=40", "nas.eval.trainer.epochs=1"]
SPOS_NB201 = str(REPO / "confs" / "spos_nb201.yaml")


def run(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


def one_error(code: int, err: str, match: str) -> str:
    """The error line, after checking exit code 2, no traceback and exactly one line on stderr."""
    assert code == 2, err[-3000:]
    assert "Traceback" not in err and "Logging error" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("archnas: error: "), err[-3000:]
    assert re.search(match, lines[0]), lines[0]
    return lines[0]


def tiny(res: Path, *extra: str) -> list[str]:
    return ["--config", TINY, f"common.results_dir={res}", "--exp-name", "e", *QUICK, *extra]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny DARTS experiment (1 search epoch, 1 eval epoch), copied by the tests that use one."""
    res = tmp_path_factory.mktemp("finished")
    assert main(tiny(res)) == 0
    return res / "e"


@pytest.fixture
def experiment(finished, tmp_path) -> Path:
    exp = tmp_path / "res" / "e"
    shutil.copytree(finished, exp)
    return exp


# -- unbounded reads ------------------------------------------------------------------------------

CHILD = ("import resource, sys, time\n"
         "resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))  # the unbounded read fails, not the machine\n"
         "import archnas.algos  # imports (scipy's take seconds on a busy machine) are not what is timed\n"
         "from archnas.cli import main\n"
         "start = time.monotonic()\n"
         "code = main(sys.argv[1:])\n"
         "print(f'seconds {time.monotonic() - start:.3f}', file=sys.stderr)\n"
         "# VmHWM starts anew at exec; ru_maxrss would carry over the (large) peak of the pytest process\n"
         "print(next(line for line in open('/proc/self/status') if line.startswith('VmHWM:')), file=sys.stderr)\n"
         "sys.exit(code)\n")


def run_child(args: list[str], timeout: float = 120) -> tuple[int, str, float, float]:
    """(exit code, stderr, seconds main() took, peak resident MiB) of `archnas ARGS` in a child
    process; the peak is that child's own high-water mark (VmHWM)."""
    try:
        child = subprocess.run([sys.executable, "-c", CHILD, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}, cwd=REPO,
                               timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"archnas {' '.join(args)} still ran after {timeout} s (a hang or an unbounded read)")
    text = child.stderr.decode(errors="replace")
    seconds = re.search(r"^seconds ([\d.]+)$", text, re.M)
    peak = re.search(r"^VmHWM:\s+(\d+) kB$", text, re.M)
    text = re.sub(r"^(seconds [\d.]+|VmHWM:.*)\n?", "", text, flags=re.M)
    return (child.returncode, text, float(seconds.group(1)) if seconds else float("inf"),
            int(peak.group(1)) / 1024 if peak else float("inf"))


@pytest.mark.parametrize("target", ["/dev/zero", "fifo"])
def test_a_device_or_fifo_as_desc_is_refused_at_once_in_bounded_memory(target, tmp_path):
    """`archnas stats --desc /dev/zero` grew to 19 GB; a FIFO with no writer blocked forever."""
    if target == "fifo":
        target = str(tmp_path / "fifo")
        os.mkfifo(target)
    code, err, seconds, peak_mib = run_child(["stats", "--config", TINY, "--desc", target])
    kind = "a character device" if target == "/dev/zero" else "a named pipe"
    one_error(code, err, rf"cannot read desc file {re.escape(target)}: not a regular file \({kind}\)")
    assert seconds < 5, f"refused after {seconds:.1f} s"
    assert peak_mib < 500, f"peak resident memory {peak_mib:.0f} MiB"


# -- folders, devices and oversized files named as descs and architectures -----------------------

def sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)  # no disk blocks: reads as zeros
    return path


@pytest.mark.parametrize("args, match", [
    (["--no-search", "nas.eval.final_desc={tmp}"], r"cannot read desc file .*: is a directory, not a file"),
    (["--no-search", "nas.eval.final_desc=/dev/null"], r"cannot read desc file /dev/null: not a regular file \(a character device\)"),
    (["--no-search", "nas.eval.final_desc={tmp}/big.yaml"], r"big\.yaml: too large \(65\.0 MiB; at most 64\.0 MiB"),
], ids=["final_desc a folder", "final_desc a device", "final_desc too large"])
def test_a_folder_device_or_huge_file_as_final_desc_is_named_as_such(args, match, tmp_path, capsys):
    sparse(tmp_path / "big.yaml", 65 * 2**20)
    argv = tiny(tmp_path / "res", *(a.replace("{tmp}", str(tmp_path)) for a in args))
    one_error(*run(argv, capsys), match)


@pytest.mark.parametrize("target, match", [
    ("{tmp}", r"architecture file .*: is a directory, not a file"),
    ("/dev/zero", r"architecture file /dev/zero: not a regular file \(a character device\)"),
    ("{tmp}/big.json", r"architecture file .*big\.json: too large"),
], ids=["a folder", "a device", "too large"])
def test_a_folder_device_or_huge_file_as_arch_is_named_as_such(target, match, tmp_path, capsys):
    """Not "a NAS-Bench-201 string" or "expected a mapping ... got str"."""
    sparse(tmp_path / "big.json", 65 * 2**20)
    argv = ["stats", "--config", SPOS_NB201, "--arch", target.replace("{tmp}", str(tmp_path))]
    one_error(*run(argv, capsys), match)


def test_a_harmful_pickle_as_desc_sidecar_is_one_line(tmp_path, capsys):
    torch.save({"cells.0": {"w": Harmful()}}, tmp_path / "d.pt")
    (tmp_path / "d.yaml").write_text("schema_version: 2\ntrainables_file: d.pt\nmodel_desc: {}\n")
    line = one_error(*run(["stats", "--config", TINY, "--desc", str(tmp_path / "d.yaml")], capsys),
                     r"d\.yaml: trainables_file: cannot load .*d\.pt as plain tensors: refused: it names posix\.system")
    assert "weights_only` set to `False`" not in line and "will likely succeed" not in line


# -- checkpoints ----------------------------------------------------------------------------------

def eval_resumes(exp: Path) -> Path:
    """The eval phase as if killed after its last checkpoint: a rerun resumes from its checkpoints."""
    (exp / "eval" / "metrics.json").unlink()
    return exp / "eval"


def test_a_harmful_checkpoint_is_one_line_without_torchs_advice(experiment, capsys):
    folder = eval_resumes(experiment)
    torch.save({"format": FORMAT, "x": Harmful()}, folder / "checkpoint_last.pt")
    before = digests(experiment)
    line = one_error(*run(tiny(experiment.parent), capsys),
                     r"no usable checkpoint to resume from: .*checkpoint_last\.pt: refused: it names posix\.system")
    assert "will likely succeed" not in line and "weights_only` set to `False`" not in line
    assert digests(experiment) == before


def test_with_last_and_prev_corrupt_an_intact_best_checkpoint_is_named(experiment, capsys):
    folder = eval_resumes(experiment)
    shutil.copy(folder / "checkpoint_last.pt", folder / "checkpoint_prev.pt")
    truncate(folder / "checkpoint_last.pt")
    truncate(folder / "checkpoint_prev.pt", 0.3)
    assert (folder / "checkpoint_best.pt").is_file()
    before = digests(experiment)
    one_error(*run(tiny(experiment.parent), capsys),
              r"no usable checkpoint to resume from: .*checkpoint_last\.pt: truncated or corrupt.*; .*checkpoint_prev\.pt: "
              r"truncated or corrupt.*; .*checkpoint_best\.pt is intact \(of epoch 1\): copy it to .*checkpoint_last\.pt")
    assert digests(experiment) == before
    shutil.copy(folder / "checkpoint_best.pt", folder / "checkpoint_last.pt")  # what the message says to do works
    assert main(tiny(experiment.parent)) == 0 and (folder / "metrics.json").is_file()


def test_a_checkpoint_that_is_a_device_is_named_as_one(experiment):
    """Run in a child under a memory limit: before, torch.load read /dev/zero until memory ran out."""
    folder = eval_resumes(experiment)
    (folder / "checkpoint_last.pt").unlink()
    (folder / "checkpoint_last.pt").symlink_to("/dev/zero")
    code, err, seconds, peak_mib = run_child(tiny(experiment.parent))
    one_error(code, err, r"checkpoint_last\.pt: not a regular file \(a character device\)")
    assert peak_mib < 1000, f"peak resident memory {peak_mib:.0f} MiB"


# -- refused writes: read-only folders, full disks (simulated) -------------------------------------

def refuse_writes(monkeypatch, code: int, under: Path) -> None:
    """Every new file below `under` fails as on a read-only (EROFS) or full (ENOSPC) file system:
    atomic writes at their temp file, appends and folders at open/mkdir."""
    real_mkstemp, real_open, real_mkdir = tempfile.mkstemp, os.open, os.mkdir
    below = lambda p: str(Path(p).absolute()).startswith(str(under))  # noqa: E731

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and below(dir):
            raise OSError(code, os.strerror(code), str(Path(dir) / "x.tmp"))
        return real_mkstemp(*args, dir=dir, **kwargs)

    def open_(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and below(path):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        if below(path) and not os.path.isdir(path):
            raise OSError(code, os.strerror(code), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "mkdir", mkdir)


def test_a_rerun_of_a_finished_experiment_on_a_read_only_folder_writes_nothing(experiment, monkeypatch, capsys):
    """It rewrote result.json (an OSError traceback on a read-only folder); with nothing new it
    writes nothing and succeeds."""
    assert main(tiny(experiment.parent)) == 0  # result.json names the copy's files now
    before = digests(experiment)
    refuse_writes(monkeypatch, errno.EROFS, experiment.parent)
    code, err = run(tiny(experiment.parent), capsys)
    assert code == 0 and "Traceback" not in err, err[-3000:]
    assert digests(experiment) == before


@pytest.mark.parametrize("code, reason", [(errno.EROFS, "Read-only file system"), (errno.ENOSPC, "No space left on device")])
def test_a_rerun_that_must_write_on_a_refusing_folder_is_one_line(code, reason, experiment, monkeypatch, capsys):
    before = digests(experiment)
    refuse_writes(monkeypatch, code, experiment.parent)
    one_error(*run(tiny(experiment.parent, "nas.eval.trainer.epochs=2"), capsys),  # the lock is the first write
              rf"{re.escape(str(experiment))}/(eval/\S+|archnas\.lock): {reason}")
    assert digests(experiment) == before


def test_a_first_run_on_a_read_only_folder_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "res").mkdir()
    refuse_writes(monkeypatch, errno.EROFS, tmp_path / "res")
    one_error(*run(tiny(tmp_path / "res"), capsys), rf"{re.escape(str(tmp_path / 'res'))}.*: Read-only file system")


def test_a_first_run_that_fills_the_disk_is_one_line(tmp_path, monkeypatch, capsys):
    """A full disk shows when data is written (fsync), after files were created."""
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    res = tmp_path / "res"
    one_error(*run(tiny(res), capsys), rf"cannot write {re.escape(str(res))}/e/\S+: No space left on device; free some")
    assert not [p for p in res.rglob("*") if p.name.endswith((".tmp", ".next"))]


def test_a_full_disk_mid_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    """The write itself fails (ENOSPC from fsync, as a full disk reports a delayed allocation):
    OutputError naming the file; the old content stays, the temp file is gone."""
    from archnas.errors import OutputError
    from archnas.utils import atomic

    target = tmp_path / "result.json"
    atomic.write_json(target, {"old": 1})

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match=rf"cannot write {re.escape(str(target))}: No space left on device; free"):
        atomic.write_json(target, {"new": 2})
    assert target.read_text() == '{\n  "old": 1\n}\n' and sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_a_read_only_cache_dir_is_one_line(tmp_path, monkeypatch, capsys):
    write_images(tmp_path / "data" / "train", {"a": 4, "b": 4})
    write_images(tmp_path / "data" / "test", {"a": 2, "b": 2})
    (tmp_path / "cache").mkdir()
    refuse_writes(monkeypatch, errno.EROFS, tmp_path / "cache")
    one_error(*run(tiny(tmp_path / "res", "dataset.name=imagefolder", f"dataset.dataroot={tmp_path / 'data'}",
                        f"common.cache_dir={tmp_path / 'cache'}", "nas.search.loader.val_ratio=0.5"), capsys),
              rf"cannot write {re.escape(str(tmp_path / 'cache'))}/imagefolder/train-\w+\.pt: Read-only file system")


# -- the same on real file systems, where a private mount namespace can be made ---------------------

def unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(not unshare_works(), reason="cannot make a private mount namespace (unshare -rm)")


def in_namespace(setup: str, args: list[str], after: str = "") -> subprocess.CompletedProcess:
    """`archnas ARGS` after the shell `setup` (mounts), in a private mount namespace that ends with it."""
    script = f"set -e\n{setup}\nset +e\n\"$@\"\ncode=$?\n{after}\nexit $code\n"
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", sys.executable, "-m", "archnas", *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
@needs_mounts
def test_real_read_only_and_full_file_systems(experiment, tmp_path):
    res = experiment.parent
    assert main(tiny(res)) == 0  # result.json names the copy's files now
    before = digests(experiment)
    ro = f"mount --bind {res} {res}\nmount -o remount,bind,ro {res}"
    rerun = in_namespace(ro, tiny(res))
    assert rerun.returncode == 0 and "Traceback" not in rerun.stderr, rerun.stderr[-3000:]
    more = in_namespace(ro, tiny(res, "nas.eval.trainer.epochs=2"))
    one_error(more.returncode, more.stderr, r"eval/\S+: Read-only file system")
    assert digests(experiment) == before
    full = tmp_path / "full"
    full.mkdir()
    run_full = in_namespace(f"mount -t tmpfs -o size=300k tmpfs {full}", tiny(full),
                            after=f"find {full} -name '*.tmp' -o -name '*.next'")
    one_error(run_full.returncode, run_full.stderr, rf"cannot write {re.escape(str(full))}/e/\S+: No space left on device")
    assert run_full.stdout.count(".tmp") == 0 and ".next" not in run_full.stdout.splitlines()[-1:]


# -- an edited search result, a tampered dataset cache, an inflating IDX file ------------------------

@pytest.fixture(scope="module")
def nb201_finished(tmp_path_factory) -> Path:
    """A finished search and eval over a module space (NAS-Bench-201 cells, 1 epoch each)."""
    res = tmp_path_factory.mktemp("nb201")
    assert main([*NB201, f"common.results_dir={res}", "--exp-name", "nb"]) == 0
    return res / "nb"


@pytest.mark.parametrize("damage, match", [
    (lambda arch: arch.write_text(_swap_op(arch.read_text())), r"it holds another architecture"),
    (lambda arch: arch.unlink(), r"No such file or directory"),
], ids=["edited", "deleted"])
def test_an_edited_or_deleted_search_arch_file_is_refused(damage, match, nb201_finished, tmp_path, capsys):
    exp = tmp_path / "nb"
    shutil.copytree(nb201_finished, exp)
    argv = [*NB201, f"common.results_dir={tmp_path}", "--exp-name", "nb"]
    assert main(argv) == 0  # result.json names the copy's files now
    damage(exp / "search" / "arch.yaml")
    before = digests(exp)
    one_error(*run(argv, capsys), rf"search/arch\.yaml does not match the search result recorded in .*search_result\.json "
                                  rf"\(.*{match}.*\): it was deleted or changed after the search finished")
    assert digests(exp) == before


def _swap_op(text: str) -> str:
    """The architecture file with its first edge's op replaced by another of the space's ops."""
    first = re.search(r"^  (cell__\w+): (\w+)$", text, re.M)
    assert first, text
    other = "conv_3x3" if first.group(2) != "conv_3x3" else "skip_connect"
    return text[: first.start(2)] + other + text[first.end(2):]


@pytest.mark.parametrize("tamper", ["labels", "shape", "not a tensor"])
def test_a_tampered_imagefolder_cache_is_rebuilt_not_trusted(tamper, tmp_path):
    write_images(tmp_path / "train", {"a": 3, "b": 3})
    write_images(tmp_path / "test", {"a": 1, "b": 1})
    conf = DatasetConf(name="imagefolder", dataroot=str(tmp_path))
    first = load_dataset(conf, tmp_path / "cache")
    cache = next(p for p in (tmp_path / "cache" / "imagefolder").glob("train-*.pt"))
    saved = torch.load(cache, weights_only=True)
    if tamper == "labels":
        saved["labels"] = 1 - saved["labels"]
    elif tamper == "shape":
        saved["images"] = saved["images"][:, :, :4]
    else:
        saved["images"] = [1, 2, 3]
    torch.save(saved, cache)
    second = load_dataset(conf, tmp_path / "cache")
    assert torch.equal(second.train.labels, first.train.labels) and torch.equal(second.train.images, first.train.images)
    assert torch.equal(torch.load(cache, weights_only=True)["labels"], first.train.labels)  # rebuilt


def test_an_idx_file_that_inflates_past_its_header_is_read_in_bounded_memory(tmp_path):
    """A 400 KB .gz announcing 4 images of 8x8 that inflates to 400 MB of zeros."""
    path = tmp_path / "train-images-idx3-ubyte.gz"
    header = idx_bytes(np.zeros((4, 8, 8), np.uint8))
    with gzip.open(path, "wb") as f:
        f.write(header)
        for _ in range(400):
            f.write(bytes(2**20))
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match=r"IDX header says shape \[4, 8, 8\] but the file has more data bytes"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    huge = tmp_path / "huge.gz"
    huge.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (2**20, 2**10, 2**10))))
    with pytest.raises(DatasetError, match=r"announces shape \[1048576, 1024, 1024\]: .* more than the"):
        read_idx(huge)
