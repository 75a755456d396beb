"""Tests for cnnlib.data on small generated data sets (plus one test on the real CIFAR-10)."""

from __future__ import annotations

import io
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlib import data
from cnnlib.data import (
    CIFAR10,
    CLASSES,
    DataError,
    DeviceLoader,
    augment,
    data_root,
    load_cifar10,
)
from cnnlib.paths import user_cache

N_TRAIN, N_TEST = 3, 2  # images per class in the generated data sets
NAMES = {"train": ["10.png", "2.png", "1.png"], "test": ["7.png", "03.png"]}
ORDER = {"train": ["1.png", "2.png", "10.png"], "test": ["03.png", "7.png"]}  # natural order


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def write_tar(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


class Mini:
    """A generated data set: a plain image tree and a tarball of it, with expected tensors."""

    def __init__(self, tmp: Path):
        rng = np.random.default_rng(0)
        self.images = {(s, c, n): rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                       for s in NAMES for c in CLASSES for n in NAMES[s]}
        self.tree = tmp / "tree"
        self.tar_root = tmp / "tarroot"
        self.tar_root.mkdir()
        self.tarball = self.tar_root / "mini.tar.gz"
        self.write()

    def write(self) -> None:
        for (s, c, n), arr in self.images.items():
            (self.tree / s / c).mkdir(parents=True, exist_ok=True)
            (self.tree / s / c / n).write_bytes(png_bytes(arr))
        write_tar(self.tarball, {f"mini/{s}/{c}/{n}": png_bytes(a)
                                 for (s, c, n), a in self.images.items()})

    def expected(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        xs = [self.images[split, c, n] for c in CLASSES for n in ORDER[split]]
        x = torch.from_numpy(np.stack(xs).transpose(0, 3, 1, 2).copy())
        y = torch.arange(len(CLASSES)).repeat_interleave(len(ORDER[split]))
        return x, y


@pytest.fixture
def mini(tmp_path, monkeypatch) -> Mini:
    monkeypatch.setenv("CNNLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CNNLIB_DOWNLOAD", "0")  # tests never reach the network
    return Mini(tmp_path)


def assert_matches(ds: CIFAR10, mini: Mini) -> None:
    for split in ("train", "test"):
        x, y = getattr(ds, f"{split}_x"), getattr(ds, f"{split}_y")
        ex, ey = mini.expected(split)
        assert x.dtype == torch.uint8 and y.dtype == torch.int64
        assert x.shape == ex.shape and y.shape == ey.shape
        assert torch.equal(y, ey) and torch.equal(x, ex)


# ---- loading and caching -------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["tarball", "tree"])
def test_load_generated(mini, kind):
    root = mini.tar_root if kind == "tarball" else mini.tree
    ds = load_cifar10(root, allow_subset=True)
    assert_matches(ds, mini)
    assert ds.source == ("tarball mini.tar.gz" if kind == "tarball" else "image folder tree")
    ex = mini.expected("train")[0].double() / 255
    assert np.allclose(ds.mean, ex.mean((0, 2, 3)).tolist())
    assert np.allclose(ds.std, ex.std((0, 2, 3), correction=0).tolist())


def test_cache_reused(mini, monkeypatch):
    first = load_cifar10(mini.tar_root, allow_subset=True)
    assert len(list(user_cache().glob("*.npz"))) == 1

    def boom(*args):
        raise AssertionError("decoder called although a cache exists")

    monkeypatch.setattr(data, "_decode", boom)
    second = load_cifar10(mini.tar_root, allow_subset=True)
    assert second.source == "cache of tarball mini.tar.gz"
    for k in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(first, k), getattr(second, k))
    assert not list(user_cache().glob("*.tmp"))  # no leftovers from the atomic write


def test_cache_invalidated_when_source_changes(mini):
    for root in (mini.tar_root, mini.tree):
        load_cifar10(root, allow_subset=True)
        assert load_cifar10(root, allow_subset=True).source.startswith("cache of")
    mini.images["train", "cat", "2.png"] = np.full((32, 32, 3), 7, np.uint8)
    time.sleep(0.01)  # distinct mtimes even on coarse-clock file systems
    mini.write()
    for root in (mini.tar_root, mini.tree):
        ds = load_cifar10(root, allow_subset=True)
        assert not ds.source.startswith("cache of")
        assert_matches(ds, mini)


def test_corrupt_cache_rebuilt(mini):
    load_cifar10(mini.tree, allow_subset=True)
    (cached,) = user_cache().glob("*.npz")
    cached.write_bytes(cached.read_bytes()[:1000])  # truncated zip
    with pytest.warns(UserWarning, match="corrupt"):
        ds = load_cifar10(mini.tree, allow_subset=True)
    assert ds.source == "image folder tree"
    assert_matches(ds, mini)
    # wrong shapes are detected too
    np.savez(cached, train_x=np.zeros((2, 32, 32, 3), np.uint8), train_y=np.zeros(2, np.int64),
             test_x=np.zeros((2, 3, 32, 32), np.uint8), test_y=np.zeros(2, np.int64))
    with pytest.warns(UserWarning, match="corrupt"):
        assert_matches(load_cifar10(mini.tree, allow_subset=True), mini)
    assert load_cifar10(mini.tree, allow_subset=True).source.startswith("cache of")


def test_cache_false_writes_nothing(mini):
    assert_matches(load_cifar10(mini.tree, cache=False, allow_subset=True), mini)
    assert not user_cache().exists()


def test_subset(mini):
    ds = load_cifar10(mini.tree, allow_subset=True)
    sub = ds.subset(20, 10)
    ex, ey = mini.expected("train")
    keep = torch.tensor([i for i in range(len(ey)) if i % N_TRAIN < 2])  # first 2 per class
    assert torch.equal(sub.train_x, ex[keep]) and torch.equal(sub.train_y, ey[keep])
    assert torch.equal(sub.test_y, torch.arange(10))
    for bad in [(15, 10), (0, 10), (40, 10), (20, 30)]:
        with pytest.raises(DataError, match="n_t"):
            ds.subset(*bad)


def fake_batches(root: Path, n_per_batch: int = 20) -> dict[str, np.ndarray]:
    """Write a tiny cifar-10-batches-py folder; return the NCHW arrays it holds."""
    rng = np.random.default_rng(5)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    xs, ys = {"train": [], "test": []}, {"train": [], "test": []}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        split = "test" if name == "test_batch" else "train"
        x = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        y = [i % 10 for i in range(n_per_batch)]
        (folder / name).write_bytes(pickle.dumps({"data": x, "labels": y}))
        xs[split].append(x.reshape(-1, 3, 32, 32))
        ys[split] += y
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CLASSES)}))
    return {f"{s}_x": np.concatenate(xs[s]) for s in xs} | {f"{s}_y": np.array(ys[s]) for s in ys}


@pytest.fixture
def no_md5(monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)  # fakes have no md5
    return tv_cifar


def test_official_batches(mini, tmp_path, no_md5):
    expected = fake_batches(tmp_path / "official")
    ds = load_cifar10(tmp_path / "official", allow_subset=True)
    assert ds.source == "official cifar-10-batches-py"
    for k, v in expected.items():
        assert torch.equal(getattr(ds, k), torch.from_numpy(v).to(getattr(ds, k).dtype))
    assert load_cifar10(tmp_path / "official", allow_subset=True).source.startswith("cache of")
    (tmp_path / "official" / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="incomplete or corrupt"):
        load_cifar10(tmp_path / "official", allow_subset=True)


def test_download(mini, tmp_path, monkeypatch, no_md5):
    calls = []

    def fake_download(self):
        calls.append(self.root)
        fake_batches(Path(self.root))

    monkeypatch.setattr(no_md5.CIFAR10, "download", fake_download)
    monkeypatch.setenv("CNNLIB_DOWNLOAD", "1")
    ds = load_cifar10(tmp_path / "dl", allow_subset=True)
    assert ds.source == "official cifar-10-batches-py" and len(calls) == 1
    load_cifar10(tmp_path / "dl", allow_subset=True)  # present now: no second download
    assert len(calls) == 1

    def offline(self):
        raise OSError("network unreachable")

    monkeypatch.setattr(no_md5.CIFAR10, "download", offline)
    with pytest.raises(DataError, match="Downloading CIFAR-10 .*network unreachable"):
        load_cifar10(tmp_path / "dl2")
    with pytest.raises(DataError, match="No CIFAR-10 data found"):
        load_cifar10(tmp_path / "dl2", download=False)


# ---- bad input -----------------------------------------------------------------------------

def test_empty_root(mini, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:
        load_cifar10(tmp_path / "empty")
    msg = str(e.value)
    lines = msg.splitlines()
    assert len(lines) == 2 and all(len(line) < 160 for line in lines), msg  # what is missing; how to provide it
    assert str(tmp_path / "empty") in lines[0] and "CNNLIB_DOWNLOAD=0" in lines[0]
    for words in ("cifar10-jpg.tar.gz", "cifar-10-python.tar.gz", "CNNLIB_DATA", "unset CNNLIB_DOWNLOAD"):
        assert words in lines[1]
    assert "set unset" not in msg
    with pytest.raises(DataError, match="missing"):
        load_cifar10(tmp_path / "nowhere")
    with pytest.raises(DataError, match="(?s)off \\(download=False\\).*pass download=True"):
        load_cifar10(tmp_path / "empty", download=False)


def test_an_official_archive_needs_downloading_on_to_be_unpacked(mini, tmp_path):
    (tmp_path / "off").mkdir()
    (tmp_path / "off" / "cifar-10-python.tar.gz").write_bytes(b"")
    with pytest.raises(DataError) as e:
        load_cifar10(tmp_path / "off")
    lines = str(e.value).splitlines()
    assert len(lines) == 2 and "cifar-10-python.tar.gz is there" in lines[0]
    assert lines[1].startswith("Unset CNNLIB_DOWNLOAD to unpack it") and "cifar10-jpg.tar.gz" in lines[1]


def test_a_file_as_the_data_root(mini, tmp_path):
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(DataError, match="(?s)notes.txt is neither a folder nor a .tar.gz.*CNNLIB_DATA"):
        load_cifar10(tmp_path / "notes.txt")


def test_corrupt_tarball(mini, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    blob = mini.tarball.read_bytes()
    for content in (np.random.default_rng(1).bytes(5000), blob[: len(blob) // 2]):
        (bad / "x.tar.gz").write_bytes(content)
        with pytest.raises(DataError, match="x.tar.gz.*truncated or not a gzip tar"):
            load_cifar10(bad, allow_subset=True)


def test_undecodable_image(mini):
    (mini.tree / "train" / "dog" / "2.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"Cannot decode image .*dog.2\.png"):
        load_cifar10(mini.tree, allow_subset=True)


def test_unknown_and_missing_class(mini, tmp_path):
    (mini.tree / "train" / "unicorn").mkdir()
    with pytest.raises(DataError, match="'unicorn'.*airplane, automobile"):
        load_cifar10(mini.tree, allow_subset=True)
    files = {"train/unicorn/0.png": png_bytes(np.zeros((32, 32, 3), np.uint8))}
    write_tar(tmp_path / "u.tgz", files)
    with pytest.raises(DataError, match="'unicorn'"):
        load_cifar10(tmp_path / "u.tgz", allow_subset=True)
    (mini.tree / "train" / "unicorn").rmdir()
    for f in (mini.tree / "test" / "truck").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="'truck' has no test images"):
        load_cifar10(mini.tree, allow_subset=True)


@pytest.mark.parametrize("shape", [(28, 28, 3), (32, 32), (32, 32, 4)])
def test_wrong_image_size_or_mode(mini, shape):
    (mini.tree / "test" / "ship" / "7.png").write_bytes(png_bytes(np.zeros(shape, np.uint8)))
    with pytest.raises(DataError, match=r"ship.7\.png.*must be 32x32 RGB"):
        load_cifar10(mini.tree, allow_subset=True)


def test_wrong_counts(mini):
    with pytest.raises(DataError, match="'airplane' has 3 train images.*expected 5000"):
        load_cifar10(mini.tree)
    ds = load_cifar10(mini.tree, allow_subset=True)  # fine from the cache written above
    assert ds.source.startswith("cache of")


def test_unwritable_cache(mini, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("a regular file: nothing can be created under it")
    monkeypatch.setenv("CNNLIB_CACHE", str(tmp_path / "file" / "sub"))
    with pytest.raises(DataError, match=r"file.sub.*CNNLIB_CACHE.*cache=False"):
        load_cifar10(mini.tree, allow_subset=True)
    assert_matches(load_cifar10(mini.tree, cache=False, allow_subset=True), mini)


# ---- augmentation and batching -------------------------------------------------------------

def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_augment_is_crop_and_flip():
    x = torch.randint(0, 256, (16, 3, 32, 32), generator=gen(0), dtype=torch.uint8)
    out = augment(x, gen(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert torch.equal(out, augment(x, gen(1)))
    assert not torch.equal(out, augment(x, gen(2)))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    moved = flipped = 0
    for img, src in zip(out, padded, strict=True):  # each output is one crop, maybe flipped
        crops = {(dy, dx, f): src[:, dy:dy + 32, dx:dx + 32] for dy in range(9)
                 for dx in range(9) for f in (False, True)}
        hits = [k for k, c in crops.items() if torch.equal(img, c.flip(2) if k[2] else c)]
        assert hits, "augmented image is not a crop/flip of the padded original"
        moved += (hits[0][:2] != (4, 4)) or hits[0][2]
        flipped += hits[0][2]
    assert moved >= 8 and 1 <= flipped <= 15


def labelled(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(n) % 10
    x = (y * 20 + 10).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, 32, 32).contiguous()
    return x, y


def test_device_loader_train():
    x, y = labelled(103)
    loader = DeviceLoader(x, y, batch_size=10, mean=(0, 0, 0), std=(1, 1, 1), train=True)
    assert len(loader) == 10  # drop_last by default for training
    batches = list(loader)
    assert len(batches) == 10
    seen = torch.cat([yb for _, yb in batches])
    assert len(seen.unique()) == 10 and not torch.equal(seen, y[:100])  # shuffled
    for xb, yb in batches:
        assert xb.dtype == torch.float32 and xb.shape == (10, 3, 32, 32)
        assert yb.dtype == torch.int64
        center = (xb[:, 0, 16, 16] * 255).round().long()
        assert torch.equal(center, yb * 20 + 10)  # label still paired with its image
        assert (xb == 0).any()  # zero padding shows up somewhere
    same = [b[1] for b in loader]
    assert all(torch.equal(a[1], b) for a, b in zip(batches, same, strict=True))
    loader.set_epoch(1)
    epoch1 = [b for b in loader]
    assert not torch.equal(torch.cat([b[1] for b in epoch1]), seen)
    resumed = DeviceLoader(x, y, batch_size=10, mean=(0, 0, 0), std=(1, 1, 1), train=True)
    resumed.set_epoch(1)  # epoch 1 replays without having run epoch 0
    for (xa, ya), (xb, yb) in zip(epoch1, resumed, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert len(DeviceLoader(x, y, batch_size=10, mean=(0, 0, 0), std=(1, 1, 1), train=True,
                            drop_last=False)) == 11


def test_device_loader_eval_and_normalization():
    x = torch.randint(0, 256, (50, 3, 32, 32), generator=gen(3), dtype=torch.uint8)
    y = torch.arange(50) % 10
    ds = CIFAR10(x, y, x[:10], y[:10], source="random")
    loader = DeviceLoader(x, y, batch_size=16, mean=ds.mean, std=ds.std, train=False,
                          channels_last=True)
    assert len(loader) == 4  # last partial batch kept for evaluation
    first, second = list(loader), list(loader)
    xs = torch.cat([b[0] for b in first])
    assert torch.equal(torch.cat([b[1] for b in first]), y)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, second, strict=True))
    assert first[0][0].is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(xs.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(xs.std((0, 2, 3), correction=0), torch.ones(3), atol=1e-4)
    m = torch.tensor(ds.mean).view(1, 3, 1, 1)
    s = torch.tensor(ds.std).view(1, 3, 1, 1)
    assert torch.allclose(xs, (x / 255 - m) / s, atol=1e-5)


@pytest.mark.parametrize("bs", [0, -4])
def test_device_loader_bad_batch_size(bs):
    x, y = labelled(10)
    with pytest.raises(ValueError, match="batch_size"):
        DeviceLoader(x, y, batch_size=bs, mean=(0, 0, 0), std=(1, 1, 1), train=False)


# ---- the real data set ---------------------------------------------------------------------

def _real_data_present() -> bool:
    root = data_root()
    return root.is_dir() and (
        (root / "cifar-10-batches-py").is_dir()
        or ((root / "train").is_dir() and (root / "test").is_dir())
        or any(p.name.endswith((".tar.gz", ".tgz")) and p.name != "cifar-10-python.tar.gz"
               for p in root.iterdir()))


@pytest.mark.skipif(not _real_data_present(),
                    reason="no CIFAR-10 at data_root() ($CNNLIB_DATA or ./data): set CNNLIB_DATA "
                           "to a folder with cifar-10-batches-py, the image tree or the .tar.gz")
def test_real_cifar10():
    load_cifar10()  # decodes once (~10-40 s) unless the default cache already holds it
    start = time.perf_counter()
    ds = load_cifar10()
    elapsed = time.perf_counter() - start
    assert ds.source.startswith("cache of"), ds.source
    assert elapsed < 2, f"cached load took {elapsed:.2f} s"
    assert ds.train_x.shape == (50000, 3, 32, 32) and ds.test_x.shape == (10000, 3, 32, 32)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert torch.bincount(ds.train_y).tolist() == [5000] * 10
    assert torch.bincount(ds.test_y).tolist() == [1000] * 10
    assert all(0.4 < m < 0.52 for m in ds.mean) and all(0.23 < s < 0.27 for s in ds.std)
