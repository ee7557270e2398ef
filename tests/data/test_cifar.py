"""CIFAR-10/100 pickles, folders and archives, on tiny files written in the exact format."""

import pickle

import numpy as np
import pytest
import torch

from slac.data import ChecksumError, load_dataset, md5sum, verify_md5
from slac.data.cifar import CIFAR_SPECS

from .helpers import cifar_files, write_cifar_dir, write_cifar_tar


def expected_split(files, name, split):
    spec = CIFAR_SPECS[name]
    batches = [pickle.loads(files[m]) for m in (spec.train_files if split == "train" else spec.test_files)]
    images = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([b[spec.label_key] for b in batches])
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


@pytest.mark.parametrize("layout", ["folder", "parent", "archive", "archive-parent"])
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_round_trip(tmp_path, name, layout):
    spec = CIFAR_SPECS[name]
    files = cifar_files(name, n=4)
    if layout in ("folder", "parent"):
        write_cifar_dir(tmp_path / spec.folder, files)
        root = tmp_path / spec.folder if layout == "folder" else tmp_path
    else:
        archive = write_cifar_tar(tmp_path / spec.archive, spec.folder, files)
        root = archive if layout == "archive" else tmp_path
    for split in ("train", "test"):
        ds = load_dataset(name, root=root, split=split)
        images, labels = expected_split(files, name, split)
        assert ds.images.shape == (len(labels), 3, 32, 32) and ds.images.dtype == torch.uint8
        assert torch.equal(ds.images, images) and torch.equal(ds.labels, labels)
        assert ds.num_classes == spec.num_classes and ds.flip and ds.padding == 4
        assert ds.classes is not None and len(ds.classes) == spec.num_classes
    assert len(load_dataset(name, root=root)) == 4 * len(spec.train_files)


def test_row_layout_is_rgb_planes(tmp_path):
    """A row is 1024 red, then 1024 green, then 1024 blue values, each plane row-major."""
    files = cifar_files("cifar10", n=1)
    batch = pickle.loads(files["data_batch_1"])
    batch[b"data"][0] = np.repeat(np.array([10, 20, 30], np.uint8), 1024)
    batch[b"data"][0, 1] = 99  # red plane, row 0, column 1
    files["data_batch_1"] = pickle.dumps(batch, protocol=2)
    write_cifar_dir(tmp_path, files)
    image = load_dataset("cifar10", root=tmp_path).images[0]
    assert image[0, 0, 1] == 99 and image[0, 0, 2] == 10 and (image[1] == 20).all() and (image[2] == 30).all()


def test_numpy1_and_protocol5_pickles(tmp_path):
    """Real archives name numpy.core.multiarray (numpy 1, protocol 2); protocol 5 uses _frombuffer."""
    files = cifar_files("cifar10", n=2, protocol=2)
    files["test_batch"] = files["test_batch"].replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in files["test_batch"]
    files["data_batch_1"] = pickle.dumps(pickle.loads(files["data_batch_1"]), protocol=5)
    write_cifar_dir(tmp_path, files)
    images, labels = expected_split(files, "cifar10", "test")
    ds = load_dataset("cifar10", root=tmp_path, split="test")
    assert torch.equal(ds.images, images) and torch.equal(ds.labels, labels)
    assert len(load_dataset("cifar10", root=tmp_path)) == 10


def test_missing_names_path_and_url(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"cifar-10-batches-py.*cifar-10-python.tar.gz.*download=True"
    ):
        load_dataset("cifar10", root=tmp_path)
    write_cifar_dir(tmp_path, cifar_files("cifar10"))
    (tmp_path / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match=r"test_batch is missing"):
        load_dataset("cifar10", root=tmp_path, split="test")


def test_corrupt_pickle_names_file(tmp_path):
    files = cifar_files("cifar10")
    files["data_batch_3"] = files["data_batch_3"][:100]
    write_cifar_dir(tmp_path, files)
    with pytest.raises(ValueError, match=r"data_batch_3: not a readable CIFAR pickle"):
        load_dataset("cifar10", root=tmp_path)


def test_foreign_pickle_cannot_run_code(tmp_path):
    files = cifar_files("cifar10")
    files["data_batch_1"] = pickle.dumps({b"data": print, b"labels": []}, protocol=2)
    write_cifar_dir(tmp_path, files)
    with pytest.raises(ValueError, match=r"_?_?builtins?_?_?\.print is not allowed"):
        load_dataset("cifar10", root=tmp_path)


def test_wrong_number_of_classes(tmp_path):
    write_cifar_dir(tmp_path, cifar_files("cifar10", label_max=99))
    with pytest.raises(ValueError, match=r"data_batch_1: labels range over \d+\.\.99 .*10 classes.*cifar100"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar100_labels_in_cifar10_folder(tmp_path):
    files = {m: pickle.dumps(pickle.loads(d), protocol=2) for m, d in cifar_files("cifar10").items()}
    batch = pickle.loads(files["data_batch_1"])
    batch[b"fine_labels"] = batch.pop(b"labels")
    files["data_batch_1"] = pickle.dumps(batch, protocol=2)
    write_cifar_dir(tmp_path, files)
    with pytest.raises(ValueError, match=r"data_batch_1.*fine_labels.*other CIFAR"):
        load_dataset("cifar10", root=tmp_path)


def test_bad_shape(tmp_path):
    files = cifar_files("cifar100")
    batch = pickle.loads(files["train"])
    batch[b"data"] = batch[b"data"][:, :3000]
    files["train"] = pickle.dumps(batch, protocol=2)
    write_cifar_dir(tmp_path, files)
    with pytest.raises(ValueError, match=r"train: data must be \(N, 3072\) uint8, found \(4, 3000\)"):
        load_dataset("cifar100", root=tmp_path)


def test_verify_md5(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"abc")
    assert md5sum(path) == "900150983cd24fb0d6963f7d28e17f72"  # RFC 1321 test suite
    verify_md5(path, "900150983CD24FB0D6963F7D28E17F72")
    with pytest.raises(ChecksumError, match=r"blob: MD5 9001.*published checksum is c58f"):
        verify_md5(path, CIFAR_SPECS["cifar10"].md5)


def test_download_checks_md5_and_never_runs_unasked(tmp_path, monkeypatch):
    calls = []

    def fake_fetch(url, filename):
        calls.append(url)
        write_cifar_tar(tmp_path / "fake.tar.gz", "cifar-10-batches-py", cifar_files("cifar10"))
        (tmp_path / "fake.tar.gz").replace(filename)

    monkeypatch.setattr("urllib.request.urlretrieve", fake_fetch)
    with pytest.raises(FileNotFoundError):
        load_dataset("cifar10", root=tmp_path / "data")
    assert calls == []
    with pytest.raises(
        ChecksumError, match=r"cifar-10-python.tar.gz.part: MD5 .* c58f30108f718f92721af3b95e74349a"
    ):
        load_dataset("cifar10", root=tmp_path / "data", download=True)
    assert calls == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert not (tmp_path / "data" / "cifar-10-python.tar.gz").exists()  # a bad download is never installed
    # An archive already present is checked too when download=True (and trusted when not asked).
    write_cifar_tar(
        tmp_path / "data" / "cifar-10-python.tar.gz", "cifar-10-batches-py", cifar_files("cifar10")
    )
    assert len(load_dataset("cifar10", root=tmp_path / "data")) == 20
    with pytest.raises(ChecksumError):
        load_dataset("cifar10", root=tmp_path / "data", download=True)
