"""Each dataset provider loads; missing or malformed data gives a clear error.

Data from the shared folder (`<repo>/../shared/data`) and Debian's fashion-mnist package are used
when present; those tests are skipped otherwise.
"""

from __future__ import annotations

import io
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from archnas.config.schema import DatasetConf
from archnas.data import FileImages, load_dataset, provider_names
from archnas.data import imagefolder as imagefolder_module
from archnas.data.archive import main as archive_main
from archnas.data.archive import unpack
from archnas.errors import ConfigError, DatasetError

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
FIXTURES = Path(__file__).parent / "fixtures"
FASHION_SYSTEM = Path("/usr/share/datasets/fashion-mnist")
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

needs_mnist = pytest.mark.skipif(
    not (SHARED / "mnist" / "train-images-idx3-ubyte.gz").is_file(), reason="no ../shared/data/mnist"
)
needs_cifar_jpeg = pytest.mark.skipif(
    not (SHARED / "cifar10" / "cifar10-test-jpeg.tar.gz").is_file(), reason="no ../shared/data/cifar10 JPEG tarballs"
)


def test_all_providers_are_registered():
    assert set(provider_names()) >= {
        "digits",
        "mnist",
        "fashion_mnist",
        "cifar10",
        "cifar100",
        "imagefolder",
        "synthetic",
    }


def test_unknown_dataset_names_the_registered_ones(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset 'cifar11'.*cifar10"):
        load_dataset(DatasetConf(name="cifar11"), tmp_path)


def test_digits_loads_with_a_fixed_stratified_test_split(tmp_path):
    data = load_dataset(DatasetConf(name="digits"), tmp_path)
    info = data.info
    assert (info.n_classes, info.channels, info.image_size) == (10, 1, (8, 8))
    assert data.train.images.shape == (1437, 1, 8, 8) and data.test.images.shape == (360, 1, 8, 8)
    assert data.train.images.dtype == torch.uint8 and int(data.train.images.max()) == 255
    counts = torch.bincount(data.test.labels)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37  # 20% of every class (178..183 images each)
    again = load_dataset(DatasetConf(name="digits", dataroot="/nonexistent"), tmp_path)
    assert torch.equal(again.test.images, data.test.images)  # embedded, and the test split never moves
    mean = data.train.images.double().mean() / 255
    assert abs(info.mean[0] - float(mean)) < 1e-9 and 0.3 < info.std[0] < 0.45
    assert info.crop_padding == 1 and info.hflip is False


def test_synthetic_is_seeded_and_checks_its_params(tmp_path):
    conf = DatasetConf(name="synthetic", params={"n_train": 40, "n_test": 12, "n_classes": 3, "channels": 2, "size": 6})
    a, b = load_dataset(conf, tmp_path), load_dataset(conf, tmp_path)
    assert a.train.images.shape == (40, 2, 6, 6) and a.info.n_classes == 3 and a.info.image_size == (6, 6)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert torch.bincount(a.train.labels).tolist() == [14, 13, 13]
    with pytest.raises(ConfigError, match="unknown key.*n_img"):
        load_dataset(DatasetConf(name="synthetic", params={"n_img": 3}), tmp_path)
    with pytest.raises(ConfigError, match="n_classes"):
        load_dataset(DatasetConf(name="synthetic", params={"n_classes": 1.5}), tmp_path)


def test_in_memory_false_is_refused_for_sets_that_cannot_stream(tmp_path):
    with pytest.raises(ConfigError, match="only imagefolder"):
        load_dataset(DatasetConf(name="digits", in_memory=False), tmp_path)


# -- IDX: mnist, fashion_mnist ---------------------------------------------------------------


@needs_mnist
def test_mnist_from_the_shared_folder(tmp_path):
    data = load_dataset(DatasetConf(name="mnist", dataroot=str(SHARED)), tmp_path)
    assert data.train.images.shape == (60000, 1, 28, 28) and data.test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(data.train.labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(data.test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(float(data.train.images.double().mean() / 255) - 0.1307) < 1e-3
    assert data.info.mean == (0.1307,) and data.info.std == (0.3081,)


def test_missing_mnist_says_where_it_looked_and_where_to_get_it(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset(DatasetConf(name="mnist", dataroot=str(tmp_path)), tmp_path)
    message = str(err.value)
    assert str(tmp_path / "mnist") in message and "train-images-idx3-ubyte.gz" in message and "lecun" in message


def test_idx_header_that_disagrees_with_the_data_is_an_error(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    header = bytes([0, 0, 8, 3]) + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    for stem in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        (folder / stem).write_bytes(header + bytes(100))  # 5 images announced, far fewer bytes
    for stem in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        (folder / stem).write_bytes(bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + bytes(5))
    with pytest.raises(DatasetError, match="IDX header says shape"):
        load_dataset(DatasetConf(name="mnist", dataroot=str(tmp_path)), tmp_path)


@pytest.mark.skipif(
    not (FASHION_SYSTEM / "train-images-idx3-ubyte.gz").is_file(), reason="dataset-fashion-mnist not installed"
)
def test_fashion_mnist_from_the_debian_package(tmp_path):
    data = load_dataset(
        DatasetConf(name="fashion_mnist", dataroot=str(tmp_path)), tmp_path
    )  # nothing there: system dir
    assert data.train.images.shape == (60000, 1, 28, 28) and data.test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(data.train.labels).tolist() == [6000] * 10
    assert abs(float(data.train.images.double().mean() / 255) - 0.2860) < 1e-3
    assert data.info.classes[9] == "ankle boot" and data.info.hflip


# -- CIFAR pickle batches --------------------------------------------------------------------


def fixture_image(i: int) -> torch.Tensor:
    c, y, x = torch.meshgrid(torch.arange(3), torch.arange(32), torch.arange(32), indexing="ij")
    return ((7 * i + 60 * c + 3 * y + x) % 256).to(torch.uint8)


def test_cifar10_pickle_batches(tmp_path):
    data = load_dataset(DatasetConf(name="cifar10", dataroot=str(FIXTURES)), tmp_path)
    assert data.info.classes == CIFAR_CLASSES and data.info.image_size == (32, 32) and data.info.crop_padding == 4
    assert data.train.images.shape == (10, 3, 32, 32) and data.test.images.shape == (5, 3, 32, 32)
    assert data.train.labels.tolist() == [(3 * i + 1) % 10 for i in range(10)]  # batches 1..5 in order
    for i in range(10):
        assert torch.equal(data.train.images[i], fixture_image(i)), i
    for i in range(5):
        assert torch.equal(data.test.images[i], fixture_image(1000 + i))


def test_cifar10_reads_the_downloaded_tarball_without_unpacking(tmp_path):
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(FIXTURES / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    from_tar = load_dataset(DatasetConf(name="cifar10", dataroot=str(tmp_path)), tmp_path / "cache")
    from_dir = load_dataset(DatasetConf(name="cifar10", dataroot=str(FIXTURES)), tmp_path / "cache")
    assert torch.equal(from_tar.train.images, from_dir.train.images) and torch.equal(
        from_tar.test.labels, from_dir.test.labels
    )
    assert not (tmp_path / "cifar-10-batches-py").exists()


def test_cifar_pickle_that_would_run_code_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    shutil.copytree(FIXTURES / "cifar-10-batches-py", folder)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": shutil.rmtree}))  # a callable global
    with pytest.raises(DatasetError, match="data_batch_3.*refusing to load shutil"):
        load_dataset(DatasetConf(name="cifar10", dataroot=str(tmp_path)), tmp_path)


def test_missing_cifar100_names_folder_archive_and_url(tmp_path):
    with pytest.raises(DatasetError, match=r"(?s)cifar-100-python.*cifar-100-python\.tar\.gz.*toronto"):
        load_dataset(DatasetConf(name="cifar100", dataroot=str(tmp_path)), tmp_path)


# -- imagefolder -------------------------------------------------------------------------------


def write_folder(root: Path, n_per_class: int = 3, size: tuple[int, int] = (6, 5), classes=("b_cls", "a_cls")) -> dict:
    """PNG images (lossless) with known pixels; returns {path: (array, class name)}."""
    rng = np.random.default_rng(0)
    written = {}
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            arr = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            path = root / name / f"{i:03d}.png"
            Image.fromarray(arr).save(path)
            written[path] = (arr, name)
    return written


def test_imagefolder_loads_sorted_classes_and_exact_pixels(tmp_path):
    train = write_folder(tmp_path / "data" / "train")
    write_folder(tmp_path / "data" / "test", n_per_class=1)
    data = load_dataset(DatasetConf(name="imagefolder", dataroot=str(tmp_path / "data")), tmp_path / "cache")
    assert data.info.classes == ("a_cls", "b_cls") and data.info.image_size == (6, 5) and data.info.channels == 3
    assert data.train.images.shape == (6, 3, 6, 5) and len(data.test) == 2
    for i, (path, (arr, name)) in enumerate(sorted(train.items(), key=lambda kv: (kv[1][1], kv[0].name))):
        assert torch.equal(data.train.images[i], torch.from_numpy(arr).permute(2, 0, 1)), path
        assert int(data.train.labels[i]) == data.info.classes.index(name)
    pixels = np.stack([a for a, _ in train.values()]).astype(np.float64) / 255
    assert np.allclose(data.info.mean, pixels.mean(axis=(0, 1, 2))) and np.allclose(
        data.info.std, pixels.std(axis=(0, 1, 2))
    )


def test_imagefolder_second_load_comes_from_the_decoded_cache(tmp_path, monkeypatch):
    write_folder(tmp_path / "train")
    write_folder(tmp_path / "test", n_per_class=1)
    conf = DatasetConf(name="imagefolder", dataroot=str(tmp_path))
    first = load_dataset(conf, tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "imagefolder").glob("*.pt"))) == 2

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(imagefolder_module, "decode_all_uncached", no_decoding)
    second = load_dataset(conf, tmp_path / "cache")
    assert torch.equal(first.train.images, second.train.images)
    # A changed file invalidates the cache.
    Image.fromarray(np.zeros((6, 5, 3), np.uint8)).save(tmp_path / "train" / "a_cls" / "000.png")
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset(conf, tmp_path / "cache")


def test_imagefolder_size_mismatch_names_the_file_and_size_param_resizes(tmp_path):
    write_folder(tmp_path / "train")
    write_folder(tmp_path / "test", n_per_class=1)
    odd = tmp_path / "train" / "b_cls" / "zz_odd.png"
    Image.fromarray(np.zeros((7, 7, 3), np.uint8)).save(odd)
    with pytest.raises(DatasetError, match=r"zz_odd\.png is 7x7 .* 6x5.*params\.size"):
        load_dataset(DatasetConf(name="imagefolder", dataroot=str(tmp_path)), tmp_path / "cache")
    data = load_dataset(
        DatasetConf(name="imagefolder", dataroot=str(tmp_path), params={"size": [4, 4]}), tmp_path / "cache"
    )
    assert data.train.images.shape == (7, 3, 4, 4) and data.info.image_size == (4, 4)


def test_imagefolder_errors_for_missing_folder_unknown_class_and_param(tmp_path):
    with pytest.raises(DatasetError, match=r"params\.train .*does not exist.*tar\.gz"):
        load_dataset(DatasetConf(name="imagefolder", dataroot=str(tmp_path)), tmp_path / "cache")
    write_folder(tmp_path / "train")
    write_folder(tmp_path / "test", n_per_class=1, classes=("a_cls", "c_cls"))
    with pytest.raises(DatasetError, match="class folders the train split lacks: c_cls"):
        load_dataset(DatasetConf(name="imagefolder", dataroot=str(tmp_path)), tmp_path / "cache")
    with pytest.raises(ConfigError, match="unknown key.*sise"):
        load_dataset(DatasetConf(name="imagefolder", dataroot=str(tmp_path), params={"sise": 4}), tmp_path / "cache")


def test_imagefolder_reads_archives_through_the_cache(tmp_path, capsys):
    write_folder(tmp_path / "src" / "train")
    write_folder(tmp_path / "src" / "test", n_per_class=1)
    for part in ("train", "test"):
        with tarfile.open(tmp_path / f"{part}.tar.gz", "w:gz") as tar:
            tar.add(tmp_path / "src" / part, arcname=part)
    cache = tmp_path / "cache"
    conf = DatasetConf(
        name="imagefolder", params={"train": str(tmp_path / "train.tar.gz"), "test": str(tmp_path / "test.tar.gz")}
    )
    data = load_dataset(conf, cache)
    plain = load_dataset(DatasetConf(name="imagefolder", dataroot=str(tmp_path / "src")), tmp_path / "cache2")
    assert torch.equal(data.train.images, plain.train.images) and torch.equal(data.test.labels, plain.test.labels)
    unpacked = unpack(tmp_path / "train.tar.gz", cache)
    assert unpacked.parent.parent == cache / "unpacked" and unpacked.name == "train"
    assert len(list((cache / "unpacked").iterdir())) == 2  # unpacked once each, reused
    assert archive_main([str(tmp_path / "train.tar.gz"), "--cache-dir", str(cache)]) == 0  # the command-line way
    assert capsys.readouterr().out.strip() == str(unpacked)


def test_unpack_refuses_paths_outside_the_target(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(DatasetError, match="cannot unpack"):
        unpack(evil, tmp_path / "cache")
    assert not (tmp_path / "cache" / "outside.txt").exists()


def test_imagefolder_streaming_keeps_files_and_decodes_the_same_pixels(tmp_path):
    write_folder(tmp_path / "train")
    write_folder(tmp_path / "test", n_per_class=1)
    memory = load_dataset(DatasetConf(name="imagefolder", dataroot=str(tmp_path)), tmp_path / "cache")
    stream = load_dataset(DatasetConf(name="imagefolder", dataroot=str(tmp_path), in_memory=False), tmp_path / "cache")
    assert isinstance(stream.train, FileImages) and stream.info == memory.info
    decoded = torch.stack([stream.train.decode(p) for p in stream.train.paths])
    assert torch.equal(decoded, memory.train.images) and torch.equal(stream.train.labels, memory.train.labels)


@needs_cifar_jpeg
def test_cifar10_jpegs_through_imagefolder(tmp_path):
    tarball = SHARED / "cifar10" / "cifar10-test-jpeg.tar.gz"
    conf = DatasetConf(name="imagefolder", params={"train": str(tarball), "test": str(tarball)})
    data = load_dataset(conf, tmp_path)
    assert data.info.classes == CIFAR_CLASSES and data.info.image_size == (32, 32) and data.info.channels == 3
    assert data.train.images.shape == (10000, 3, 32, 32)
    assert torch.bincount(data.train.labels).tolist() == [1000] * 10
    assert np.allclose(data.info.mean, (0.4913, 0.4821, 0.4465), atol=0.01)
    # test/cat/0000.jpg is test image 0 (a cat); compare with the lossless sheet: ~30 dB if decoded right.
    sheet = SHARED / "cifar10" / "lossless" / "cifar10_batch_50.png"
    if sheet.is_file():
        lossless = np.asarray(Image.open(sheet).convert("RGB")).reshape(1000, 32, 32, 3)[0].astype(np.float64)
        cat0 = data.train.images[data.train.labels == 3][0].permute(1, 2, 0).numpy().astype(np.float64)
        psnr = 10 * np.log10(255**2 / ((cat0 - lossless) ** 2).mean())
        assert psnr > 20, psnr
