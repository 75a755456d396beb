"""How a device trains: precision, memory format, compiled or not, threads, decided once per run.

``Engine`` is the one owner of these choices; ``cnnlib.train`` hands it to the model builder,
the loaders, the training step and the evaluation, and records it in ``run.json``.

* CUDA: bf16 autocast, channels_last, eager (cuDNN autotuning is set by ``fit``).
* CPU: bf16 autocast only where the CPU has hardware bf16 (AMX or AVX512-BF16) *and* a short
  measured check of one training step finds it faster than fp32; channels_last where the
  same check finds it faster. Without hardware bf16 the CPU stays in fp32 (bf16 there is
  emulated and several times slower). The check runs once per machine, model, batch size and
  thread count, and its result is cached beside the data cache (``engine.json``).
* ``torch.compile`` of the forward pass and loss is used only when asked for
  (``CNNLIB_COMPILE=1``); see ``benchmarks/RESULTS.md`` for where it was measured to pay.

Switches (environment variables, each ``auto`` by default): ``CNNLIB_PRECISION`` =
``fp32`` | ``bf16``; ``CNNLIB_CHANNELS_LAST`` = ``0`` | ``1``; ``CNNLIB_COMPILE`` = ``0`` | ``1``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import cache_dir
from .paths import atomic_write

__all__ = ["Engine", "bf16_features", "choose", "cpu_name"]

BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of hardware bf16 arithmetic
CHECK_BATCH = 64  # images per step of the measured check (short: a few seconds on the slowest model)


@dataclass(frozen=True)
class Engine:
    """The training set-up of one run on one device."""

    device: str  # "cpu", "cuda", "cuda:1", ...
    precision: str = "fp32"  # "fp32" or "bf16" (autocast; loss, BatchNorm statistics and optimizer in fp32)
    channels_last: bool = False  # model and batches in channels_last memory format
    compiled: bool = False  # forward pass and loss under torch.compile
    threads: int = 1  # intra-op threads (CPU)
    reason: str = ""  # how the choice was made, in words

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def autocast(self):
        """The autocast context of the forward pass (a no-op in fp32)."""
        if self.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(self.torch_device.type, dtype=torch.bfloat16)

    def prepare(self, model: nn.Module) -> nn.Module:
        """The model on the device, in the engine's memory format."""
        model = model.to(self.torch_device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def loss_fn(self, model: nn.Module, label_smoothing: float):
        """``f(x, y) -> (loss, logits)`` of the recipe, compiled if the engine compiles."""

        def f(x: torch.Tensor, y: torch.Tensor):
            with self.autocast():
                logits = model(x)
            return F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing), logits

        return torch.compile(f) if self.compiled else f

    def record(self) -> dict:
        """What ``run.json`` keeps of it."""
        d = asdict(self)
        if self.torch_device.type == "cpu":
            d |= dict(cpu=cpu_name(), bf16_features=list(bf16_features()))
        return d

    def describe(self) -> str:
        fmt = "channels_last" if self.channels_last else "NCHW"
        comp = "compiled" if self.compiled else "eager"
        return f"{self.precision}, {fmt}, {comp}, {self.threads} thread(s)"


@cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_name() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def bf16_features() -> tuple[str, ...]:
    """The hardware bf16 features this CPU reports (empty without any)."""
    flags = set()
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    return tuple(f for f in BF16_FLAGS if f in flags)


def _switch(name: str, allowed: tuple[str, ...]) -> str:
    value = os.environ.get(name, "auto").strip().lower() or "auto"
    if value not in ("auto", *allowed):
        raise ValueError(f"{name}={value!r}: use auto, {' or '.join(allowed)}")
    return value


def _cache_path() -> Path:
    """$CNNLIB_ENGINE_CACHE (the test suite's notebooks keep their checks, taken on a loaded machine, out of
    the user's cache, whose rates the plan's estimates read), else ``engine.json`` beside the data cache."""
    value = os.environ.get("CNNLIB_ENGINE_CACHE")
    return Path(value).expanduser() if value else cache_dir() / "engine.json"


def time_step(model_name: str, batch: int, engine: Engine, steps: int = 2, warmup: int = 1) -> tuple[float, float]:
    """(seconds per training step, seconds of the ``warmup`` untimed steps before: the compile time
    when compiled) of the recipe's step (forward, label-smoothing loss, backward, SGD with Nesterov)
    under ``engine``, on random images."""
    from .models import create_model

    torch.manual_seed(0)
    model = engine.prepare(create_model(model_name))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    if engine.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    f = engine.loss_fn(model, 0.1)

    def step():
        loss, _ = f(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    t1 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t1) / steps, t1 - t0


def _step_seconds(model_name: str, batch: int, precision: str, channels_last: bool, steps: int = 2) -> float:
    """Seconds of one eager training step in that precision and memory format, after one warm-up step."""
    return time_step(model_name, batch, Engine("cpu", precision, channels_last), steps)[0]


def measured_cpu_choice(model_name: str, batch: int, threads: int) -> dict:
    """The fastest of fp32, fp32 + channels_last and (with hardware bf16) bf16 + channels_last for
    one training step of ``model_name``, measured once per machine and cached."""
    key = f"{cpu_name()}|torch {torch.__version__}|{model_name}|batch {batch}|threads {threads}"
    path = _cache_path()
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    candidates = [("fp32", False), ("fp32", True)] + ([("bf16", True)] if bf16_features() else [])
    times = {f"{p}{'+cl' if cl else ''}": _step_seconds(model_name, batch, p, cl) for p, cl in candidates}
    best = min(times, key=times.get)
    choice = dict(precision=best.split("+")[0], channels_last=best.endswith("+cl"),
                  step_s={k: round(v, 4) for k, v in times.items()}, batch=batch)  # fmt: skip
    try:
        _remember(path, key, choice)
    except OSError:
        pass  # an unwritable cache only costs the check again next time
    return choice


def _remember(path: Path, key: str, choice: dict) -> None:
    """Add one check to the cache. Parallel training jobs check their models at the same time, so
    the file is read again and merged under an exclusive lock: no job's entry overwrites another's."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            known = json.loads(path.read_text())
        except (OSError, ValueError):
            known = {}
        known[key] = choice
        atomic_write(path, lambda f: f.write((json.dumps(known, indent=1, sort_keys=True) + "\n").encode()))


def cached_rate(model_name: str, threads: int | None = None, *, exact: bool = False) -> float | None:
    """Training images/s of ``model_name`` in its chosen setting, from this machine's cached check
    (at the check's small batch) at ``threads`` (default: this process's thread count), else (unless
    ``exact``) at the thread count it was checked at, or None if it was never checked here."""
    try:
        known = json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return None
    prefix = f"{cpu_name()}|torch {torch.__version__}|{model_name}|"
    rates: dict[bool, list[float]] = {True: [], False: []}  # at this thread count or not -> rates
    for key, m in known.items():
        if key.startswith(prefix):
            best = f"{m['precision']}{'+cl' if m['channels_last'] else ''}"
            rates[key.endswith(f"|threads {threads or torch.get_num_threads()}")].append(m["batch"] / m["step_s"][best])
    found = rates[True] or ([] if exact else rates[False])
    return max(found) if found else None


def choose(device: torch.device | str, model_name: str, batch: int) -> Engine:
    """The engine for training ``model_name`` at ``batch`` images per step on ``device`` (see the module)."""
    device = torch.device(device)
    precision = _switch("CNNLIB_PRECISION", ("fp32", "bf16"))
    cl = _switch("CNNLIB_CHANNELS_LAST", ("0", "1"))
    compiled = _switch("CNNLIB_COMPILE", ("0", "1")) == "1"
    threads = torch.get_num_threads()
    if device.type == "cuda":
        return Engine(str(device), "fp32" if precision == "fp32" else "bf16", cl != "0", compiled, threads,
                      "CUDA: bf16 autocast and channels_last")  # fmt: skip
    if precision == "auto" or cl == "auto":
        m = measured_cpu_choice(model_name, min(batch, CHECK_BATCH), threads)
        times = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in m["step_s"].items())
        found = ", ".join(bf16_features()) or "no hardware bf16"
        reason = f"measured one step at batch {m['batch']} ({times}; {found})"
        precision = m["precision"] if precision == "auto" else precision
        channels_last = m["channels_last"] if cl == "auto" else cl == "1"
    else:
        reason, channels_last = "set by CNNLIB_PRECISION and CNNLIB_CHANNELS_LAST", cl == "1"
    return Engine(str(device), precision, channels_last, compiled, threads, reason)
