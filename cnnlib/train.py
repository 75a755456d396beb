"""One training recipe for every model: configuration, profiles and ``fit``.

The recipe is the same for all twelve models so that comparisons measure the
architecture, not the set-up: SGD with Nesterov momentum, weight decay, a
one-cycle learning rate (linear warm-up, then linear decay to zero), label
smoothing. On CUDA it trains in bf16 autocast with channels_last tensors; on
the CPU in fp32, deterministically (the same config gives the same history,
bit for bit).

``fit(cfg)`` returns a pandas DataFrame with one row per epoch, including
per-stage diagnostics (gradient L2 norm and output standard deviation,
averaged over the epoch's steps), and checkpoints after every epoch so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .data import CIFAR10, DeviceLoader, load_cifar10
from .models import create_model, family_of
from .paths import atomic_write, project_path


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

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("train_subset", "test_subset"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None, got {value}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {self.warmup}")

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
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @property
    def run_id(self) -> str:
        return f"{self.model}-{self.profile}-s{self.seed}"


# Presets. "full" is the report's protocol, meant for a GPU; its epochs per
# family are provisional until measured on one. "cpu" is a reduced protocol
# that a 2-core CPU finishes in minutes per model (1,000 training images: its
# accuracies are far below the full protocol's and only show the pipeline
# working). "smoke" takes seconds and serves tests and notebook regression.
# Subsets are balanced across classes; the test subset is a fixed one.
PROFILES: dict[str, dict] = {
    "smoke": dict(epochs=2, batch_size=50, lr=0.05, train_subset=200, test_subset=100),
    "cpu": dict(epochs=6, batch_size=50, lr=0.05, train_subset=1000, test_subset=500),
    "full": dict(epochs=30, batch_size=512, lr=0.2),
}
# Per-family settings where a profile departs from its defaults. On the CPU the
# thin degradation nets are cheap enough for 3,000 images, where the
# plain-vs-residual difference starts to show.
FAMILY_OVERRIDES: dict[str, dict[str, dict]] = {
    "cpu": {
        "seed": dict(epochs=6),
        "controlled": dict(epochs=3),
        "degradation": dict(epochs=12, batch_size=128, lr=0.1, train_subset=3000, test_subset=1000),
    },
    "full": {"seed": dict(epochs=30), "controlled": dict(epochs=30), "degradation": dict(epochs=60)},
}


def make_config(model: str, profile: str = "full", seed: int = 0, **overrides) -> TrainConfig:
    """The config of ``model`` under a named profile, with explicit overrides on top."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    create_model(model)  # fails early, with the list of names, on a typo
    fields = dict(PROFILES[profile])
    fields.update(FAMILY_OVERRIDES.get(profile, {}).get(family_of(model), {}))
    fields.update({k: v for k, v in overrides.items() if v is not None})
    if isinstance(fields.get("model_kwargs"), dict):
        fields["model_kwargs"] = tuple(sorted(fields["model_kwargs"].items()))
    return TrainConfig(model=model, profile=profile, seed=seed, **fields)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; ``history`` holds the epochs completed before."""

    def __init__(self, message: str, history: pd.DataFrame):
        super().__init__(message)
        self.history = history


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def checkpoint_root() -> Path:
    return project_path("CNNLIB_CHECKPOINTS", "checkpoints")


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """One-cycle schedule: linear warm-up to cfg.lr, then linear decay to 0."""
    warm = max(1, round(cfg.warmup * total))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * max(0.0, (total - step) / max(1, total - warm))


class StageProbe:
    """Accumulates, on the device, each stage's gradient L2 norm and output std per step."""

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


@torch.no_grad()
def evaluate(model: nn.Module, loader: DeviceLoader, device: torch.device) -> tuple[float, float, torch.Tensor]:
    """Mean loss, accuracy and the predicted class of every image, in loader order."""
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


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


SNAPSHOT_MAX_PARAMS = 2_000_000  # weights of smaller models are also kept at a few epochs


def snapshot_epochs(epochs: int) -> list[int]:
    """Epochs (besides the last) whose weights a small model keeps: 1, a quarter, a half."""
    return sorted({e for e in (1, epochs // 4, epochs // 2) if 0 < e < epochs})


def _atomic_torch_save(obj, path: Path):
    atomic_write(path, lambda f: torch.save(obj, f))


def _progress_enabled() -> bool:
    return sys.stderr.isatty()


@dataclass
class FitResult:
    """What a finished run hands to the results store."""

    history: pd.DataFrame
    predictions: torch.Tensor  # (n_test,) predicted class per test image, data-set order
    info: dict  # device, versions, data source, wall time, peak memory
    state_dict: dict  # the final weights, on the CPU
    snapshots: dict[int, dict]  # epoch -> weights at snapshot_epochs(), small models only


def fit(
    cfg: TrainConfig,
    *,
    data: CIFAR10 | None = None,
    device: str | torch.device | None = None,
    resume: bool = True,
    verbose: bool = True,
    compile: bool = False,
) -> FitResult:
    """Train ``cfg.model`` under ``cfg`` and return its per-epoch history.

    Checkpoints after every epoch under ``checkpoint_root()/cfg.run_id``; with
    ``resume=True`` a checkpoint of the same config is picked up, and the run
    ends with the same history as an uninterrupted one.
    """
    device = torch.device(device) if device is not None else default_device()
    data = data if data is not None else load_cifar10()
    if cfg.train_subset or cfg.test_subset:
        data = data.subset(cfg.train_subset or len(data.train_y), cfg.test_subset or len(data.test_y))

    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, **dict(cfg.model_kwargs)).to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader_kw = dict(mean=data.mean, std=data.std, device=device, channels_last=channels_last)
    train_loader = DeviceLoader(
        data.train_x, data.train_y, batch_size=cfg.batch_size, train=True, seed=cfg.seed, **loader_kw
    )
    test_loader = DeviceLoader(data.test_x, data.test_y, batch_size=1000, train=False, **loader_kw)
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay
    )
    total_steps = cfg.epochs * len(train_loader)
    step_fn = torch.compile(model) if compile else model

    ckpt_path = checkpoint_root() / cfg.run_id / "last.pt"
    rows: list[dict] = []
    start_epoch = 0
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        if state["config_hash"] == cfg.hash:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            rows, start_epoch = state["history"], state["epoch"]
            if verbose:
                print(f"{cfg.run_id}: resuming after epoch {start_epoch}/{cfg.epochs}")

    probe = StageProbe(model).to(device)
    small = sum(p.numel() for p in model.parameters()) <= SNAPSHOT_MAX_PARAMS
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    wall = time.perf_counter()
    try:
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            train_loader.set_epoch(epoch)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            t0 = time.perf_counter()
            bar = tqdm(
                train_loader, desc=f"{cfg.run_id} epoch {epoch + 1}/{cfg.epochs}",
                leave=False, disable=not (verbose and _progress_enabled()),
            )  # fmt: skip
            probe.recording = True
            for i, (x, y) in enumerate(bar):
                lr = lr_at(epoch * len(train_loader) + i, total_steps, cfg)
                for group in opt.param_groups:
                    group["lr"] = lr
                with _autocast(device):
                    logits = step_fn(x)
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                probe.after_backward()
                opt.step()
                loss_sum += loss.detach() * len(y)
                correct += (logits.argmax(1) == y).sum()
                seen += len(y)
            probe.recording = False
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t0
            train_loss = loss_sum.item() / seen
            if not math.isfinite(train_loss):
                raise TrainingDiverged(
                    f"{cfg.run_id}: the training loss became {train_loss} in epoch {epoch + 1}; "
                    f"the {len(rows)} epoch(s) before it are kept in .history "
                    "(try a lower lr)",
                    pd.DataFrame(rows),
                )
            test_loss, test_acc, preds = evaluate(model, test_loader, device)
            rows.append(
                dict(
                    epoch=epoch + 1,
                    train_loss=train_loss,
                    train_acc=correct.item() / seen,
                    test_loss=test_loss,
                    test_acc=test_acc,
                    lr=lr,
                    seconds=seconds,
                    images_per_s=seen / seconds,
                    **probe.epoch_summary(),
                )
            )
            _atomic_torch_save(
                dict(
                    config_hash=cfg.hash, epoch=epoch + 1, history=rows,
                    model=model.state_dict(), optimizer=opt.state_dict(),
                ),
                ckpt_path,
            )  # fmt: skip
            if epoch + 1 in snapshot_epochs(cfg.epochs) and small:
                _atomic_torch_save(model.state_dict(), ckpt_path.with_name(f"epoch{epoch + 1}.pt"))
            if verbose:
                r = rows[-1]
                print(
                    f"{cfg.run_id} epoch {r['epoch']:>3}/{cfg.epochs}  train loss {r['train_loss']:.3f}"
                    f"  acc {r['train_acc']:.3f}  test loss {r['test_loss']:.3f}  acc {r['test_acc']:.3f}"
                    f"  {seconds:.1f}s",
                    flush=True,
                )
    finally:
        probe.close()

    history = pd.DataFrame(rows)
    history.attrs["config"] = cfg.to_dict()
    if start_epoch == cfg.epochs:  # a finished checkpoint: predictions from its weights
        _, _, preds = evaluate(model, test_loader, device)
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
    )
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    snapshots = {
        e: torch.load(path, map_location="cpu", weights_only=True)
        for e in snapshot_epochs(cfg.epochs)
        if (path := ckpt_path.with_name(f"epoch{e}.pt")).exists()
    }
    return FitResult(history=history, predictions=preds, info=info, state_dict=state, snapshots=snapshots)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"CPU ({os.cpu_count()} cores)"
