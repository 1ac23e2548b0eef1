"""Data readers on files written here in the real formats (IDX, CIFAR pickles and archives, image folders),
safe unpickling, downloads from a local HTTP server, and the tensor loader's order, shards and augmentation."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import os
import pickle
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from factorconv.data import (
    Augment,
    DatasetError,
    ImageSet,
    TensorLoader,
    download_file,
    load_dataset,
    read_cifar,
    read_idx,
    read_image_folder,
    safe_unpickle,
    synthetic,
)
from factorconv.data import cifar as cifar_module
from factorconv.data import sets as sets_module

FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    body = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(body) if compress else body)
    return path


def write_mnist_like(root: Path, n_train: int = 20, n_test: int = 10, compress: bool = True) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{split}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
                  compress)
        write_idx(root / f"{split}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n, dtype=np.uint8), compress)


# -- IDX -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path: Path, compress: bool) -> None:
    a = np.arange(2 * 3 * 5, dtype=np.int32).reshape(2, 3, 5) - 7
    assert torch.equal(read_idx(write_idx(tmp_path / "a.idx", a, compress)), torch.from_numpy(a))
    write_mnist_like(tmp_path / "m", compress=compress)
    s = load_dataset("mnist", "test", root=tmp_path / "m")
    assert s.images.shape == (10, 1, 28, 28) and s.images.dtype == torch.uint8 and s.num_classes == 10


def test_idx_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    write_mnist_like(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz: the gzip stream is truncated"):
        load_dataset("mnist", root=tmp_path)


def test_idx_wrong_magic_and_short_body(tmp_path: Path) -> None:
    bad = tmp_path / "x.idx"
    bad.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(DatasetError, match=r"x\.idx: not an IDX file \(it starts with 504b0304"):
        read_idx(bad)
    write_idx(bad, np.zeros((4, 3), np.uint8), compress=False)
    bad.write_bytes(bad.read_bytes()[:-2])
    with pytest.raises(DatasetError, match=r"says \(4, 3\) of uint8 \(12 bytes\) but the file holds 10 bytes"):
        read_idx(bad)


def test_idx_images_and_labels_must_agree(tmp_path: Path) -> None:
    write_mnist_like(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(7, np.uint8))
    with pytest.raises(DatasetError, match=r"\(7,\) labels for 20 images"):
        load_dataset("mnist", root=tmp_path)


def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(DatasetError, match=r"data directory .*nowhere does not exist"):
        load_dataset("mnist", root=tmp_path / "nowhere")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(sets_module, "DATASETS", {**sets_module.DATASETS, "fashion-mnist": dataclasses.replace(
        sets_module.DATASETS["fashion-mnist"], system_dirs=(str(tmp_path / "system"),))})
    with pytest.raises(DatasetError) as info:
        load_dataset("fashion-mnist")
    message = str(info.value)
    assert str(tmp_path / "system") in message and "apt-get install dataset-fashion-mnist" in message
    assert "train-images-idx3-ubyte.gz" in message and "--data-dir" in message


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_the_debian_package() -> None:
    train, test = load_dataset("fashion-mnist"), load_dataset("fashion-mnist", "test")
    assert train.source == str(FASHION)  # looked up there first
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.labels.bincount().tolist() == [6000] * 10 and test.labels.bincount().tolist() == [1000] * 10
    mean, std = train.mean_std()
    assert abs(mean[0] - 0.2860) < 1e-3 and abs(std[0] - 0.3530) < 1e-3  # the set's published statistics
    assert train.classes[9] == "Ankle boot"


# -- CIFAR -----------------------------------------------------------------------------------------------


def _cifar_batch(n: int, label_key: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    entry = {"batch_label": "testing batch", label_key: rng.integers(0, 10, n).tolist(),
             "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "filenames": [f"img{i}.png" for i in range(n)]}
    return pickle.dumps(entry, protocol=2)


def write_cifar10(root: Path, n: int = 6) -> dict[str, bytes]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    files = {f"data_batch_{i}": _cifar_batch(n, "labels", i) for i in range(1, 6)}
    files["test_batch"] = _cifar_batch(n, "labels", 9)
    files["batches.meta"] = pickle.dumps({"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072},
                                         protocol=2)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def _with_checksums(monkeypatch, files: dict[str, bytes], archive: Path | None = None) -> None:
    layout = cifar_module.CIFAR["cifar10"]
    md5 = {name: hashlib.md5(data).hexdigest() for name, data in files.items()}
    patched = dataclasses.replace(
        layout, train=tuple((n, md5[n]) for n, _ in layout.train), test=(("test_batch", md5["test_batch"]),),
        meta=("batches.meta", md5["batches.meta"]),
        archive_md5=hashlib.md5(archive.read_bytes()).hexdigest() if archive else layout.archive_md5)
    monkeypatch.setitem(cifar_module.CIFAR, "cifar10", patched)


def test_cifar_directory_with_checksums(tmp_path: Path, monkeypatch) -> None:
    files = write_cifar10(tmp_path)
    with pytest.raises(DatasetError, match=r"batches\.meta: MD5 \w+ is not the published 5ff9c542"):
        read_cifar(tmp_path)  # our files are not the official ones
    _with_checksums(monkeypatch, files)
    train = read_cifar(tmp_path)
    assert train.images.shape == (30, 3, 32, 32) and train.classes[3] == "class3"
    first = pickle.loads(files["data_batch_1"], encoding="latin1")
    assert torch.equal(train.images[0], torch.from_numpy(first["data"][0]).view(3, 32, 32))  # channel-major rows
    assert train.labels[:6].tolist() == first["labels"]
    assert len(load_dataset("cifar10", "test", root=tmp_path)) == 6


def test_cifar_archive_read_in_memory(tmp_path: Path, monkeypatch) -> None:
    files = write_cifar10(tmp_path / "src")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    _with_checksums(monkeypatch, files, archive)
    direct, found = read_cifar(archive, split="test"), load_dataset("cifar10", "test", root=tmp_path)
    assert torch.equal(direct.images, found.images)
    assert not (tmp_path / "cifar-10-batches-py").exists()  # nothing was extracted


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path, monkeypatch) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"data": _Exploit(marker), "labels": [0]}, protocol=2)
    with pytest.raises(DatasetError, match=r"refusing to unpickle (posix|os|nt)\.system"):
        safe_unpickle(payload, "evil")
    files = write_cifar10(tmp_path / "set")
    _with_checksums(monkeypatch, files)
    (tmp_path / "set" / "cifar-10-batches-py" / "data_batch_2").write_bytes(payload)
    with pytest.raises(DatasetError, match=r"data_batch_2: MD5 .* is not the published"):  # checksum first ...
        read_cifar(tmp_path / "set", verify=True)
    _with_checksums(monkeypatch, {**files, "data_batch_2": payload})  # ... and even when the checksum matches
    with pytest.raises(DatasetError, match=r"refusing to unpickle"):
        read_cifar(tmp_path / "set")
    assert not marker.exists()
    with pytest.raises(DatasetError, match=r"not a readable pickle"):
        safe_unpickle(b"\x80\x02}q\x00(", "cut")


def test_cifar_structure_is_checked(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    bad = pickle.dumps({"data": np.zeros((4, 100), np.uint8), "labels": [0] * 4}, protocol=2)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(bad)
    with pytest.raises(DatasetError, match=r"'data' must be uint8 of shape \(N, 3072\)"):
        read_cifar(tmp_path, split="test", verify=False)


# -- image folders ---------------------------------------------------------------------------------------


def write_folder(root: Path, sizes: tuple[int, int] = (12, 10)) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, cls in enumerate(("cat", "dog", "emu")):
        (root / cls).mkdir(parents=True)
        for i in range(c + 2):
            Image.fromarray(rng.integers(0, 256, (*sizes, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")


def test_image_folder_reads_resizes_and_caches(tmp_path: Path, monkeypatch) -> None:
    write_folder(tmp_path / "imgs")
    s = read_image_folder(tmp_path / "imgs")
    assert s.images.shape == (9, 3, 12, 10) and s.classes == ["cat", "dog", "emu"]
    assert s.labels.tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 2]
    from PIL import Image

    with Image.open(tmp_path / "imgs" / "dog" / "1.png") as img:
        assert torch.equal(s.images[3], torch.from_numpy(np.array(img)).permute(2, 0, 1))
    small = read_image_folder(tmp_path / "imgs", size=8, cache_dir=tmp_path / "cache")
    assert small.images.shape == (9, 3, 8, 8) and len(list((tmp_path / "cache").iterdir())) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(Image, "open", no_decoding)
    again = read_image_folder(tmp_path / "imgs", size=8, cache_dir=tmp_path / "cache")
    assert torch.equal(again.images, small.images)


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"does not exist \(expected .*<class>/<image>"):
        read_image_folder(tmp_path / "none")
    write_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "cat" / "9.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"cat/9\.png: not a readable image"):
        read_image_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "cat" / "9.png").unlink()
    from PIL import Image

    Image.new("RGB", (5, 5)).save(tmp_path / "imgs" / "cat" / "9.png")
    with pytest.raises(DatasetError, match=r"different sizes.*image_size"):
        read_image_folder(tmp_path / "imgs")


def test_folder_data_set_uses_train_and_test_dirs(tmp_path: Path) -> None:
    write_folder(tmp_path / "train")
    write_folder(tmp_path / "val")
    assert len(load_dataset("folder", "test", root=tmp_path, cache=False)) == 9
    with pytest.raises(DatasetError, match=r"needs a root directory"):
        load_dataset("folder")


# -- downloads -------------------------------------------------------------------------------------------


@pytest.fixture
def http_root(tmp_path: Path):
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_download_checks_md5_and_leaves_nothing_partial(tmp_path: Path, http_root) -> None:
    served, url = http_root
    (served / "f.bin").write_bytes(b"payload")
    md5 = hashlib.md5(b"payload").hexdigest()
    with pytest.raises(DatasetError, match=r"MD5 .* is not the published 0+"):
        download_file([url + "f.bin"], tmp_path / "out" / "f.bin", "0" * 32)
    assert list((tmp_path / "out").iterdir()) == []
    with pytest.raises(DatasetError, match=r"could not download f\.bin .*put the file in"):
        download_file([url + "missing.bin"], tmp_path / "out" / "f.bin", md5)
    path = download_file([url + "missing.bin", url + "f.bin"], tmp_path / "out" / "f.bin", md5)  # next mirror
    assert path.read_bytes() == b"payload"


def test_load_dataset_downloads_when_asked(tmp_path: Path, http_root, monkeypatch) -> None:
    served, url = http_root
    write_mnist_like(served)
    files = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in served.iterdir()}
    info = dataclasses.replace(sets_module.DATASETS["mnist"], mirrors=(url,), files=files)
    monkeypatch.setattr(sets_module, "DATASETS", {**sets_module.DATASETS, "mnist": info})
    with pytest.raises(DatasetError, match="download=True"):
        load_dataset("mnist", root=tmp_path / "dl")
    s = load_dataset("mnist", root=tmp_path / "dl", download=True)
    assert len(s) == 20 and sorted(p.name for p in (tmp_path / "dl").iterdir()) == [
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


# -- loader ----------------------------------------------------------------------------------------------


def _toy(n: int, channels: int = 1, size: int = 6) -> ImageSet:
    images = torch.arange(n * channels * size * size, dtype=torch.int64).remainder(251).to(torch.uint8)
    return ImageSet(images.view(n, channels, size, size), torch.arange(n) % 3, ["a", "b", "c"])


@given(n=st.integers(5, 80), per_rank=st.integers(1, 9), world=st.integers(1, 4), epoch=st.integers(0, 3))
def test_rank_shards_are_disjoint_and_complete(n: int, per_rank: int, world: int, epoch: int) -> None:
    data = _toy(n)
    batch = per_rank * world
    single = TensorLoader(data, batch, shuffle=True, seed=3)
    loaders = [TensorLoader(data, batch, shuffle=True, seed=3, rank=r, world_size=world) for r in range(world)]
    steps = len(loaders[0])
    assert {len(ld) for ld in loaders} == {steps}
    # the same batches as one process, except a last batch too small to give every rank a sample
    assert len(single) == steps + (0 < n % batch < world)
    order = single.permutation(epoch)
    for k in range(steps):
        whole = single.global_batch(epoch, k, order)
        shards = [ld.shard(ld.global_batch(epoch, k)) for ld in loaders]
        together = torch.cat(shards)
        assert sorted(together.tolist()) == sorted(whole.tolist())  # complete, and disjoint (no repeats)
        assert len(set(together.tolist())) == len(together)
    covered = sum(len(single.global_batch(epoch, k, order)) for k in range(steps))
    assert covered == n or (n % batch and n % batch < world and covered == n - n % batch)


def test_shuffle_is_seeded_per_epoch_and_eval_is_ordered() -> None:
    data = _toy(50)
    a, b = TensorLoader(data, 8, shuffle=True, seed=1), TensorLoader(data, 8, shuffle=True, seed=1)
    assert torch.equal(a.permutation(2), b.permutation(2))
    assert not torch.equal(a.permutation(2), a.permutation(3))
    assert not torch.equal(a.permutation(2), TensorLoader(data, 8, shuffle=True, seed=2).permutation(2))
    ev = TensorLoader(data, 8, shuffle=False)
    assert torch.equal(torch.cat([y for _, y in ev]), data.labels) and len(ev) == 7


def test_augmented_batches_match_across_world_sizes_and_resume() -> None:
    data = _toy(24, channels=2, size=7)
    kwargs = {"shuffle": True, "augment": Augment(pad=2, flip=True), "seed": 5}
    single = list(TensorLoader(data, 8, **kwargs).epoch(1))
    shards = [list(TensorLoader(data, 8, rank=r, world_size=2, **kwargs).epoch(1)) for r in range(2)]
    for k, (x, y) in enumerate(single):
        assert torch.equal(x[0::2], shards[0][k][0]) and torch.equal(x[1::2], shards[1][k][0])
        assert torch.equal(y[0::2], shards[0][k][1])
    resumed = list(TensorLoader(data, 8, **kwargs).epoch(1, start=1))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(single[1:], resumed, strict=True))


def test_crop_flip_normalise_match_a_per_sample_reference() -> None:
    data = _toy(6, channels=3, size=5)
    loader = TensorLoader(data, 6, shuffle=True, augment=Augment(pad=2, flip=True), mean=[0.1, 0.2, 0.3],
                          std=[0.5, 0.25, 2.0], channels_last=True)
    shifts = torch.tensor([[0, 0], [4, 4], [1, 3], [2, 2], [3, 0], [0, 4]])
    flips = torch.tensor([True, False, True, False, False, True])
    out = loader.transform(data.images, shifts, flips)
    assert out.is_contiguous(memory_format=torch.channels_last)
    mean, std = torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1), torch.tensor([0.5, 0.25, 2.0]).view(3, 1, 1)
    for i in range(6):
        padded = F.pad(data.images[i], (2, 2, 2, 2))
        crop = padded[:, shifts[i, 0]:shifts[i, 0] + 5, shifts[i, 1]:shifts[i, 1] + 5]
        crop = crop.flip(2) if flips[i] else crop
        assert torch.allclose(out[i], (crop.float() / 255 - mean) / std, atol=1e-6)


def test_loader_rejects_bad_settings() -> None:
    data = _toy(10)
    with pytest.raises(ValueError, match=r"global batch size 9 must be a multiple of the 2 ranks"):
        TensorLoader(data, 9, shuffle=True, world_size=2)
    with pytest.raises(ValueError, match=r"rank 2, world_size 2"):
        TensorLoader(data, 8, shuffle=True, rank=2, world_size=2)
    with pytest.raises(ValueError, match=r"Augment: pad must be >= 0"):
        Augment(pad=-1)


def test_synthetic_is_deterministic_and_balanced() -> None:
    a, b = synthetic("train"), synthetic("train")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.images.shape == (2048, 1, 16, 16) and a.labels.bincount().min() > 150
    assert not torch.equal(synthetic("test").images[:10], a.images[:10])


def test_image_set_validates() -> None:
    with pytest.raises(DatasetError, match=r"labels span \[0, 5\] but there are 3 classes"):
        ImageSet(torch.zeros(6, 1, 2, 2, dtype=torch.uint8), torch.arange(6), ["a", "b", "c"])
    with pytest.raises(DatasetError, match=r"images must be uint8"):
        ImageSet(torch.zeros(6, 1, 2, 2), torch.zeros(6), ["a"])


def test_cutout_zeroes_one_square_and_leaves_the_crops_and_flips_alone() -> None:
    from factorconv.data import Augment, ImageSet, TensorLoader

    images = ImageSet(torch.full((8, 1, 12, 12), 200, dtype=torch.uint8), torch.zeros(8, dtype=torch.long), ["a"])
    plain = TensorLoader(images, 8, shuffle=True, augment=Augment(2, True), mean=[0.0], std=[1.0], seed=3)
    cut = TensorLoader(images, 8, shuffle=True, augment=Augment(2, True, 4), mean=[0.0], std=[1.0], seed=3)
    (a, _), (b, _) = next(plain.epoch(0)), next(cut.epoch(0))
    differs = a != b
    assert torch.equal(b[~differs], a[~differs]) and bool((b[differs] == 0).all())  # only zeroed pixels differ
    per_image = differs.flatten(1).sum(1)
    assert bool((per_image <= 16).all()) and bool((per_image > 0).any())  # at most a 4x4 square each
    with pytest.raises(ValueError, match="cutout must be >= 0"):
        Augment(0, False, -1)
