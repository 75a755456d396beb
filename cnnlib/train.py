"""How a model is trained: the loop ``fit``, the step it repeats, and what rides along.

One recipe for every model, so that comparisons measure the architecture, not the set-up: SGD with Nesterov momentum and
weight decay (``optimizer``), a one-cycle learning rate (``cnnlib.config.lr_at``), label smoothing. How a device trains
(precision, memory format, compiled or not, threads) is one ``cnnlib.engine.Engine``, chosen once per run and handed to
the model builder, the loaders, the step and the evaluation. On a CPU training is deterministic: the same config and
engine give the same history, bit for bit, resumed or not.

``fit`` reads top to bottom. What rides along (the per-stage probe, the gradient profile, the progress line) is a
``Callback`` whose time is not training time; when to stop early and when to checkpoint is one ``StopRule``. The tables
measured on the trained weights, and the store of finished runs, belong to ``cnnlib.results``.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import aftertrain
from .config import TrainConfig, lr_at
from .data import CIFAR10, DeviceLoader, load_cifar10
from .engine import CHECK_TRIES, Engine, cached_rate, choose, confirm, cpu_name, sync
from .models import create_model
from .paths import atomic_write, checkpoint_root


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; ``history`` holds the epochs completed before."""

    def __init__(self, message: str, history: pd.DataFrame):
        super().__init__(message)
        self.history = history


class RunWontFit(RuntimeError):
    """The run stopped early (``StopRule``), checkpointed; the next ``fit`` resumes it.

    ``epoch``: after an epoch, the epochs done; inside one, its 0-based index. ``needed_s``: what the
    rest needed at the latest epoch's pace (NaN inside an epoch)."""

    def __init__(self, message: str, epoch: int, needed_s: float):
        super().__init__(message)
        self.epoch, self.needed_s = epoch, needed_s


PROBE_EVERY = 10  # the per-stage probe measures one optimizer step in this many
PROGRESS_EVERY_S = 180.0  # without a terminal (a log file), a progress line within an epoch this often
LONG_RUN_IMAGES = 200_000  # training images (epochs x set) from which a run is "long" (profiles full and tune)


@dataclass(frozen=True)
class StopRule:
    """When a run stops before its last epoch, and when it checkpoints.

    A run stops only where it can resume: it checkpoints, then ``fit`` raises ``RunWontFit``.
    """

    deadline: float | None = None  # a time.time() value; None: the run never stops early
    until_deadline: bool = False  # train up to the deadline, inside an epoch if need be; else stop after
    #                               an epoch as soon as the rest, at that epoch's pace, would end past it
    judge_first: bool = False  # with until_deadline: after the first epoch this call trains, stop anyway if the
    #                            rest would end past the deadline (a run slower than its estimate makes room)
    every_s: float = 0.0  # checkpoint after an epoch once this many seconds passed since the last (0: every epoch)
    within_s: float = 600.0  # inside an epoch, checkpoint this often (0: never): long CPU epochs take hours

    def stop(self, rest_s: float | None = None, *, first: bool = False) -> bool:
        """Whether to stop now. ``rest_s``: after an epoch, the seconds the rest of the run needs; None
        inside an epoch (where only ``until_deadline`` stops). ``first``: the epoch was the first of this call."""
        if self.deadline is None:
            return False
        if self.until_deadline and not (first and self.judge_first and rest_s is not None):
            return time.time() >= self.deadline
        return rest_s is not None and time.time() + rest_s > self.deadline

    def checkpoint_due(self, since_s: float, *, within_epoch: bool = False) -> bool:
        """Whether to checkpoint ``since_s`` seconds after the last checkpoint (or the run's start)."""
        if within_epoch:
            return bool(self.within_s) and since_s >= self.within_s
        return since_s >= self.every_s


def fit(cfg: TrainConfig, *, data: CIFAR10 | None = None, device: str | torch.device | None = None,
        engine: Engine | None = None, resume: bool = True, verbose: bool = True, stops: StopRule = StopRule(),
        callbacks: Sequence[Callback] = ()) -> FitResult:  # fmt: skip
    """Train ``cfg.model`` under ``cfg`` (see the module docstring) and return the history, the test predictions and the
    trained model.

    The engine is ``engine``, else the one a resumed checkpoint was trained with, else ``engine.choose``'s for the
    device. With ``resume`` a checkpoint of the same config (``checkpoint_path``) is picked up and the run ends with the
    same history as an uninterrupted one. ``stops`` says when to checkpoint and when to stop early
    (raising ``RunWontFit``); ``callbacks`` ride along after the run's own (tests use them to interrupt a run).
    """
    # -- build: the data, the engine, the model and its optimizer, the loaders, the riders
    device = torch.device(device) if device is not None else default_device()
    data = cfg.select(data if data is not None else load_cifar10())
    engine = engine or _engine_for(cfg, data, device, resume)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    model, opt = build(cfg, engine)
    init_fingerprint = aftertrain.fingerprint(model)  # the stored run can check a rebuilt initialisation
    ld = loaders(cfg, data, engine)
    steps_per_epoch = len(ld["train"])
    total_steps = cfg.epochs * steps_per_epoch
    loss_fn = engine.loss_fn(model, cfg.label_smoothing)
    probe = StageProbe(model, device)
    # the thin nets' gradient monitor, on a fixed, class-balanced batch of clean training images
    monitor = (aftertrain.Monitor(*balanced(ld["clean"], aftertrain.probe_images(len(data.train_y))), cfg.epochs)
               if aftertrain.monitored(cfg.model) else None)  # fmt: skip
    measures: list[Callback] = [probe, *([monitor] if monitor else [])]

    # -- resume: the weights, the optimizer, the history and the riders' sums, from the newest sound checkpoint
    ckpt = checkpoint_path(cfg)
    rows, at = [], Position()
    say = (lambda line: print(line, flush=True)) if verbose else None
    state = _usable_checkpoint(cfg, device, set_aside=True, say=say) if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        rows, at = state["history"], _position(state)
        for cb in [*measures, *callbacks]:
            if cb.key:
                cb.load_state(state.get(cb.key))
    start = at
    riders = [*measures, *([ProgressLine(cfg, steps_per_epoch, seen=at.seen)] if verbose else []), *callbacks]
    if verbose:
        _say_start(cfg, device, engine, rows, at, steps_per_epoch, len(ld["clean"].y) + len(ld["test"].y),
                   len(data.train_y), resumed=state is not None)  # fmt: skip
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def save():  # atomically; the checkpoint before stays, as previous_path, until the new one is whole
        state = dict(config_hash=cfg.hash, epoch=at.epoch, history=rows, model=model.state_dict(),
                     optimizer=opt.state_dict(), progress=asdict(at), engine=asdict(engine),
                     **{cb.key: cb.state() for cb in riders if cb.key})  # fmt: skip
        if ckpt.exists():
            os.replace(ckpt, previous_path(ckpt))
        atomic_write(ckpt, lambda f: torch.save(state, f))

    wall = last_save = time.perf_counter()
    if (at.epoch, at.step) == (0, 0):
        for cb in riders:
            cb.on_step(0, model, lr_at(0, total_steps, cfg))  # the measurements at initialisation
    preds, stop, rest_s = None, False, float("nan")
    try:
        for epoch in range(at.epoch, cfg.epochs):
            # -- the steps (from at.step on: a resumed run may start inside the epoch)
            model.train()
            ld["train"].set_epoch(epoch)  # the epoch's shuffle and augmentation, from cfg.seed
            loss_sum = torch.zeros((), device=device) + at.loss_sum  # summed on the device, read once an epoch
            correct = torch.zeros((), device=device, dtype=torch.long) + at.correct
            seen, riders_s, t0 = at.seen, 0.0, time.perf_counter()
            for i, (x, y) in enumerate(ld["train"].batches(start=at.step), start=at.step):
                step = epoch * steps_per_epoch + i  # optimizer steps taken before this one
                lr = lr_at(step, total_steps, cfg)
                probe.recording = i % PROBE_EVERY == 0  # the per-stage probe samples one step in PROBE_EVERY
                loss, logits = train_step(model, opt, loss_fn, x, y, lr, after_backward=probe.after_backward)
                probe.recording = False
                loss_sum += loss * len(y)
                correct += (logits.argmax(1) == y).sum()
                seen += len(y)
                tr = time.perf_counter()
                for cb in riders:
                    cb.on_step(step + 1, model, lr)
                riders_s += time.perf_counter() - tr  # the riders' time is not training time
                last = i + 1 == steps_per_epoch  # the epoch's end checkpoints below, after the evaluation
                if not last and ((stop := stops.stop()) or
                                 stops.checkpoint_due(time.perf_counter() - last_save, within_epoch=True)):
                    sync(device)  # the epoch's sums so far go into the checkpoint; the clock restarts
                    at = Position(epoch, i + 1, loss_sum.item(), int(correct.item()), seen,
                                  at.seconds + time.perf_counter() - t0 - riders_s)  # fmt: skip
                    riders_s, t0 = 0.0, time.perf_counter()
                    save()
                    last_save = time.perf_counter()
                    if stop:
                        break
            if stop:
                break
            sync(device)
            at.seconds += time.perf_counter() - t0 - riders_s

            # -- the evaluation: the epoch's history row
            eval_started = time.perf_counter()
            train_loss = loss_sum.item() / seen
            if not math.isfinite(train_loss):
                raise _diverged(cfg, rows, epoch, steps_per_epoch, f"the training loss became {train_loss}")
            clean_loss, clean_acc, _ = evaluate(model, ld["clean"], engine)
            if not math.isfinite(clean_loss):  # BatchNorm's running statistics are gone for good: NaN stays NaN
                raise _diverged(cfg, rows, epoch, steps_per_epoch,
                                f"the eval-mode loss on the training images became {clean_loss}")  # fmt: skip
            test_loss, test_acc, preds = evaluate(model, ld["test"], engine)
            lr = lr_at((epoch + 1) * steps_per_epoch - 1, total_steps, cfg)
            columns = {}
            for cb in riders:
                columns |= cb.on_epoch_end(epoch + 1, (epoch + 1) * steps_per_epoch, model, lr)
            row = dict(
                epoch=epoch + 1, train_loss=train_loss, train_acc=int(correct.item()) / seen,
                clean_train_loss=clean_loss, clean_train_acc=clean_acc, test_loss=test_loss, test_acc=test_acc,
                lr=lr, seconds=at.seconds, images_per_s=seen / at.seconds,
                epoch_seconds=at.seconds + time.perf_counter() - eval_started, **columns,
            )  # fmt: skip
            rows.append(row)
            at = Position(epoch=epoch + 1)
            if epoch == start.epoch and (doubt := confirm(engine, cfg.model, cfg.batch_size, row["images_per_s"])):
                print(f"{cfg.run_id}: {doubt}", flush=True)  # the run keeps its engine: its history stays bit for bit

            # -- the checkpoint, and whether the rest still fits
            rest_s = (cfg.epochs - epoch - 1) * row["epoch_seconds"]
            stop = epoch + 1 < cfg.epochs and stops.stop(rest_s, first=epoch == start.epoch)
            if stop or stops.checkpoint_due(time.perf_counter() - last_save):
                save()
                last_save = time.perf_counter()
            for cb in riders:
                cb.after_epoch(row)
            if stop:
                break
    finally:
        probe.close()
    if stop:
        raise _stopped(cfg, at, steps_per_epoch, rest_s)

    # -- the result
    if preds is None:  # a finished checkpoint: the predictions of its weights
        _, _, preds = evaluate(model, ld["test"], engine)
    history = pd.DataFrame(rows)
    history.attrs["config"] = cfg.to_dict()
    cuda = device.type == "cuda"
    info = dict(
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if cuda else f"CPU: {cpu_name()} ({os.cpu_count()} cores)",
        engine=engine.record(), torch=torch.__version__, cuda=torch.version.cuda, data_source=data.source,
        # what the test_* columns and the predictions score: the test set, or held-out training images
        scored_on=f"{cfg.holdout} held-out training images" if cfg.holdout else "test images",
        wall_s=time.perf_counter() - wall, train_s=float(history["seconds"].sum()) if len(history) else 0.0,
        peak_memory_mb=torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
        resumed_after_epoch=start.epoch, init_fingerprint=init_fingerprint,
    )  # fmt: skip
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return FitResult(history=history, predictions=preds, info=info, state_dict=state_dict,
                     tables=monitor.tables() if monitor else {}, model=model, engine=engine, data=data)  # fmt: skip


@dataclass
class FitResult:
    """What a finished run hands to the results store (``cnnlib.results``)."""

    history: pd.DataFrame
    predictions: torch.Tensor  # (n_test,) predicted class per test image, data-set order
    info: dict  # device, engine, versions, data source, wall time, peak memory
    state_dict: dict  # the final weights, on the CPU
    tables: dict[str, pd.DataFrame]  # aftertrain.TABLES name -> table measured during training
    # the trained model on its device, its engine and the images it used (cfg.select'ed): what the tables
    # measured on the trained weights need, right after training (``cnnlib.results.measure_tables``)
    model: nn.Module | None = field(default=None, repr=False)
    engine: Engine | None = None
    data: CIFAR10 | None = field(default=None, repr=False)


# -- the step and what it is built from


def train_step(model: nn.Module, opt: torch.optim.Optimizer, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor,
               lr: float, after_backward: Callable[[], None] | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """One optimizer step of the recipe; returns the detached loss and logits. ``loss_fn(x, y) -> (loss,
    logits)`` is the forward pass and the label-smoothing loss under the engine's precision
    (``Engine.loss_fn``); ``after_backward`` sees the gradients before the optimizer uses them."""
    for group in opt.param_groups:
        group["lr"] = lr  # the one-cycle schedule sets it every step
    loss, logits = loss_fn(x, y)  # forward and loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if after_backward is not None:
        after_backward()
    opt.step()
    return loss.detach(), logits.detach()


def optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The recipe's SGD: Nesterov momentum and weight decay on every parameter (``train_step`` sets the lr)."""
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                           weight_decay=cfg.weight_decay)  # fmt: skip


def build(cfg: TrainConfig, engine: Engine | str | torch.device) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The initialised model (seeded by cfg.seed, on the engine's device and memory format) and its optimizer."""
    torch.manual_seed(cfg.seed)
    model = as_engine(engine).prepare(create_model(cfg.model, **dict(cfg.model_kwargs)))
    return model, optimizer(model, cfg)


def stepper(model_name: str, batch: int, engine: Engine,
            edit: Callable[[nn.Module], object] | None = None) -> Callable[[], None]:
    """One ``train_step`` of a freshly seeded ``model_name`` with the recipe's optimizer and loss under
    ``engine``, on fixed random images, as a function to call: what the engine's check times
    (``cnnlib.engine.check``, ``time_step``). ``edit``, if given, changes the built model in place
    before the step is made (a benchmark's variant of a net: same parameters, another computation)."""
    cfg = TrainConfig(model_name, batch_size=batch)  # seed 0
    model, opt = build(cfg, engine)
    if edit is not None:
        edit(model)
    x = torch.randn(batch, 3, 32, 32, device=engine.torch_device)
    y = torch.randint(0, 10, (batch,), device=engine.torch_device)
    if engine.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    loss_fn = engine.loss_fn(model, cfg.label_smoothing)
    return lambda: train_step(model, opt, loss_fn, x, y, cfg.lr)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def as_engine(engine: Engine | str | torch.device) -> Engine:
    """An engine as given, or for a bare device the plain one (fp32 NCHW on a CPU, bf16 channels_last on
    CUDA): what rebuilding weights and measuring tables need, without the training check."""
    if isinstance(engine, Engine):
        return engine
    device = torch.device(engine)
    cuda = device.type == "cuda"
    return Engine(str(device), "bf16" if cuda else "fp32", cuda, False, torch.get_num_threads(), "plain")


def _engine_for(cfg: TrainConfig, data: CIFAR10, device: torch.device, resume: bool) -> Engine:
    """The engine a resumed checkpoint was trained with, where it can run on ``device`` (its history continues
    bit for bit), else the engine check's choice for the device."""
    e = (peek_checkpoint(cfg) or {}).get("engine") if resume else None
    if e and torch.device(e["device"]).type == device.type:
        return Engine(**(e | dict(device=str(device), threads=torch.get_num_threads())))
    # a long run waits for free cores (a minute at most) rather than train for hours on a busy check
    long_run = cfg.epochs * len(data.train_y) >= LONG_RUN_IMAGES
    steps = cfg.epochs * max(1, len(data.train_y) // cfg.batch_size)
    return choose(device, cfg.model, cfg.batch_size, stepper=stepper, tries=CHECK_TRIES if long_run else 1,
                  run_steps=steps)


def interleaved(labels: torch.Tensor, n: int | None = None) -> torch.Tensor:
    """Indices of ``n`` images (default all) ordered class by class in turn (the first image of
    each class, then the second, ...), so that every prefix is as balanced as it can be. The
    data sets are stored class by class: a plain prefix would hold one or two classes."""
    labels = labels.cpu()
    rank = torch.empty_like(labels)  # each image's place within its class
    for c in labels.unique():
        where = (labels == c).nonzero().flatten()
        rank[where] = torch.arange(len(where))
    return torch.argsort(rank * (int(labels.max()) + 1) + labels)[:n]  # by rank, then by class


def loaders(cfg: TrainConfig, data: CIFAR10, engine: Engine | str | torch.device) -> dict[str, DeviceLoader]:
    """The training loader (augmented, shuffled), the clean training images (a balanced subset
    of cfg.clean_subset images, or all of them) and the test images (the held-out training
    images when cfg.holdout is set: see ``TrainConfig.select``)."""
    engine = as_engine(engine)
    kw = dict(mean=data.mean, std=data.std, device=engine.torch_device, channels_last=engine.channels_last)
    if (n_clean := cfg.n_clean(data)) < len(data.train_y):
        idx = interleaved(data.train_y, n_clean)
        clean_x, clean_y = data.train_x[idx], data.train_y[idx]
    else:  # all of them, in data-set order
        clean_x, clean_y = data.train_x, data.train_y
    return dict(
        train=DeviceLoader(data.train_x, data.train_y, batch_size=cfg.batch_size, train=True, seed=cfg.seed, **kw),
        clean=DeviceLoader(clean_x, clean_y, batch_size=1000, train=False, **kw),
        test=DeviceLoader(data.test_x, data.test_y, batch_size=1000, train=False, **kw),
    )


def balanced(loader: DeviceLoader, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of up to ``n`` (default all) of a loader's images, normalised, on its device, in
    ``interleaved`` order: any prefix is balanced across classes. The gradient monitor, the landscapes and
    the lesions take prefixes of these."""
    x, y = (torch.cat(t) for t in zip(*loader, strict=True))
    idx = interleaved(y, min(n, len(y)) if n is not None else None).to(y.device)
    return x[idx], y[idx]


# -- the riders: measurements and the progress line, called from one place in fit's loop


class Callback:
    """What rides along a training run. ``fit`` calls every rider at the same points, in order, and does
    not count their time as training time:

    * ``on_step(step, model, lr)`` after optimizer step ``step`` (counted from 1; 0: at initialisation,
      before the first step of a fresh run), ``lr`` the step's learning rate;
    * ``on_epoch_end(epoch, step, model, lr) -> dict`` after an epoch's evaluation (``epoch`` counted
      from 1, ``step`` the steps taken): columns for the epoch's history row;
    * ``after_epoch(row)`` once the row is in the history and the checkpoint decided;
    * ``state()`` / ``load_state(state)``: what a checkpoint keeps under the key ``key`` (None: nothing),
      so that a resumed run ends as an uninterrupted one.

    ``cnnlib.aftertrain.Monitor`` has the same methods.
    """

    key: str | None = None

    def on_step(self, step: int, model: nn.Module, lr: float) -> None:
        pass

    def on_epoch_end(self, epoch: int, step: int, model: nn.Module, lr: float) -> dict:
        return {}

    def after_epoch(self, row: dict) -> None:
        pass

    def state(self) -> dict | None:
        return None

    def load_state(self, state: dict | None) -> None:
        pass


class StageProbe(Callback):
    """Accumulates, on the device, each stage's gradient L2 norm and output std on sampled steps.

    Only steps with ``recording`` set are measured (``fit`` samples one in ``PROBE_EVERY``), so the probe's extra work
    (an fp32 std of every stage output, a norm of every gradient) is a small fraction of training. Its means over the
    epoch are the history's ``grad_<stage>`` and ``act_std_<stage>`` columns.
    """

    key = "probe"

    def __init__(self, model: nn.Module, device: torch.device):
        self.names = list(model.stages)
        self.params = [[p for p in getattr(model, n).parameters()] for n in self.names]
        self.act_std = torch.zeros(len(self.names), device=device)
        self.grad_norm = torch.zeros(len(self.names), device=device)
        self.steps = 0
        self._handles = [getattr(model, n).register_forward_hook(self._hook(i)) for i, n in enumerate(self.names)]
        self.recording = False

    def _hook(self, i: int):
        def hook(module, inputs, output):
            if self.recording:
                self.act_std[i] += output.detach().float().std()

        return hook

    def after_backward(self):
        """Called by ``train_step`` between the backward pass and the optimizer step."""
        if not self.recording:
            return
        for i, params in enumerate(self.params):
            grads = [p.grad for p in params if p.grad is not None]
            if grads:
                self.grad_norm[i] += torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        self.steps += 1

    def on_epoch_end(self, epoch: int, step: int, model: nn.Module, lr: float) -> dict[str, float]:
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

    def load_state(self, state: dict | None) -> None:
        if state:
            self.act_std.copy_(state["act_std"])
            self.grad_norm.copy_(state["grad_norm"])
            self.steps = state["steps"]

    def close(self):
        for h in self._handles:
            h.remove()


class ProgressLine(Callback):
    """The run's progress in words. Inside an epoch: on a terminal a bar; without one (a log file) a line
    every ``PROGRESS_EVERY_S`` seconds with the rate since the last line and the time the epoch's training
    still needs at that rate. After each epoch: its losses, accuracies and rate. ``seen``: the images
    trained so far in the epoch the run starts in."""

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int, *, seen: int = 0, log: bool | None = None):
        self.cfg, self.steps = cfg, steps_per_epoch
        self.log = not sys.stdout.isatty() if log is None else log
        self.bar = None
        self.t, self.seen = time.perf_counter(), seen  # the last line's time and the epoch's images then

    def on_step(self, step: int, model: nn.Module, lr: float) -> None:
        if step == 0:
            return
        epoch, i = divmod(step - 1, self.steps)  # i: the step's index within its epoch
        if not self.log:
            if self.bar is None:
                self.bar = tqdm(total=self.steps, initial=i, desc=self._prefix(epoch), leave=False,
                                disable=None)  # None: only on a terminal
            self.bar.update(1)
            return
        if (now := time.perf_counter()) - self.t < PROGRESS_EVERY_S:
            return
        seen = (i + 1) * self.cfg.batch_size  # every training batch is whole (the loader drops the rest)
        rate = (seen - self.seen) / (now - self.t)
        left = (self.steps - i - 1) * self.cfg.batch_size / rate
        print(f"{self._prefix(epoch)} step {i + 1}/{self.steps}: {rate:.0f} img/s, the epoch's training ends in "
              f"about {left / 60:.0f} min", flush=True)  # fmt: skip
        self.t, self.seen = now, seen

    def after_epoch(self, row: dict) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        cfg = self.cfg
        print(f"{cfg.run_id} epoch {row['epoch']:>3}/{cfg.epochs}  train loss {row['train_loss']:.3f}"
              f"  acc {row['train_acc']:.3f}  {cfg.scored} loss {row['test_loss']:.3f}  acc {row['test_acc']:.3f}"
              f"  {row['epoch_seconds']:.1f}s  {row['images_per_s']:.0f} img/s", flush=True)  # fmt: skip
        self.t, self.seen = time.perf_counter(), 0

    def _prefix(self, epoch: int) -> str:
        return f"{self.cfg.run_id} epoch {epoch + 1}/{self.cfg.epochs}"


# -- evaluation and checkpoints


@torch.no_grad()
def evaluate(model: nn.Module, loader: DeviceLoader, engine: Engine) -> tuple[float, float, torch.Tensor]:
    """Mean loss (plain cross-entropy), accuracy and the predicted class of every image, in loader order,
    under the engine's precision (eager: the evaluation batches have other shapes than training's)."""
    model.eval()
    loss_sum, preds = torch.zeros((), device=engine.torch_device), []
    for x, y in loader:
        with engine.autocast():
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        preds.append(logits.argmax(1))
    preds = torch.cat(preds)
    return loss_sum.item() / len(preds), int((preds == loader.y).sum()) / len(preds), preds.cpu()


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


@dataclass
class Position:
    """Where a run stands, as a checkpoint keeps it (``progress``): epochs done, and within the next epoch the steps
    done and their running sums, so that a run stopped inside a long epoch resumes there, bit for bit."""

    epoch: int = 0  # finished epochs
    step: int = 0  # optimizer steps done within epoch + 1
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0  # training time of epoch + 1 so far


def _position(state: dict) -> Position:
    """A checkpoint's position. Checkpoints written before the riders had keys of their own kept the
    probe's sums inside ``progress``: they move to ``state["probe"]``."""
    p = dict(state.get("progress") or {"epoch": state["epoch"]})
    state.setdefault("probe", p.pop("probe", None))
    return Position(**p)


def peek_checkpoint(cfg: TrainConfig) -> dict | None:
    """What a checkpoint of ``cfg`` says about its progress (epochs done, steps into the next,
    the engine), or None without one of this config."""
    state = _usable_checkpoint(cfg)  # a damaged one is skipped here, and set aside (and named) when fit resumes
    if state is None:
        return None
    at = _position(state)
    return dict(epoch=at.epoch, step=at.step, engine=state.get("engine"), images_per_s=_median_rate(state["history"]),
                train_s=sum(r["seconds"] for r in state["history"]) + at.seconds)  # fmt: skip


def _median_rate(rows: list[dict]) -> float | None:
    """The median training rate (images/s) of the epochs in ``rows`` (the higher one of an even count); None
    before the first epoch."""
    return statistics.median_high(r["images_per_s"] for r in rows) if rows else None


def _say_start(cfg: TrainConfig, device: torch.device, engine: Engine, rows: list[dict], at: Position,
               steps_per_epoch: int, n_eval: int, n_train: int, *, resumed: bool) -> None:  # fmt: skip
    """Where the run starts and how long the rest should take, from the epochs done so far or the engine's
    measured check."""
    if resumed:
        within = f", step {at.step}/{steps_per_epoch} of epoch {at.epoch + 1}" if at.step else ""
        print(f"{cfg.run_id}: resuming after epoch {at.epoch}/{cfg.epochs}{within}")
    if at.epoch >= cfg.epochs:
        return
    rate, source = _median_rate(rows), "the epochs so far"
    if rate is None and device.type == "cpu":
        rate, source = cached_rate(cfg.model), "a measured step"
    expected = ""
    if rate:
        steps_left = (cfg.epochs - at.epoch) * steps_per_epoch - at.step
        seconds = steps_left * cfg.batch_size / rate + (cfg.epochs - at.epoch) * n_eval / (3 * rate)
        expected = f"; about {_duration(seconds)} at {rate:.0f} img/s ({source})"
    print(f"{cfg.run_id}: training on {n_train:,} images for {cfg.epochs - at.epoch} epoch(s) on {device} "
          f"({steps_per_epoch} steps each; {engine.describe()}){expected}", flush=True)  # fmt: skip


def _diverged(cfg: TrainConfig, rows: list[dict], epoch: int, steps_per_epoch: int, what: str) -> TrainingDiverged:
    total = cfg.epochs * steps_per_epoch
    lrs = lr_at(epoch * steps_per_epoch, total, cfg), lr_at((epoch + 1) * steps_per_epoch - 1, total, cfg)
    return TrainingDiverged(f"{cfg.run_id}: {what} in epoch {epoch + 1} of {cfg.epochs}, where the schedule's lr "
                            f"went from {lrs[0]:.3g} to {lrs[1]:.3g} (peak {cfg.lr:g}); try a lower lr",
                            pd.DataFrame(rows))  # the history: the epochs before it  # fmt: skip


def _stopped(cfg: TrainConfig, at: Position, steps_per_epoch: int, rest_s: float) -> RunWontFit:
    if at.step:  # inside an epoch
        return RunWontFit(f"{cfg.run_id}: stopped at the deadline in epoch {at.epoch + 1}/{cfg.epochs} "
                          f"(step {at.step}/{steps_per_epoch}); it resumes from its checkpoint",
                          at.epoch, float("nan"))  # fmt: skip
    return RunWontFit(f"{cfg.run_id}: stopped after epoch {at.epoch}/{cfg.epochs}; the rest needs about "
                      f"{rest_s:.0f} s and would end past the deadline; it resumes from its checkpoint",
                      at.epoch, rest_s)  # fmt: skip


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min" if seconds >= 90 else \
        f"{seconds:.0f} s"
