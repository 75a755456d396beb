"""CIFAR-10 loading, caching and on-device batching.

``load_cifar10`` finds CIFAR-10 under a data root (``$CNNLIB_DATA`` or ``./data``) as the official
``cifar-10-batches-py`` folder (downloadable through torchvision), an image tree ``{train,test}/<class>/*.png|jpg``, or
a ``.tar.gz`` of that tree read without extraction. The decoded uint8 arrays are cached as an uncompressed ``.npz`` in
``user_cache()``, keyed by the source's identity, so later loads take well under a second. ``DeviceLoader`` batches one
split on the training device with seeded whole-batch crop+flip (``augment``) and normalization: no DataLoader, no
per-image PIL work. Every user-facing data problem raises ``DataError``.
"""

from __future__ import annotations

import hashlib
import io
import math
import operator
import os
import re
import tarfile
import tempfile
import warnings
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .paths import atomic_write, project_path, user_cache

CLASSES: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer",
                            "dog", "frog", "horse", "ship", "truck")
SPLITS = ("train", "test")
EXPECTED = {"train": 5000, "test": 1000}  # images per class in the full data set
BATCHES = "cifar-10-batches-py"
OFFICIAL_ARCHIVE = "cifar-10-python.tar.gz"  # torchvision's download; holds batches, not a tree
IMAGE_EXTS = (".png", ".jpg", ".jpeg")
TAR_EXTS = (".tar.gz", ".tgz")
_CACHE_VERSION = 1  # bump when the cache layout changes
_KEYS = ("train_x", "train_y", "test_x", "test_y")


class DataError(RuntimeError):
    """A problem with the CIFAR-10 data on disk or its cache; the message says how to fix it."""


@dataclass(frozen=True, eq=False)
class CIFAR10:
    """Both splits as CPU tensors: images uint8 (N, 3, 32, 32), labels int64 (N,)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str

    @cached_property
    def _stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        # Chunked float64 sums: converting all of train_x to float at once would take 600 MB.
        s = torch.zeros(3, dtype=torch.float64)
        ss = torch.zeros(3, dtype=torch.float64)
        for chunk in self.train_x.split(1000):
            f = chunk.to(torch.float64) / 255
            s += f.sum((0, 2, 3))
            ss += f.square().sum((0, 2, 3))
        n = self.train_x.numel() / 3
        mean = s / n
        std = (ss / n - mean.square()).clamp_min(0).sqrt()
        return tuple(mean.tolist()), tuple(std.tolist())

    @property
    def mean(self) -> tuple[float, float, float]:
        """Per-channel mean of train_x / 255."""
        return self._stats[0]

    @property
    def std(self) -> tuple[float, float, float]:
        """Per-channel (population) standard deviation of train_x / 255."""
        return self._stats[1]

    def subset(self, n_train: int, n_test: int) -> CIFAR10:
        """First n/10 images of each class, in data-set order (deterministic, balanced)."""
        tx, ty = _balanced(self.train_x, self.train_y, n_train, "train")
        ex, ey = _balanced(self.test_x, self.test_y, n_test, "test")
        return CIFAR10(tx, ty, ex, ey, source=f"{self.source}, subset {n_train}/{n_test}")

    def holdout(self, n: int) -> CIFAR10:
        """The last n/10 training images of each class as the evaluation split (in place of the
        test images, which are left out), the other training images as the training split."""
        if n <= 0 or n % 10 or n // 10 >= int(torch.bincount(self.train_y).min()):
            raise DataError(f"holdout: n={n} must be a positive multiple of 10, below the training images")
        held = torch.zeros(len(self.train_y), dtype=torch.bool)
        for c in range(len(CLASSES)):
            held[(self.train_y == c).nonzero().flatten()[-(n // 10):]] = True
        return CIFAR10(self.train_x[~held], self.train_y[~held], self.train_x[held], self.train_y[held],
                       source=f"{self.source}, {n} training images held out for validation")  # fmt: skip


def _balanced(x: torch.Tensor, y: torch.Tensor, n: int, split: str):
    try:
        n = operator.index(n)
    except TypeError:
        n = -1
    if n <= 0 or n % 10:
        raise DataError(f"subset: n_{split}={n} must be a positive multiple of 10 "
                        "(n/10 images are taken from each class).")
    counts = torch.bincount(y, minlength=len(CLASSES))
    if n // 10 > counts.min():
        raise DataError(f"subset: n_{split}={n} needs {n // 10} {split} images per class, but "
                        f"class '{CLASSES[int(counts.argmin())]}' has only {int(counts.min())}; "
                        f"use n_{split} <= {10 * int(counts.min())}.")
    idx = torch.cat([(y == c).nonzero().flatten()[: n // 10] for c in range(len(CLASSES))])
    idx = idx.sort().values  # keep data-set order
    return x[idx], y[idx]


def data_root() -> Path:
    """Where CIFAR-10 is looked for: $CNNLIB_DATA, else the project's data/ folder."""
    return project_path("CNNLIB_DATA", "data")


def _natkey(name: str) -> tuple:
    # "2.png" < "10.png": digit runs compare as numbers (they sit at the odd positions).
    return tuple(int(p) if i % 2 else p for i, p in enumerate(re.split(r"(\d+)", name)))


def _class_index(name: str, where: str) -> int:
    if name not in CLASSES:
        raise DataError(f"Unknown class folder '{name}' in {where}. Class folders must be "
                        f"named exactly: {', '.join(CLASSES)}. Rename or remove it.")
    return CLASSES.index(name)


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTS)


def _decode(data: bytes, name: str) -> np.ndarray:
    """Encoded PNG/JPEG bytes -> uint8 (32, 32, 3), or DataError naming the file."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            size, mode = im.size, im.mode
            arr = np.asarray(im)
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... on bad files
        raise DataError(f"Cannot decode image {name} ({e}). The file is damaged or not a "
                        "PNG/JPEG: replace it, or re-create the data set.") from e
    if size != (32, 32) or mode != "RGB":
        raise DataError(f"Image {name} is {size[0]}x{size[1]} {mode}; CIFAR-10 images must be "
                        "32x32 RGB. Convert or remove it.")
    return arr


def _find_source(root: Path) -> tuple[str, Path] | None:
    """(kind, path) of the first raw source under root: 'batches', 'tree' or 'tarball'."""
    if root.is_file() and root.name.endswith(TAR_EXTS):
        return "tarball", root
    if (root / BATCHES).is_dir():
        return "batches", root / BATCHES
    if any((root / s).is_dir() for s in SPLITS):
        return "tree", root
    tars = sorted(p for p in root.glob("*") if p.name.endswith(TAR_EXTS)
                  and p.name != OFFICIAL_ARCHIVE and p.is_file()) if root.is_dir() else []
    if len(tars) > 1:
        raise DataError(f"Several archives in {root}: {', '.join(p.name for p in tars)}. Keep "
                        "exactly one CIFAR-10 .tar.gz there, or pass its path as root.")
    return ("tarball", tars[0]) if tars else None


def _tree_files(root: Path) -> list[tuple[str, int, Path]]:
    files = []
    for split in SPLITS:
        if not (root / split).is_dir():
            continue  # reported by the count check
        for d in (root / split).iterdir():
            if d.is_dir() and not d.name.startswith("."):
                ci = _class_index(d.name, str(root / split))
                files += [(split, ci, f) for f in d.iterdir() if _is_image(f.name)]
    return files


def _identity(kind: str, path: Path) -> str:
    """Hash of the source's resolved path and its files' sizes and mtimes: the cache key."""
    if kind == "tree":
        files = sorted(f for _, _, f in _tree_files(path))
    elif kind == "batches":
        files = sorted(f for f in path.iterdir() if f.is_file())
    else:
        files = [path]
    h = hashlib.sha256(f"v{_CACHE_VERSION}|{kind}|{path.resolve()}".encode())
    for f in files:
        st = f.stat()
        h.update(f"|{f.relative_to(path)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _assemble(items: dict[str, list]) -> dict[str, np.ndarray]:
    """Per split, (class, name key, name, HWC image) rows -> sorted NCHW arrays + labels."""
    out = {}
    for split in SPLITS:
        rows = sorted(items[split], key=lambda r: r[:3])
        x = np.stack([r[3] for r in rows]) if rows else np.zeros((0, 32, 32, 3), np.uint8)
        out[f"{split}_x"] = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        out[f"{split}_y"] = np.array([r[0] for r in rows], dtype=np.int64)
    return out


def _read_tree(root: Path) -> dict[str, np.ndarray]:
    items: dict[str, list] = {s: [] for s in SPLITS}
    for split, ci, f in tqdm(_tree_files(root), desc=f"decoding {root.name}", unit="img",
                             leave=False, disable=None):
        try:
            data = f.read_bytes()
        except OSError as e:
            raise DataError(f"Cannot read image {f} ({e}); check its permissions.") from e
        items[split].append((ci, _natkey(f.name), f.name, _decode(data, str(f))))
    return _assemble(items)


def _read_tarball(path: Path) -> dict[str, np.ndarray]:
    items: dict[str, list] = {s: [] for s in SPLITS}
    try:
        with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r:gz") as tar, \
                tqdm(total=path.stat().st_size, desc=f"decoding {path.name}", unit="B",
                     unit_scale=True, leave=False, disable=None) as bar:
            for m in tar:  # streams through the archive once, in archive order
                bar.update(raw.tell() - bar.n)
                parts = m.name.removeprefix("./").split("/")
                parts = parts[1:] if len(parts) == 4 else parts  # optional top-level folder
                if not (m.isfile() and len(parts) == 3 and parts[0] in SPLITS
                        and _is_image(parts[2])):
                    continue
                split, cls, name = parts
                ci = _class_index(cls, f"{path.name} ({split}/)")
                where = f"{path.name}:{m.name}"
                items[split].append((ci, _natkey(name), name,
                                     _decode(tar.extractfile(m).read(), where)))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"Cannot read archive {path} ({type(e).__name__}: {e}). It is "
                        "truncated or not a gzip tar: copy or download it again.") from e
    return _assemble(items)


def _read_batches(folder: Path) -> dict[str, np.ndarray]:
    from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

    out = {}
    for split in SPLITS:
        try:
            ds = TorchvisionCIFAR10(str(folder.parent), train=split == "train", download=False)
        except Exception as e:
            raise DataError(f"The official CIFAR-10 folder {folder} is incomplete or corrupt "
                            f"({e}). Delete it and download again (CNNLIB_DOWNLOAD=1).") from e
        out[f"{split}_x"] = np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))  # NHWC -> NCHW
        out[f"{split}_y"] = np.asarray(ds.targets, dtype=np.int64)
    return out


def _download(root: Path) -> None:
    from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

    try:
        root.mkdir(parents=True, exist_ok=True)
        TorchvisionCIFAR10(str(root), train=True, download=True)
    except Exception as e:
        raise DataError(f"Downloading CIFAR-10 into {root} failed ({e}). Without internet, put the "
                        f"JPEG tarball cifar10-jpg.tar.gz (or the official {OFFICIAL_ARCHIVE}) in {root} "
                        "or point CNNLIB_DATA at it; CNNLIB_DOWNLOAD=0 turns downloading off.") from e


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in _KEYS}
        for s in SPLITS:
            x, y = arrays[f"{s}_x"], arrays[f"{s}_y"]
            if (x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (3, 32, 32)
                    or y.dtype != np.int64 or y.shape != (len(x),)
                    or (len(y) and (y.min() < 0 or y.max() >= len(CLASSES)))):
                raise ValueError(f"unexpected {s} arrays {x.dtype}{x.shape}, {y.dtype}{y.shape}")
    except Exception as e:
        warnings.warn(f"Ignoring corrupt CIFAR-10 cache {path} ({e}); decoding the source again.",
                      stacklevel=3)
        return None
    return arrays


@contextmanager
def _cache_errors(folder: Path) -> Iterator[None]:
    """An OSError writing the cache in ``folder`` as a DataError that says what to do."""
    try:
        yield
    except OSError as e:
        raise DataError(f"Cannot write the CIFAR-10 cache in {folder} ({e}). Point CNNLIB_CACHE at a writable folder, "
                        "or pass cache=False to skip caching (every load then decodes the images again).") from e


def _check_counts(ds: CIFAR10, allow_subset: bool, where: str) -> None:
    for split, y in (("train", ds.train_y), ("test", ds.test_y)):
        if y.numel() == 0:
            raise DataError(f"No {split} images in {where}: expected {split}/<class>/*.jpg "
                            f"(or .png) for the classes {', '.join(CLASSES)}.")
        for ci, n in enumerate(torch.bincount(y, minlength=len(CLASSES)).tolist()):
            if n == 0:
                raise DataError(f"Class '{CLASSES[ci]}' has no {split} images in {where}; every "
                                f"class must be present in both splits: add {split}/"
                                f"{CLASSES[ci]}/*.jpg (or .png).")
            if not allow_subset and n != EXPECTED[split]:
                raise DataError(f"Class '{CLASSES[ci]}' has {n} {split} images in {where}, "
                                f"expected {EXPECTED[split]}. The copy is incomplete or has "
                                "extra files: repair it, or pass allow_subset=True to use a "
                                "smaller copy on purpose.")


def _no_data(root: Path, off: str, allow: str) -> str:
    """Two short lines: what is missing, and the ways to provide it."""
    if root.exists() and not root.is_dir():
        return (f"No CIFAR-10 data found: {root} is neither a folder nor a .tar.gz.\n"
                f"Point CNNLIB_DATA at a folder holding cifar10-jpg.tar.gz "
                f"(or {OFFICIAL_ARCHIVE}, with downloading on).")
    where = f"{root}" if root.is_dir() else f"{root} (missing)"
    if (root / OFFICIAL_ARCHIVE).is_file():  # only the download step unpacks it
        return (f"No CIFAR-10 data found in {where}: {OFFICIAL_ARCHIVE} is there, but only downloading "
                f"unpacks it (off: {off}).\n"
                f"{allow[0].upper() + allow[1:]} to unpack it (no network needed), or put cifar10-jpg.tar.gz there.")
    return (f"No CIFAR-10 data found in {where}, and downloading is off ({off}).\n"
            f"Put cifar10-jpg.tar.gz there or point CNNLIB_DATA at its folder; "
            f"or {allow} to download (or unpack) {OFFICIAL_ARCHIVE} there.")


def load_cifar10(root: str | Path | None = None, *, download: bool | None = None,
                 cache: bool = True, allow_subset: bool = False) -> CIFAR10:
    """Load CIFAR-10 from the decoded cache, official batches, an image tree or a tarball.

    download=None (the default) downloads torchvision's official archive (checksum verified, with a progress bar) when
    root holds no data at all, unless $CNNLIB_DOWNLOAD=0; download=True also downloads when root holds another source
    but not the official batches; download=False never does. allow_subset=True accepts any count >= 1 per class and
    split.
    """
    root = data_root() if root is None else Path(root).expanduser()
    src = _find_source(root)
    from_env = download is None
    if download is None:
        allowed = os.environ.get("CNNLIB_DOWNLOAD", "1").strip().lower() not in ("0", "false", "no")
        download = allowed and src is None
    if download and (src is None or src[0] != "batches") and not root.is_file():
        _download(root)
        src = ("batches", root / BATCHES)
    if src is None:
        raise DataError(_no_data(root, "CNNLIB_DOWNLOAD=0" if from_env else "download=False",
                                 "unset CNNLIB_DOWNLOAD" if from_env else "pass download=True"))
    kind, path = src
    name = path.resolve().name
    label = {"batches": f"official {BATCHES}", "tree": f"image folder {name}",
             "tarball": f"tarball {name}"}[kind]
    cpath = user_cache() / f"cifar10-{_identity(kind, path)}.npz" if cache else None
    arrays = _read_cache(cpath) if cpath else None
    source = f"cache of {label}" if arrays is not None else label
    if arrays is None:
        if cpath:
            with _cache_errors(cpath.parent):  # fail before a long decode, not after
                cpath.parent.mkdir(parents=True, exist_ok=True)
                tempfile.TemporaryFile(dir=cpath.parent).close()
        arrays = {"batches": _read_batches, "tree": _read_tree, "tarball": _read_tarball}[kind](path)
        if cpath:
            with _cache_errors(cpath.parent):  # atomic: never a half cache
                atomic_write(cpath, lambda f: np.savez(f, **arrays))  # uncompressed: loads in a fraction of a second
    ds = CIFAR10(**{k: torch.from_numpy(arrays[k]) for k in _KEYS}, source=source)
    _check_counts(ds, allow_subset, label)
    return ds


def _crop_flip_draws(b: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The random numbers ``augment`` draws for a batch of ``b``: crop offsets in the padded image
    (rows, columns) and whether to flip."""
    gdev = generator.device
    dy = torch.randint(0, 9, (b,), generator=generator, device=gdev)
    dx = torch.randint(0, 9, (b,), generator=generator, device=gdev)
    flip = (torch.rand(b, generator=generator, device=gdev) < 0.5).long()
    return dy, dx, flip


def augment(x_uint8: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 4-pixel-padded crop + horizontal flip of a uint8 batch (B, C, H, W), same shape.

    Random numbers come from ``generator`` (on its own device, normally CPU) and are moved to the
    batch's device, so CPU and CUDA make the same choices. One gather does crop and flip.
    """
    b, c, h, w = x_uint8.shape
    dev, gdev = x_uint8.device, generator.device
    dy, dx, flip = _crop_flip_draws(b, generator)
    if dev != gdev:  # one small copy; pinned, so it does not stall the GPU's queue
        packed = torch.stack([dy, dx, flip])
        packed = packed.pin_memory() if dev.type == "cuda" else packed
        dy, dx, flip = packed.to(dev, non_blocking=True).unbind(0)
    flip = flip.bool()
    padded = F.pad(x_uint8, (4, 4, 4, 4))  # zeros, (B, C, H+8, W+8)
    rows = dy[:, None] + torch.arange(h, device=dev)  # (B, H)
    cols = dx[:, None] + torch.arange(w, device=dev)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # flipping = reading columns backwards
    return padded[torch.arange(b, device=dev)[:, None, None, None],
                  torch.arange(c, device=dev)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


class DeviceLoader:
    """Iterate (images, labels) batches of one split held on `device` as uint8."""

    def __init__(self, x_uint8: torch.Tensor, y: torch.Tensor, *, batch_size: int,
                 mean: Sequence[float], std: Sequence[float], train: bool,
                 device: str | torch.device = "cpu", seed: int = 0,
                 channels_last: bool = False, drop_last: bool | None = None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if x_uint8.dtype != torch.uint8 or x_uint8.ndim != 4 or len(x_uint8) != len(y):
            raise ValueError(f"expected uint8 images (N, C, H, W) and N labels, got "
                             f"{x_uint8.dtype} {tuple(x_uint8.shape)} and {tuple(y.shape)}")
        self.device = torch.device(device)
        self.x = x_uint8.to(self.device)
        self.y = y.to(self.device, torch.int64)
        # (x/255 - mean)/std == (x - 255 mean) / (255 std): one subtract and one divide
        def per_channel(v: Sequence[float]) -> torch.Tensor:
            return torch.tensor(v, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)

        self._shift, self._scale = per_channel(mean) * 255, per_channel(std) * 255
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.channels_last = channels_last
        self.drop_last = train if drop_last is None else drop_last
        self.epoch = 0
        if len(self) == 0:
            raise ValueError(f"no batches: {len(self.x)} images with batch_size={batch_size} and "
                             f"drop_last={self.drop_last}")

    def __len__(self) -> int:
        n, bs = len(self.x), self.batch_size
        return n // bs if self.drop_last else math.ceil(n / bs)

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle/augmentation stream; epoch k is the same whenever it is replayed."""
        self.epoch = epoch

    def _generator(self) -> torch.Generator:
        digest = hashlib.blake2b(f"{self.seed}:{self.epoch}".encode(), digest_size=8).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches()

    def batches(self, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's batches from batch ``start`` on: the same batches as a full pass yields from
        there (the random draws of the skipped batches are replayed, not their images)."""
        g = self._generator() if self.train else None
        order = torch.randperm(len(self.x), generator=g).to(self.device) if self.train else None
        if g is not None:
            for i in range(start):
                _crop_flip_draws(len(order[i * self.batch_size:(i + 1) * self.batch_size]), g)
        for i in range(start, len(self)):
            sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
            if order is None:
                xb, yb = self.x[sl], self.y[sl]
            else:
                idx = order[sl]
                xb, yb = augment(self.x[idx], g), self.y[idx]
            if self.channels_last:  # convert the uint8 batch: 4x cheaper than the float one
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb.float().sub_(self._shift).div_(self._scale), yb
