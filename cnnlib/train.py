"""One training recipe for every model: configuration, profiles and ``fit``.

The recipe is the same for all models so that comparisons measure the
architecture, not the set-up: SGD with Nesterov momentum, weight decay, a
one-cycle learning rate (linear warm-up, then linear decay to zero), label
smoothing. How a device trains (precision, memory format, compiled or not,
threads) is one ``cnnlib.engine.Engine``, chosen once per run: on CUDA bf16
autocast with channels_last and cuDNN autotuning; on a CPU bf16 only where the
hardware has it and a measured step finds it faster, else fp32, with
channels_last where it is measured faster. On the CPU training is deterministic:
the same config and engine give the same history, bit for bit.

``fit(cfg)`` returns a ``FitResult``: one history row per epoch (losses and
accuracies on the augmented training batches, on clean training images and on
the test images; per-stage diagnostics sampled every ``PROBE_EVERY`` steps), the
test predictions, and the tables of ``cnnlib.aftertrain`` measured while the
weights are in hand. It checkpoints (every epoch, or every
``checkpoint_every_s`` seconds, and inside long epochs) so an interrupted run
resumes where it stopped, and with a ``deadline`` it stops, checkpointed, at the
deadline or as soon as the rest of the run projects past it. Persistence of finished runs belongs to ``cnnlib.results``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
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
from .config import (  # noqa: F401 -- the config and the recipe, re-exported for callers of cnnlib.train
    FAMILY_OVERRIDES,
    PROFILES,
    RECIPE_GRID,
    TAGS,
    TrainConfig,
    lr_at,
    make_config,
)
from .data import CIFAR10, DeviceLoader, load_cifar10
from .engine import CHECK_TRIES, Engine, cached_rate, choose, confirm, cpu_name
from .models import create_model
from .paths import atomic_write, checkpoint_root, results_root


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


PROBE_EVERY = 10  # the per-stage probe measures one optimizer step in this many
PROGRESS_EVERY_S = 180.0  # without a terminal (a log file), a progress line within an epoch this often
LONG_RUN_IMAGES = 200_000  # training images (epochs x set) from which a run is "long" (profiles full and tune)


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

    def state(self) -> dict:
        """The running sums of a partly done epoch (for a checkpoint within an epoch)."""
        return dict(act_std=self.act_std.cpu(), grad_norm=self.grad_norm.cpu(), steps=self.steps)

    def load_state(self, state: dict) -> None:
        self.act_std.copy_(state["act_std"])
        self.grad_norm.copy_(state["grad_norm"])
        self.steps = state["steps"]

    def close(self):
        for h in self._handles:
            h.remove()


@torch.no_grad()
def evaluate(model: nn.Module, loader: DeviceLoader, engine: Engine) -> tuple[float, float, torch.Tensor]:
    """Mean loss (plain cross-entropy), accuracy and the predicted class of every image, in loader order,
    under the engine's precision (eager: the evaluation batches have other shapes than training's)."""
    model.eval()
    device = engine.torch_device
    loss_sum = torch.zeros((), device=device)
    preds = []
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    for x, y in loader:
        with engine.autocast():
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        pred = logits.argmax(1)
        correct += (pred == y).sum()
        preds.append(pred)
        n += len(y)
    return loss_sum.item() / n, correct.item() / n, torch.cat(preds).cpu()


def as_engine(engine: Engine | str | torch.device) -> Engine:
    """An engine as given, or for a bare device the plain one (fp32 NCHW on a CPU, bf16 channels_last on
    CUDA): what rebuilding weights and measuring tables need, without the training check."""
    if isinstance(engine, Engine):
        return engine
    device = torch.device(engine)
    cuda = device.type == "cuda"
    return Engine(str(device), "bf16" if cuda else "fp32", cuda, False, torch.get_num_threads(), "plain")


def build(cfg: TrainConfig, engine: Engine | str | torch.device) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The initialised model (seeded by cfg.seed, on the engine's device and memory format) and its optimizer."""
    torch.manual_seed(cfg.seed)
    model = as_engine(engine).prepare(create_model(cfg.model, **dict(cfg.model_kwargs)))
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


def loaders(cfg: TrainConfig, data: CIFAR10, engine: Engine | str | torch.device) -> dict[str, DeviceLoader]:
    """The training loader (augmented, shuffled), the clean training images (a balanced subset
    of cfg.clean_subset images, or all of them) and the test images (the held-out training
    images when cfg.holdout is set: see ``TrainConfig.select``)."""
    engine = as_engine(engine)
    kw = dict(mean=data.mean, std=data.std, device=engine.torch_device, channels_last=engine.channels_last)
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
                  lr: float, loss_fn: Callable, after_backward: Callable[[], None] | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """One optimizer step of the recipe (``loss_fn`` from ``Engine.loss_fn``); returns the detached loss
    and logits."""
    for group in opt.param_groups:
        group["lr"] = lr
    loss, logits = loss_fn(x, y)
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
    info: dict  # device, engine, versions, data source, wall time, peak memory
    state_dict: dict  # the final weights, on the CPU
    tables: dict[str, pd.DataFrame]  # aftertrain.TABLES name -> table measured during/after training


def checkpoint_path(cfg: TrainConfig) -> Path:
    return checkpoint_root() / cfg.run_id / "last.pt"


def previous_path(path: Path) -> Path:
    """The checkpoint before ``path`` (kept so that a damaged last one costs one checkpoint's training)."""
    return path.with_name("previous.pt")


CHECKPOINT_KEYS = ("config_hash", "epoch", "history", "model", "optimizer")


def read_checkpoint(path: Path, map_location="cpu") -> tuple[dict | None, str]:
    """(the training state in ``path``, "") or (None, what is wrong with the file) when it does not load
    or does not hold a training state (cut short, emptied, garbled)."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 -- torch and pickle raise many kinds for a cut or garbled file
        return None, f"does not load ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else 'empty'})"
    if not isinstance(state, dict) or any(k not in state for k in CHECKPOINT_KEYS):
        return None, "does not hold a training state"
    return state, ""


def _usable_checkpoint(cfg: TrainConfig, map_location="cpu", *, set_aside: bool = False,
                       say: Callable[[str], None] | None = None) -> dict | None:  # fmt: skip
    """The newest sound checkpoint of ``cfg`` (the last one, else the one before), or None. With
    ``set_aside``, a damaged one is renamed to ``<name>.damaged`` (kept for a look, never read again) and
    ``say`` is told which file, what is wrong, and what the run does instead."""
    last = checkpoint_path(cfg)
    for path in (last, previous_path(last)):
        if not path.exists():
            continue
        state, problem = read_checkpoint(path, map_location)
        if state is None:
            if set_aside:
                aside = path.with_name(path.name + ".damaged")
                os.replace(path, aside)
                if say is not None:
                    fallback = previous_path(last)
                    then = ("it resumes from the checkpoint before" if path == last and fallback.exists()
                            else "it starts again from epoch 0")  # fmt: skip
                    say(f"{cfg.run_id}: the checkpoint {path} {problem}; set aside as {aside.name}, {then}")
            continue
        if state.get("config_hash") != cfg.hash:
            return None  # another config's: never resumed, and the one before it is older still
        return state
    return None


def diverged_path(cfg: TrainConfig) -> Path:
    """Where a run that diverged leaves its record: ``diverged/<run>.json`` in the results, committed like a
    finished run, so that the finding (and the skip) survives a move to another machine."""
    return results_root() / "diverged" / f"{cfg.run_id}.json"


def record_divergence(cfg: TrainConfig, error: TrainingDiverged) -> Path:
    """Keep what a diverged run trained (its message and the epochs before) so that later calls skip this config
    and a person can look at why; a change of the recipe changes the config and clears it."""
    path = diverged_path(cfg)
    record = dict(run_id=cfg.run_id, config_hash=cfg.hash, message=str(error), at=time.strftime("%Y-%m-%d %H:%M"),
                  history=error.history.to_dict(orient="records"))  # fmt: skip
    atomic_write(path, lambda f: f.write((json.dumps(record, indent=1) + "\n").encode()))
    return path


def divergence(cfg: TrainConfig) -> dict | None:
    """The record of ``cfg``'s divergence (run_id, message, history, ...), or None if it did not diverge."""
    try:
        record = json.loads(diverged_path(cfg).read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("config_hash") == cfg.hash else None


@dataclass
class Progress:
    """Where a run stands, as a checkpoint keeps it: epochs done, and within the next epoch the steps
    done and their running sums (so a run stopped inside a long epoch resumes there, bit for bit)."""

    epoch: int = 0  # finished epochs
    step: int = 0  # optimizer steps done within epoch + 1
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0  # training time of epoch + 1 so far
    probe: dict | None = None  # StageProbe.state() within epoch + 1


def peek_checkpoint(cfg: TrainConfig) -> dict | None:
    """What a checkpoint of ``cfg`` says about its progress (epochs done, steps into the next,
    the engine), or None without one of this config."""
    state = _usable_checkpoint(cfg)  # a damaged one is skipped here, and set aside (and named) when fit resumes
    if state is None:
        return None
    p = state.get("progress") or {"epoch": state["epoch"], "step": 0}
    rates = sorted(r["images_per_s"] for r in state["history"])
    return dict(epoch=p["epoch"], step=p["step"], engine=state.get("engine"),
                images_per_s=rates[len(rates) // 2] if rates else None,
                train_s=sum(r["seconds"] for r in state["history"]) + p.get("seconds", 0.0))  # fmt: skip


class _LogLine:
    """Without a terminal, a progress line inside an epoch every ``PROGRESS_EVERY_S`` seconds: the rate since
    the last line and the time the epoch's training still needs at that rate."""

    def __init__(self, enabled: bool, prefix: str, steps: int, batch: int, seen: int):
        self.enabled, self.prefix, self.steps, self.batch = enabled, prefix, steps, batch
        self.t, self.seen = time.perf_counter(), seen
        self.due = self.t + PROGRESS_EVERY_S

    def __call__(self, i: int, seen: int) -> None:
        """After step ``i`` (0-based) of the epoch, with ``seen`` images trained in it."""
        if not self.enabled or (now := time.perf_counter()) < self.due:
            return
        rate = (seen - self.seen) / (now - self.t)
        left = (self.steps - i - 1) * self.batch / rate
        print(f"{self.prefix} step {i + 1}/{self.steps}: {rate:.0f} img/s, the epoch's training ends in about "
              f"{left / 60:.0f} min", flush=True)  # fmt: skip
        self.t, self.seen, self.due = now, seen, now + PROGRESS_EVERY_S


class _Run:
    """The state of one training run inside ``fit``: model, optimizer, loaders, probes, history."""

    def __init__(self, cfg: TrainConfig, data: CIFAR10, engine: Engine):
        self.cfg, self.engine, self.data = cfg, engine, data
        self.device = engine.torch_device
        self.model, self.opt = build(cfg, engine)
        self.init_fingerprint = aftertrain.fingerprint(self.model)
        dissect = aftertrain.dissected(cfg)
        self.init_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()} if dissect else None
        self.ld = loaders(cfg, data, engine)
        self.steps_per_epoch = len(self.ld["train"])
        self.total_steps = cfg.epochs * self.steps_per_epoch
        (probe_x, probe_y), self.test_xy = balanced_batches(self.ld, aftertrain.SURFACE_IMAGES)
        self.clean_xy = (probe_x, probe_y)
        n_probe = aftertrain.probe_images(len(data.train_y))
        self.monitor = aftertrain.Monitor(probe_x[:n_probe], probe_y[:n_probe], cfg.epochs,
                                          enabled=aftertrain.monitored(cfg.model))  # fmt: skip
        self.probe = StageProbe(self.model).to(self.device)
        self.loss_fn = engine.loss_fn(self.model, cfg.label_smoothing)
        self.rows: list[dict] = []
        self.progress = Progress()

    def resume(self, verbose: bool = True) -> bool:
        """Pick up the newest sound checkpoint of the same config; False if there is none. A damaged one
        is set aside, saying so (``_usable_checkpoint``)."""
        state = _usable_checkpoint(self.cfg, self.device, set_aside=True,
                                   say=lambda line: print(line, flush=True) if verbose else None)  # fmt: skip
        if state is None:
            return False
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.rows = state["history"]
        self.monitor.load_state(state.get("monitor"))
        self.progress = Progress(**(state.get("progress") or {"epoch": state["epoch"]}))
        if self.progress.probe:
            self.probe.load_state(self.progress.probe)
        return True

    def save(self, path: Path) -> None:
        if self.progress.step:
            self.progress.probe = self.probe.state()
        state = dict(config_hash=self.cfg.hash, epoch=self.progress.epoch, history=self.rows,
                     model=self.model.state_dict(), optimizer=self.opt.state_dict(),
                     monitor=self.monitor.state(), progress=dataclasses.asdict(self.progress),
                     engine=dataclasses.asdict(self.engine))  # fmt: skip
        if path.exists():  # the one before stays until the new one is whole
            os.replace(path, previous_path(path))
        atomic_write(path, lambda f: torch.save(state, f))

    def expected(self) -> str:
        """How long the rest should take, in words, from the epochs done so far or the engine's measured
        check ("" when neither is known)."""
        rates = [r["images_per_s"] for r in self.rows]
        rate = sorted(rates)[len(rates) // 2] if rates else None
        source = "the epochs so far"
        if rate is None and self.device.type == "cpu":
            rate, source = cached_rate(self.cfg.model), "a measured step"
        if not rate:
            return ""
        n_eval = len(self.ld["clean"].y) + len(self.ld["test"].y)
        steps_left = self.total_steps - self.progress.epoch * self.steps_per_epoch - self.progress.step
        seconds = steps_left * self.cfg.batch_size / rate
        seconds += (self.cfg.epochs - self.progress.epoch) * n_eval / (3 * rate)
        return f"; about {_duration(seconds)} at {rate:.0f} img/s ({source})"

    def lr(self, step: int) -> float:
        return lr_at(step, self.total_steps, self.cfg)

    def train_steps(self, epoch: int, verbose: bool, should_stop: Callable[[], bool],
                    save: Callable[[], None], checkpoint_every_s: float) -> bool:  # fmt: skip
        """The training steps of ``epoch`` (0-based) from ``progress.step`` on; False if stopped inside it."""
        cfg, p = self.cfg, self.progress
        self.model.train()
        loader = self.ld["train"]
        loader.set_epoch(epoch)
        loss_sum = torch.zeros((), device=self.device) + p.loss_sum if p.step else torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long) + p.correct
        seen, monitor_s = p.seen, 0.0
        t0, last_save = time.perf_counter(), time.perf_counter()
        log = _LogLine(verbose and not sys.stdout.isatty(), f"{cfg.run_id} epoch {epoch + 1}/{cfg.epochs}",
                       self.steps_per_epoch, cfg.batch_size, seen)  # a log: a line now and then, not the bar
        bar = tqdm(loader.batches(start=p.step), total=self.steps_per_epoch, initial=p.step,
                   desc=f"{cfg.run_id} epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=None if verbose else True)  # fmt: skip  (None: only on a terminal)
        for i, (x, y) in enumerate(bar, start=p.step):
            step = epoch * self.steps_per_epoch + i
            self.probe.recording = i % PROBE_EVERY == 0
            loss, logits = training_step(self.model, self.opt, x, y, self.lr(step), self.loss_fn,
                                         self.probe.after_backward)  # fmt: skip
            self.probe.recording = False
            loss_sum += loss * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            if step + 1 in aftertrain.PROBE_STEPS:
                tm = time.perf_counter()
                self.monitor.at_step(step + 1, self.model, self.lr(step))
                monitor_s += time.perf_counter() - tm
            last = i + 1 == self.steps_per_epoch
            log(i, seen)
            stop = not last and should_stop()
            if stop or (not last and checkpoint_every_s and time.perf_counter() - last_save >= checkpoint_every_s):
                self._sync()  # the epoch's sums so far go into the checkpoint; the clock restarts
                p.step, p.loss_sum, p.correct, p.seen = i + 1, loss_sum.item(), int(correct.item()), seen
                p.seconds += time.perf_counter() - t0 - monitor_s
                t0, monitor_s = time.perf_counter(), 0.0
                save()
                last_save = time.perf_counter()
                if stop:
                    bar.close()
                    return False
        self._sync()
        p.seconds += time.perf_counter() - t0 - monitor_s
        p.loss_sum, p.correct, p.seen = loss_sum.item(), int(correct.item()), seen
        return True

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _diverged(self, epoch: int, what: str):
        lrs = (self.lr(epoch * self.steps_per_epoch), self.lr((epoch + 1) * self.steps_per_epoch - 1))
        raise TrainingDiverged(
            f"{self.cfg.run_id}: {what} in epoch {epoch + 1} of {self.cfg.epochs}, where the schedule's lr went "
            f"from {lrs[0]:.3g} to {lrs[1]:.3g} (peak {self.cfg.lr:g}); try a lower lr",
            pd.DataFrame(self.rows),  # the epochs before it
        )

    def end_epoch(self, epoch: int, eval_started: float) -> dict:
        """Evaluate after ``epoch`` (0-based), append its history row and reset the epoch's sums."""
        p = self.progress
        train_loss = p.loss_sum / p.seen
        if not math.isfinite(train_loss):
            self._diverged(epoch, f"the training loss became {train_loss}")
        clean_loss, clean_acc, _ = evaluate(self.model, self.ld["clean"], self.engine)
        if not math.isfinite(clean_loss):  # BatchNorm's running statistics are gone for good: NaN stays NaN
            self._diverged(epoch, f"the eval-mode loss on the training images became {clean_loss}")
        test_loss, test_acc, self.preds = evaluate(self.model, self.ld["test"], self.engine)
        lr = self.lr((epoch + 1) * self.steps_per_epoch - 1)
        self.monitor.at_epoch(epoch + 1, (epoch + 1) * self.steps_per_epoch, self.model, lr)
        row = dict(
            epoch=epoch + 1, train_loss=train_loss, train_acc=p.correct / p.seen,
            clean_train_loss=clean_loss, clean_train_acc=clean_acc, test_loss=test_loss, test_acc=test_acc,
            lr=lr, seconds=p.seconds, images_per_s=p.seen / p.seconds,
            epoch_seconds=p.seconds + time.perf_counter() - eval_started, **self.probe.epoch_summary(),
        )  # fmt: skip
        self.rows.append(row)
        self.progress = Progress(epoch=epoch + 1)
        return row


def fit(
    cfg: TrainConfig,
    *,
    data: CIFAR10 | None = None,
    device: str | torch.device | None = None,
    engine: Engine | None = None,
    resume: bool = True,
    verbose: bool = True,
    deadline: float | None = None,
    until_deadline: bool = False,
    checkpoint_every_s: float = 0.0,
    checkpoint_within_s: float = 600.0,
    on_epoch_end: Callable[[int], None] | None = None,
) -> FitResult:
    """Train ``cfg.model`` under ``cfg``; see the module docstring.

    The engine (precision, memory format, compiled or not: ``cnnlib.engine``) is ``engine``, else the
    one a resumed checkpoint was trained with, else ``engine.choose`` for the device. The checkpoint
    ``checkpoint_root()/<run_id>/last.pt`` (weights, optimizer, history, the gradient monitor's rows,
    the progress within an epoch and the engine) is written after an epoch when at least
    ``checkpoint_every_s`` seconds passed since the last one (0: every epoch), and within a long
    epoch every ``checkpoint_within_s`` seconds (0: never). With ``resume=True`` a checkpoint of
    the same config is picked up, and the run ends with the same history as an uninterrupted one.
    ``deadline`` (a ``time.time()`` value): with ``until_deadline`` the run trains until the deadline,
    checkpoints (inside an epoch if need be) and raises RunWontFit; without it, after every epoch, if
    the remaining epochs at the latest epoch's pace would end past it, the run checkpoints and raises
    RunWontFit. ``on_epoch_end(epoch)`` is called after each epoch's checkpoint decision (tests use it
    to interrupt).
    """
    device = torch.device(device) if device is not None else default_device()
    data = cfg.select(data if data is not None else load_cifar10())
    ckpt_path = checkpoint_path(cfg)
    if engine is None:
        engine = _checkpoint_engine(cfg, ckpt_path, device) if resume else None
        # a long run waits for free cores (a minute at most) rather than train for hours on a busy check
        long_run = cfg.epochs * len(data.train_y) >= LONG_RUN_IMAGES
        engine = engine or choose(device, cfg.model, cfg.batch_size, tries=CHECK_TRIES if long_run else 1)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    run = _Run(cfg, data, engine)
    resumed = resume and run.resume(verbose)
    start = run.progress
    if verbose and resumed:
        within = f", step {start.step}/{run.steps_per_epoch} of epoch {start.epoch + 1}" if start.step else ""
        print(f"{cfg.run_id}: resuming after epoch {start.epoch}/{cfg.epochs}{within}")
    if verbose and start.epoch < cfg.epochs:
        print(f"{cfg.run_id}: training on {len(data.train_y):,} images for {cfg.epochs - start.epoch} epoch(s) "
              f"on {device} ({run.steps_per_epoch} steps each; {engine.describe()}){run.expected()}",
              flush=True)  # fmt: skip
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    wall = time.perf_counter()
    last_checkpoint = time.perf_counter()
    save = lambda: run.save(ckpt_path)  # noqa: E731
    past_deadline = lambda: until_deadline and deadline is not None and time.time() >= deadline  # noqa: E731
    if start.epoch == 0 and start.step == 0:
        run.monitor.at_step(0, run.model, run.lr(0))
    run.preds = None
    try:
        for epoch in range(start.epoch, cfg.epochs):
            if not run.train_steps(epoch, verbose, past_deadline, save, checkpoint_within_s):
                p = run.progress
                raise RunWontFit(f"{cfg.run_id}: stopped at the deadline in epoch {epoch + 1}/{cfg.epochs} "
                                 f"(step {p.step}/{run.steps_per_epoch}); it resumes from its checkpoint",
                                 epoch, float("nan"))  # fmt: skip
            row = run.end_epoch(epoch, time.perf_counter())
            if epoch == start.epoch and (doubt := confirm(engine, cfg.model, cfg.batch_size, row["images_per_s"])):
                print(f"{cfg.run_id}: {doubt}", flush=True)  # the run keeps its engine
            done = epoch + 1 == cfg.epochs
            needed = (cfg.epochs - epoch - 1) * row["epoch_seconds"]
            if until_deadline:
                wont_fit = not done and past_deadline()
            else:
                wont_fit = deadline is not None and not done and time.time() + needed > deadline
            if wont_fit or time.perf_counter() - last_checkpoint >= checkpoint_every_s:
                save()
                last_checkpoint = time.perf_counter()
            if verbose:
                print(
                    f"{cfg.run_id} epoch {row['epoch']:>3}/{cfg.epochs}  train loss {row['train_loss']:.3f}"
                    f"  acc {row['train_acc']:.3f}  {cfg.scored} loss {row['test_loss']:.3f}  acc {row['test_acc']:.3f}"
                    f"  {row['epoch_seconds']:.1f}s  {row['images_per_s']:.0f} img/s",
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
        run.probe.close()
    return _finish(run, wall, resumed_after=start.epoch)


def _checkpoint_engine(cfg: TrainConfig, path: Path, device: torch.device) -> Engine | None:
    """The engine a checkpoint of ``cfg`` was trained with, if it can run on ``device``."""
    info = peek_checkpoint(cfg)
    if not info or not info.get("engine"):
        return None
    e = dict(info["engine"])
    if torch.device(e["device"]).type != device.type:
        return None
    e["device"], e["threads"] = str(device), torch.get_num_threads()
    return Engine(**e)


def _finish(run: _Run, wall: float, resumed_after: int) -> FitResult:
    cfg, device, engine = run.cfg, run.device, run.engine
    history = pd.DataFrame(run.rows)
    history.attrs["config"] = cfg.to_dict()
    preds = run.preds
    if preds is None:  # a finished checkpoint: predictions from its weights
        _, _, preds = evaluate(run.model, run.ld["test"], engine)
    tables = run.monitor.tables() | aftertrain.after_training(
        cfg, run.model, run.ld["test"], init_state=run.init_state, clean=run.clean_xy, test=run.test_xy,
        n_train=len(run.data.train_y), device=device)  # fmt: skip
    info = dict(
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        engine=engine.record(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        data_source=run.data.source,
        # what the test_* columns and the predictions score: the test set, or held-out training images
        scored_on=f"{cfg.holdout} held-out training images" if cfg.holdout else "test images",
        wall_s=time.perf_counter() - wall,
        train_s=float(history["seconds"].sum()) if len(history) else 0.0,
        peak_memory_mb=torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        resumed_after_epoch=resumed_after,
        init_fingerprint=run.init_fingerprint,
    )
    state = {k: v.detach().cpu().contiguous() for k, v in run.model.state_dict().items()}
    return FitResult(history=history, predictions=preds, info=info, state_dict=state, tables=tables)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min" if seconds >= 90 else \
        f"{seconds:.0f} s"


def _cpu_name() -> str:
    return f"CPU: {cpu_name()} ({os.cpu_count()} cores)"
