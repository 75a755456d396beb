"""One training recipe for every model: configuration, profiles and ``fit``.

The recipe is the same for all models so that comparisons measure the
architecture, not the set-up: SGD with Nesterov momentum, weight decay, a
one-cycle learning rate (linear warm-up, then linear decay to zero), label
smoothing. On CUDA it trains in bf16 autocast with channels_last tensors and
cuDNN autotuning; on the CPU in fp32, deterministically (the same config gives
the same history, bit for bit).

``fit(cfg)`` returns a ``FitResult``: one history row per epoch (losses and
accuracies on the augmented training batches, on clean training images and on
the test images; per-stage diagnostics sampled every ``PROBE_EVERY`` steps), the
test predictions, and the tables of ``cnnlib.aftertrain`` measured while the
weights are in hand. It checkpoints (every epoch, or every
``checkpoint_every_s`` seconds) so an interrupted run resumes where it stopped,
and with a ``deadline`` it stops, checkpointed, as soon as the rest of the run
projects past it. Persistence of finished runs belongs to ``cnnlib.results``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import aftertrain
from .data import CIFAR10, CLASSES, EXPECTED, DeviceLoader, load_cifar10
from .models import create_model, family_of
from .paths import atomic_write, checkpoint_root

# Fields added after runs were stored: at these values they are left out of the
# hash, so runs stored before they existed keep their identity.
_ADDED_LATER = {"clean_subset": 10_000, "tag": ""}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run's result (the device does not belong here)."""

    model: str  # registry name, e.g. "resnet18"
    profile: str = "full"  # which preset produced this config ("smoke", "cpu", "full", ...)
    epochs: int = 30  # passes over the training subset
    batch_size: int = 512  # images per optimizer step
    lr: float = 0.2  # peak learning rate of the one-cycle schedule, for batch_size images
    warmup: float = 0.15  # fraction of all steps spent warming up linearly from 0 to lr
    momentum: float = 0.9  # Nesterov momentum
    weight_decay: float = 5e-4  # L2 penalty on every parameter, scaled by the lr as in SGD
    label_smoothing: float = 0.1  # target mass spread uniformly over the other classes
    train_subset: int | None = None  # balanced subset of the 50,000 training images; None = all
    test_subset: int | None = None  # balanced subset of the 10,000 test images; None = all
    seed: int = 0  # model initialisation and the data order / augmentation stream
    model_kwargs: tuple[tuple[str, object], ...] = ()  # extra builder arguments, e.g. (("norm", False),)
    clean_subset: int | None = 10_000  # training images (unaugmented) scored after every epoch; None = all
    tag: str = ""  # names a variant of a profile's recipe, e.g. "lr0.1x"; part of the run id

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("train_subset", "test_subset", "clean_subset"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None, got {value}")
        if self.seed < 0:
            raise ValueError(f"seed must be 0 or more, got {self.seed}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {self.warmup}")
        if self.tag and not self.tag.replace(".", "").replace("_", "").isalnum():
            raise ValueError(f"tag may hold letters, digits, '.' and '_' only, got {self.tag!r}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model_kwargs"] = dict(self.model_kwargs)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["model_kwargs"] = tuple(sorted(d.get("model_kwargs", {}).items()))
        return cls(**d)

    @property
    def hash(self) -> str:
        """Short content hash: two configs train the same run iff their hashes match."""
        d = {k: v for k, v in self.to_dict().items() if not (k in _ADDED_LATER and v == _ADDED_LATER[k])}
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @property
    def run_id(self) -> str:
        tag = f"-{self.tag}" if self.tag else ""
        return f"{self.model}-{self.profile}{tag}-s{self.seed}"

    def select(self, data: CIFAR10) -> CIFAR10:
        """The images this config trains and tests on: balanced subsets of ``data``, or all of it."""
        if not (self.train_subset or self.test_subset):
            return data
        return data.subset(self.train_subset or len(data.train_y), self.test_subset or len(data.test_y))

    def n_images(self, data: CIFAR10 | None = None) -> tuple[int, int]:
        """(training, test) image counts, of ``data`` or of the full CIFAR-10 when not given."""
        if data is None:  # the whole CIFAR-10: EXPECTED images per class, in each of its 10 classes
            n_train, n_test = (len(CLASSES) * EXPECTED[split] for split in ("train", "test"))
        else:
            n_train, n_test = len(data.train_y), len(data.test_y)
        return self.train_subset or n_train, self.test_subset or n_test


# Presets. "full" is the report's protocol, meant for a GPU: its epochs per
# family are chosen so that the twelve seed-0 runs fit in 9 minutes of one H200
# (benchmarks/RESULTS.md has the estimate). "cpu" is a reduced protocol that a
# 2-core CPU finishes in minutes per model (1,000-3,000 training images: its
# accuracies are far below the full protocol's). "smoke" takes seconds and
# serves tests and notebook regression. Subsets are balanced across classes.
PROFILES: dict[str, dict] = {
    "smoke": dict(epochs=2, batch_size=50, lr=0.05, train_subset=200, test_subset=100),
    "cpu": dict(epochs=6, batch_size=50, lr=0.05, train_subset=1000, test_subset=500),
    "full": dict(epochs=20, batch_size=512, lr=0.2),
}
# Per-family settings where a profile departs from its defaults. On the CPU the
# thin nets of the degradation family and the depth sweep are cheap enough for
# 3,000 images, where the plain-vs-residual difference starts to show.
_THIN_CPU = dict(epochs=12, batch_size=128, lr=0.1, train_subset=3000, test_subset=1000)
FAMILY_OVERRIDES: dict[str, dict[str, dict]] = {
    "cpu": {"seed": dict(epochs=6), "controlled": dict(epochs=3), "degradation": _THIN_CPU, "depth": _THIN_CPU},
    "full": {"seed": dict(epochs=20), "controlled": dict(epochs=20), "degradation": dict(epochs=40),
             "depth": dict(epochs=40)},
}
# Named variants of a profile's recipe (the ``tag`` of a config): controls that
# change one setting. "lr0.1x": a tenth of the peak learning rate (does plain56
# fail for want of a smaller step?).
TAGS: dict[str, Callable[[dict], dict]] = {"lr0.1x": lambda f: dict(lr=f["lr"] / 10)}


def make_config(model: str, profile: str = "full", seed: int = 0, *, tag: str = "", **overrides) -> TrainConfig:
    """The config of ``model`` under a named profile (and variant ``tag``), with explicit overrides on top."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    if tag and tag not in TAGS:
        raise ValueError(f"unknown tag {tag!r}; choose from {sorted(TAGS)}")
    create_model(model)  # fails early, with the list of names, on a typo
    fields = dict(PROFILES[profile])
    fields.update(FAMILY_OVERRIDES.get(profile, {}).get(family_of(model), {}))
    if tag:
        fields.update(TAGS[tag](fields))
    fields.update({k: v for k, v in overrides.items() if v is not None})
    if isinstance(fields.get("model_kwargs"), dict):
        fields["model_kwargs"] = tuple(sorted(fields["model_kwargs"].items()))
    return TrainConfig(model=model, profile=profile, seed=seed, tag=tag, **fields)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; ``history`` holds the epochs completed before."""

    def __init__(self, message: str, history: pd.DataFrame):
        super().__init__(message)
        self.history = history


class RunWontFit(RuntimeError):
    """The rest of a run projects past the deadline; it stopped checkpointed and resumes later."""

    def __init__(self, message: str, epoch: int, needed_s: float):
        super().__init__(message)
        self.epoch, self.needed_s = epoch, needed_s


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """One-cycle schedule: linear warm-up to cfg.lr, then linear decay to 0."""
    warm = max(1, round(cfg.warmup * total))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * max(0.0, (total - step) / max(1, total - warm))


PROBE_EVERY = 10  # the per-stage probe measures one optimizer step in this many


class StageProbe:
    """Accumulates, on the device, each stage's gradient L2 norm and output std on sampled steps.

    Only steps with ``recording`` set are measured (``fit`` samples one in ``PROBE_EVERY``),
    so the probe's extra work (an fp32 std of every stage output, a norm of every gradient)
    is a small fraction of training.
    """

    def __init__(self, model: nn.Module):
        self.names = list(model.stages)
        self.params = [[p for p in getattr(model, n).parameters()] for n in self.names]
        self.act_std = torch.zeros(len(self.names))
        self.grad_norm = torch.zeros(len(self.names))
        self.steps = 0
        self._handles = [
            getattr(model, n).register_forward_hook(self._hook(i)) for i, n in enumerate(self.names)
        ]
        self.recording = False

    def _hook(self, i: int):
        def hook(module, inputs, output):
            if self.recording:
                self.act_std[i] += output.detach().float().std()

        return hook

    def to(self, device: torch.device) -> StageProbe:
        self.act_std, self.grad_norm = self.act_std.to(device), self.grad_norm.to(device)
        return self

    def after_backward(self):
        if not self.recording:
            return
        for i, params in enumerate(self.params):
            grads = [p.grad for p in params if p.grad is not None]
            if grads:
                self.grad_norm[i] += torch.linalg.vector_norm(
                    torch.stack(torch._foreach_norm(grads))
                )
        self.steps += 1

    def epoch_summary(self) -> dict[str, float]:
        n = max(1, self.steps)
        grad, act = (self.grad_norm / n).tolist(), (self.act_std / n).tolist()
        out = {f"grad_{name}": g for name, g in zip(self.names, grad, strict=True)}
        out |= {f"act_std_{name}": a for name, a in zip(self.names, act, strict=True)}
        self.grad_norm.zero_()
        self.act_std.zero_()
        self.steps = 0
        return out

    def close(self):
        for h in self._handles:
            h.remove()


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def evaluate(model: nn.Module, loader: DeviceLoader, device: torch.device) -> tuple[float, float, torch.Tensor]:
    """Mean loss (plain cross-entropy), accuracy and the predicted class of every image, in loader order."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    preds = []
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    for x, y in loader:
        with _autocast(device):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        pred = logits.argmax(1)
        correct += (pred == y).sum()
        preds.append(pred)
        n += len(y)
    return loss_sum.item() / n, correct.item() / n, torch.cat(preds).cpu()


def build(cfg: TrainConfig, device: torch.device) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The initialised model (seeded by cfg.seed; channels_last on CUDA) and its optimizer."""
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, **dict(cfg.model_kwargs)).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay
    )
    return model, opt


def interleaved(labels: torch.Tensor, n: int | None = None) -> torch.Tensor:
    """Indices of ``n`` images (default all) ordered class by class in turn (the first image of
    each class, then the second, ...), so that every prefix is as balanced as it can be. The
    data sets are stored class by class: a plain prefix would hold one or two classes."""
    labels = labels.cpu()
    rank = torch.empty_like(labels)
    for c in labels.unique():
        where = (labels == c).nonzero().flatten()
        rank[where] = torch.arange(len(where))
    order = sorted(range(len(labels)), key=lambda i: (int(rank[i]), int(labels[i])))
    return torch.tensor(order[:n] if n is not None else order, dtype=torch.long)


def loaders(cfg: TrainConfig, data: CIFAR10, device: torch.device) -> dict[str, DeviceLoader]:
    """The training loader (augmented, shuffled), the clean training images (a balanced subset
    of cfg.clean_subset images, or all of them) and the test images."""
    kw = dict(mean=data.mean, std=data.std, device=device, channels_last=device.type == "cuda")
    n_train = len(data.train_y)
    n_clean = min(cfg.clean_subset or n_train, n_train)
    if n_clean < n_train:
        idx = interleaved(data.train_y, n_clean)
        clean_x, clean_y = data.train_x[idx], data.train_y[idx]
    else:  # all of them, in data-set order
        clean_x, clean_y = data.train_x, data.train_y
    return dict(
        train=DeviceLoader(data.train_x, data.train_y, batch_size=cfg.batch_size, train=True, seed=cfg.seed, **kw),
        clean=DeviceLoader(clean_x, clean_y, batch_size=1000, train=False, **kw),
        test=DeviceLoader(data.test_x, data.test_y, batch_size=1000, train=False, **kw),
    )


def balanced_batches(ld: dict[str, DeviceLoader], n_clean: int = 1000) -> tuple[tuple, tuple]:
    """(images, labels) of up to ``n_clean`` clean training images and of all test images, normalised,
    on the loaders' device, each in ``interleaved`` order: any prefix is balanced across classes.
    The gradient probe, the landscapes and the lesions take prefixes of these."""
    xc, yc = (torch.cat(t) for t in zip(*ld["clean"], strict=True))
    xt, yt = (torch.cat(t) for t in zip(*ld["test"], strict=True))
    ic, it = interleaved(yc, min(n_clean, len(yc))).to(yc.device), interleaved(yt).to(yt.device)
    return (xc[ic], yc[ic]), (xt[it], yt[it])


def training_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                  cfg: TrainConfig, lr: float, device: torch.device,
                  after_backward: Callable[[], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """One optimizer step of the recipe; returns the (detached) loss and logits."""
    for group in opt.param_groups:
        group["lr"] = lr
    with _autocast(device):
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if after_backward is not None:
        after_backward()
    opt.step()
    return loss.detach(), logits.detach()


@dataclass
class FitResult:
    """What a finished run hands to the results store."""

    history: pd.DataFrame
    predictions: torch.Tensor  # (n_test,) predicted class per test image, data-set order
    info: dict  # device, versions, data source, wall time, peak memory
    state_dict: dict  # the final weights, on the CPU
    tables: dict[str, pd.DataFrame]  # aftertrain.TABLES name -> table measured during/after training


def checkpoint_path(cfg: TrainConfig) -> Path:
    return checkpoint_root() / cfg.run_id / "last.pt"


def fit(
    cfg: TrainConfig,
    *,
    data: CIFAR10 | None = None,
    device: str | torch.device | None = None,
    resume: bool = True,
    verbose: bool = True,
    deadline: float | None = None,
    checkpoint_every_s: float = 0.0,
    on_epoch_end: Callable[[int], None] | None = None,
) -> FitResult:
    """Train ``cfg.model`` under ``cfg``; see the module docstring.

    The checkpoint ``checkpoint_root()/<run_id>/last.pt`` (one file: weights, optimizer,
    history and the gradient monitor's rows) is written after an epoch when at least
    ``checkpoint_every_s`` seconds passed since the last one (0: every epoch). With
    ``resume=True`` a checkpoint of the same config is picked up, and the run ends with
    the same history as an uninterrupted one. ``deadline`` (a ``time.time()`` value):
    after every epoch, if the remaining epochs at the latest epoch's pace would end
    past it, the run checkpoints and raises RunWontFit. ``on_epoch_end(epoch)`` is
    called after each epoch's checkpoint decision (tests use it to interrupt).
    """
    device = torch.device(device) if device is not None else default_device()
    data = cfg.select(data if data is not None else load_cifar10())
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model, opt = build(cfg, device)
    init_fingerprint = aftertrain.fingerprint(model)
    dissect = aftertrain.dissected(cfg)
    init_state = {k: v.detach().clone() for k, v in model.state_dict().items()} if dissect else None
    ld = loaders(cfg, data, device)
    steps_per_epoch = len(ld["train"])
    total_steps = cfg.epochs * steps_per_epoch
    (probe_x, probe_y), test_xy = balanced_batches(ld, aftertrain.SURFACE_IMAGES)
    n_probe = aftertrain.probe_images(len(data.train_y))
    monitor = aftertrain.Monitor(probe_x[:n_probe], probe_y[:n_probe], cfg.epochs,
                                 enabled=aftertrain.monitored(cfg.model))  # fmt: skip

    ckpt_path = checkpoint_path(cfg)
    rows: list[dict] = []
    start_epoch = 0
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        if state["config_hash"] == cfg.hash:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            rows, start_epoch = state["history"], state["epoch"]
            monitor.load_state(state.get("monitor"))
            if verbose:
                print(f"{cfg.run_id}: resuming after epoch {start_epoch}/{cfg.epochs}")

    def save_checkpoint(epoch: int) -> None:
        state = dict(config_hash=cfg.hash, epoch=epoch, history=rows, model=model.state_dict(),
                     optimizer=opt.state_dict(), monitor=monitor.state())  # fmt: skip
        atomic_write(ckpt_path, lambda f: torch.save(state, f))

    if verbose and start_epoch < cfg.epochs:
        print(f"{cfg.run_id}: training on {len(data.train_y):,} images for {cfg.epochs - start_epoch} epoch(s) "
              f"on {device} ({steps_per_epoch} steps each)", flush=True)  # fmt: skip
    probe = StageProbe(model).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    wall = time.perf_counter()
    last_checkpoint = time.perf_counter()
    lr = lr_at(start_epoch * steps_per_epoch, total_steps, cfg)
    if start_epoch == 0:
        monitor.at_step(0, model, lr)
    try:
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            ld["train"].set_epoch(epoch)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            t0 = time.perf_counter()
            monitor_s = 0.0  # time of the gradient profiles inside the loop: not training
            bar = tqdm(
                ld["train"], desc=f"{cfg.run_id} epoch {epoch + 1}/{cfg.epochs}",
                leave=False, disable=None if verbose else True,  # None: only on a terminal
            )  # fmt: skip
            for i, (x, y) in enumerate(bar):
                step = epoch * steps_per_epoch + i
                lr = lr_at(step, total_steps, cfg)
                probe.recording = i % PROBE_EVERY == 0
                loss, logits = training_step(model, opt, x, y, cfg, lr, device, probe.after_backward)
                probe.recording = False
                loss_sum += loss * len(y)
                correct += (logits.argmax(1) == y).sum()
                seen += len(y)
                if step + 1 in aftertrain.PROBE_STEPS:
                    tm = time.perf_counter()
                    monitor.at_step(step + 1, model, lr)
                    monitor_s += time.perf_counter() - tm
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t0 - monitor_s
            train_loss = loss_sum.item() / seen
            if not math.isfinite(train_loss):
                raise TrainingDiverged(
                    f"{cfg.run_id}: the training loss became {train_loss} in epoch {epoch + 1}; "
                    f"the {len(rows)} epoch(s) before it are kept in .history "
                    "(try a lower lr)",
                    pd.DataFrame(rows),
                )
            clean_loss, clean_acc, _ = evaluate(model, ld["clean"], device)
            test_loss, test_acc, preds = evaluate(model, ld["test"], device)
            monitor.at_epoch(epoch + 1, (epoch + 1) * steps_per_epoch, model, lr)
            epoch_s = time.perf_counter() - t0
            rows.append(
                dict(
                    epoch=epoch + 1,
                    train_loss=train_loss,
                    train_acc=correct.item() / seen,
                    clean_train_loss=clean_loss,
                    clean_train_acc=clean_acc,
                    test_loss=test_loss,
                    test_acc=test_acc,
                    lr=lr,
                    seconds=seconds,
                    images_per_s=seen / seconds,
                    epoch_seconds=epoch_s,
                    **probe.epoch_summary(),
                )
            )
            done = epoch + 1 == cfg.epochs
            needed = (cfg.epochs - epoch - 1) * epoch_s
            wont_fit = deadline is not None and not done and time.time() + needed > deadline
            if wont_fit or time.perf_counter() - last_checkpoint >= checkpoint_every_s:
                save_checkpoint(epoch + 1)
                last_checkpoint = time.perf_counter()
            if verbose:
                r = rows[-1]
                print(
                    f"{cfg.run_id} epoch {r['epoch']:>3}/{cfg.epochs}  train loss {r['train_loss']:.3f}"
                    f"  acc {r['train_acc']:.3f}  test loss {r['test_loss']:.3f}  acc {r['test_acc']:.3f}"
                    f"  {epoch_s:.1f}s",
                    flush=True,
                )
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1)
            if wont_fit:
                raise RunWontFit(
                    f"{cfg.run_id}: stopped after epoch {epoch + 1}/{cfg.epochs}; the rest needs about "
                    f"{needed:.0f} s and would end past the deadline; it resumes from its checkpoint",
                    epoch + 1, needed,
                )  # fmt: skip
    finally:
        probe.close()

    history = pd.DataFrame(rows)
    history.attrs["config"] = cfg.to_dict()
    if start_epoch == cfg.epochs:  # a finished checkpoint: predictions from its weights
        _, _, preds = evaluate(model, ld["test"], device)
    tables = monitor.tables() | aftertrain.after_training(
        cfg, model, ld["test"], init_state=init_state, clean=(probe_x, probe_y), test=test_xy,
        n_train=len(data.train_y), device=device)  # fmt: skip
    info = dict(
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        data_source=data.source,
        wall_s=time.perf_counter() - wall,
        train_s=float(history["seconds"].sum()) if len(history) else 0.0,
        peak_memory_mb=torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        resumed_after_epoch=start_epoch,
        init_fingerprint=init_fingerprint,
    )
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return FitResult(history=history, predictions=preds, info=info, state_dict=state, tables=tables)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"CPU ({os.cpu_count()} cores)"
