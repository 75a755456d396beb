"""How a device trains: precision, memory format, compiled or not, threads, decided once per run.

``Engine`` is the one owner of these choices; ``cnnlib.train`` hands it to the model builder, the loaders, the training
step and the evaluation, and records it in ``run.json``. The check times the training loop's own step, which its callers
hand it (``stepper``: ``cnnlib.train.stepper``); this module does not import the training loop.

* CUDA: bf16 autocast, channels_last, eager (cuDNN autotuning is set by ``fit``).
* CPU: bf16 autocast only where the CPU has hardware bf16 (AMX or AVX512-BF16) *and* a short measured check of the
  training step finds it faster than fp32; channels_last where the same check finds it faster. Without hardware bf16 the
  CPU stays in fp32 (bf16 there is emulated and several times slower). The check (``check``) times the candidates in
  turns and compares medians, so that a busy moment cannot decide it, and records how much of the cores other processes
  used meanwhile. It is cached beside the data cache (``engine.json``) once per machine, model, batch size and thread
  count: for good if the cores were free enough, else as provisional, taken again at the next start. A run confirms its
  check after its first epoch (``confirm``); a rate far below the check's prediction puts the check in doubt, and the
  next run takes it again. ``python -m cnnlib engine`` lists the checks; ``--recheck`` takes them again.
* ``torch.compile`` of the forward pass and loss is used only when asked for (``CNNLIB_COMPILE=1``); see
  ``benchmarks/RESULTS.md`` for where it was measured to pay.

Switches (environment variables, each ``auto`` by default): ``CNNLIB_PRECISION`` = ``fp32`` | ``bf16``;
``CNNLIB_CHANNELS_LAST`` = ``0`` | ``1``; ``CNNLIB_COMPILE`` = ``0`` | ``1``.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .paths import atomic_write, user_cache

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
        """In words, as the run's start line and the notebooks' provenance lines say it."""
        precision = "bf16 autocast" if self.precision == "bf16" else self.precision
        fmt = "channels_last" if self.channels_last else "NCHW"
        return f"{precision}, {fmt}, {'compiled' if self.compiled else 'eager'}, {self.threads} thread(s)"


@cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_name() -> str:
    names = [line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines() if line.startswith("model name")]
    return names[0] if names else "unknown CPU"


def bf16_features() -> tuple[str, ...]:
    """The hardware bf16 features this CPU reports (empty without any)."""
    flags = {f for line in _cpuinfo().splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
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
    return Path(value).expanduser() if value else user_cache() / "engine.json"


# A training step to time, built by the caller: ``stepper(model_name, batch, engine)`` returns one step of the
# recipe (``cnnlib.train.stepper``: the training loop's own step and optimizer) as a function to call.
Stepper = Callable[[str, int, Engine], Callable[[], None]]


def time_step(model_name: str, batch: int, engine: Engine, *, stepper: Stepper, steps: int = 2,
              warmup: int = 1) -> tuple[float, float]:  # fmt: skip
    """(seconds per training step, seconds of the ``warmup`` untimed steps before: the compile time
    when compiled) of the recipe's step (``stepper``) under ``engine``, on random images. On CUDA the
    clock waits for the queued kernels."""
    step = stepper(model_name, batch, engine)
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(engine.torch_device)
    t1 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(engine.torch_device)
    return (time.perf_counter() - t1) / steps, t1 - t0


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so that a clock read next includes it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# The check. Candidates are timed in turns (A B C A B C ...), so that a busy moment costs every candidate
# about alike instead of one of them all of it, and compared by their median step; two untimed steps each
# first take oneDNN's primitive creation and the allocator's first calls out of the timings.
CHECK_ROUNDS = 5  # timed steps per candidate, one per round
CHECK_WARMUP = 2  # untimed steps per candidate before the rounds
CHECK_STEPS = 3 * (CHECK_ROUNDS + CHECK_WARMUP)  # training steps a check takes (three candidates with bf16)
# A check is trusted only if the other processes on the machine left it its cores: they used at most this
# share of all the cores beyond those the check's threads do not need (a one-thread check on two cores
# leaves the other core to them). A busy loop on one of two cores beside a two-thread check (half of the
# cores) or a test suite does not pass. An untrusted check is cached as provisional: it serves the run
# that took it and is taken again at the next start.
BUSY_SHARE = 0.25
# A run confirms its check after its first epoch: normally its rate at the recipe's batch is at least the
# check's at its small batch (larger batches use the cores better). Below this fraction of the check's
# prediction, the run or the check met a busy machine; the check is taken again before the next run.
CONFIRM_FRACTION = 0.5
CHECK_TRIES = 3  # checks a long run takes at most while the cores are busy (``check``'s ``tries``)
CHECK_PAUSE_S = 20.0  # seconds between them


def _cpu_jiffies() -> tuple[float, int] | None:
    """(seconds the machine's CPUs spent busy since boot, number of CPUs), from /proc/stat (None elsewhere)."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait
    fields = [int(v) for v in lines[0].split()[1:9]]
    busy = sum(fields) - fields[3] - fields[4]
    n_cpus = sum(1 for line in lines if line.startswith("cpu") and not line.startswith("cpu "))  # cpu0, cpu1, ...
    return busy / os.sysconf("SC_CLK_TCK"), max(1, n_cpus)


class _LoadMeter:
    """The share of all the machine's cores that *other* processes used while the block ran
    (``others_share``; None where /proc/stat is missing)."""

    def __enter__(self):
        self.t0, self.own0, self.cpu0 = time.perf_counter(), sum(os.times()[:2]), _cpu_jiffies()  # user + system
        return self

    def __exit__(self, *exc):
        wall, own, cpu = time.perf_counter() - self.t0, sum(os.times()[:2]) - self.own0, _cpu_jiffies()
        self.others_share, self.n_cpus = None, cpu[1] if cpu is not None else None
        if self.cpu0 is not None and cpu is not None and wall > 0:
            others = (cpu[0] - self.cpu0[0]) - own
            self.others_share = min(1.0, max(0.0, others / (wall * cpu[1])))
        return False


def _interleaved_steps(model_name: str, batch: int, candidates: dict[str, Engine], stepper: Stepper,
                       rounds: int = CHECK_ROUNDS, warmup: int = CHECK_WARMUP,
                       clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:  # fmt: skip
    """Seconds of each candidate's training steps, timed in turns: ``rounds`` steps each, after ``warmup``."""
    steps = {name: stepper(model_name, batch, eng) for name, eng in candidates.items()}
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            t0 = clock()
            step()
            times[name].append(clock() - t0)
    return times


def _key(model_name: str, batch: int, threads: int) -> str:
    return f"{cpu_name()}|torch {torch.__version__}|{model_name}|batch {batch}|threads {threads}"


def _candidates() -> dict[str, Engine]:
    """fp32, fp32 + channels_last and, with hardware bf16, bf16 + channels_last, by their cache names."""
    pairs = [("fp32", False), ("fp32", True)] + ([("bf16", True)] if bf16_features() else [])
    return {f"{p}{'+cl' if cl else ''}": Engine("cpu", p, cl, threads=torch.get_num_threads()) for p, cl in pairs}


def trusted(entry: dict) -> bool:
    """Whether a cached check stands: taken with the cores free (entries from before the load was recorded
    do not) and not put in doubt by a run's rate since."""
    return bool(entry.get("trusted")) and not entry.get("doubted")


def check(model_name: str, batch: int, threads: int, *, stepper: Stepper, tries: int = 1) -> dict:
    """Time the candidates for one training step (``stepper``) of ``model_name`` (``_interleaved_steps``), and cache
    the result, as trusted if the cores were free enough (``BUSY_SHARE``), else as provisional. With
    ``tries`` > 1 a busy check is taken again after a pause (``CHECK_PAUSE_S``), up to that many times,
    and the least loaded is kept: a long run is worth a minute's wait for a check it can trust."""
    choice: dict | None = None
    for attempt in range(tries):
        if attempt:
            time.sleep(CHECK_PAUSE_S)
        with _LoadMeter() as load:
            times = _interleaved_steps(model_name, batch, _candidates(), stepper)
        medians = {name: statistics.median(t) for name, t in times.items()}
        best = min(medians, key=medians.get)
        share = load.others_share
        # trusted: the others used at most BUSY_SHARE beyond the cores the check's threads do not need
        this = dict(precision=best.split("+")[0], channels_last=best.endswith("+cl"), batch=batch,
                    step_s={k: round(v, 4) for k, v in medians.items()}, rounds=len(times[best]),
                    others_share=None if share is None else round(share, 3),
                    trusted=share is None or share <= max(0.0, 1 - threads / load.n_cpus) + BUSY_SHARE,
                    checked=time.strftime("%Y-%m-%d %H:%M:%S"))  # fmt: skip
        if choice is None or (this["others_share"] or 0) < (choice["others_share"] or 0):
            choice = this
        if choice["trusted"]:
            break
    with contextlib.suppress(OSError):  # an unwritable cache only costs the check again next time
        _remember(_cache_path(), _key(model_name, batch, threads), choice)
    return choice


def measured_cpu_choice(model_name: str, batch: int, threads: int, *, stepper: Stepper, tries: int = 1) -> dict:
    """The fastest of fp32, fp32 + channels_last and (with hardware bf16) bf16 + channels_last for one
    training step of ``model_name``: the cached check if it is trusted (``trusted``), else a new check."""
    entry = cached_checks().get(_key(model_name, batch, threads))
    if entry is not None and trusted(entry):
        return entry
    return check(model_name, batch, threads, stepper=stepper, tries=tries)


def cached_checks() -> dict[str, dict]:
    """Every check in the cache, by key (``cpu|torch|model|batch|threads``); {} without a cache."""
    try:
        return json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _remember(path: Path, key: str, choice: dict) -> None:
    """Set one check in the cache. Parallel training jobs check their models at the same time, so
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
        atomic_write(path, json.dumps(known, indent=1, sort_keys=True) + "\n")


def predicted_rate(entry: dict) -> float:
    """Training images/s a check predicts for its chosen setting (at the check's batch)."""
    best = f"{entry['precision']}{'+cl' if entry['channels_last'] else ''}"
    return entry["batch"] / entry["step_s"][best]


def confirm(eng: Engine, model_name: str, batch: int, images_per_s: float) -> str | None:
    """After a run's first epoch: compare its training rate with what the engine's check predicted. Far
    below it (``CONFIRM_FRACTION``), the check is marked doubted, so that the next run of the model takes
    it again (this run keeps its engine: its history stays bit for bit), and the return says so in words;
    None when the rate confirms the check, or the engine was not chosen by one."""
    if eng.torch_device.type != "cpu" or not eng.reason.startswith("measured"):
        return None
    key = _key(model_name, min(batch, CHECK_BATCH), eng.threads)
    entry = cached_checks().get(key)
    if entry is None or (entry["precision"], entry["channels_last"]) != (eng.precision, eng.channels_last):
        return None
    predicted = predicted_rate(entry)
    if images_per_s >= CONFIRM_FRACTION * predicted:
        return None
    doubt = (f"a run trained at {images_per_s:.0f} img/s, under {CONFIRM_FRACTION:g}x the {predicted:.0f} "
             f"img/s this check predicted ({time.strftime('%Y-%m-%d %H:%M')})")  # fmt: skip
    with contextlib.suppress(OSError):
        _remember(_cache_path(), key, entry | dict(doubted=doubt))
    return (f"engine check of {model_name} in doubt: {doubt}; the machine was probably busy during the "
            f"check or this epoch; the check is taken again before the next run of {model_name}")


def cached_rate(model_name: str, threads: int | None = None, *, exact: bool = False) -> float | None:
    """Training images/s of ``model_name`` in its chosen setting, from this machine's trusted cached checks (at the
    check's small batch) at ``threads`` (default: this process's thread count), else (unless ``exact``) at the thread
    count it was checked at, or None if it was never checked here with the cores free."""
    prefix = f"{cpu_name()}|torch {torch.__version__}|{model_name}|"
    rates: dict[bool, list[float]] = {True: [], False: []}  # at this thread count or not -> rates
    for key, m in cached_checks().items():
        if key.startswith(prefix) and trusted(m):
            rates[key.endswith(f"|threads {threads or torch.get_num_threads()}")].append(predicted_rate(m))
    found = rates[True] or ([] if exact else rates[False])
    return max(found) if found else None


def describe_check(m: dict) -> str:
    """A cached check in words: its median steps, the hardware bf16 found, the load and whether it stands."""
    times = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in sorted(m["step_s"].items()))
    found = ", ".join(bf16_features()) or "no hardware bf16"
    text = f"{m.get('rounds', 2)} step(s) each at batch {m['batch']} (median {times}; {found})"
    if m.get("others_share") is not None:
        text += f"; other processes used {100 * m['others_share']:.0f}% of the cores"
    if not m.get("trusted"):
        text += "; provisional, taken again at the next start"
    if m.get("doubted"):
        text += f"; in doubt: {m['doubted']}"
    return text


def choose(device: torch.device | str, model_name: str, batch: int, *, stepper: Stepper, tries: int = 1,
           run_steps: int | None = None) -> Engine:  # fmt: skip
    """The engine for training ``model_name`` at ``batch`` images per step on ``device`` (see the module);
    ``stepper`` builds the step a CPU check times (``cnnlib.train.stepper``); ``tries``: how many times a
    CPU check taken on busy cores is taken again (``check``). A run of ``run_steps`` training steps, fewer
    than a check takes (``CHECK_STEPS``: a smoke run, a test's), is not worth one: it trains in fp32 NCHW."""
    device = torch.device(device)
    precision = _switch("CNNLIB_PRECISION", ("fp32", "bf16"))
    cl = _switch("CNNLIB_CHANNELS_LAST", ("0", "1"))
    compiled = _switch("CNNLIB_COMPILE", ("0", "1")) == "1"
    threads = torch.get_num_threads()
    if device.type == "cuda":
        return Engine(str(device), "fp32" if precision == "fp32" else "bf16", cl != "0", compiled, threads,
                      "CUDA: bf16 autocast and channels_last")  # fmt: skip
    if (precision == "auto" or cl == "auto") and run_steps is not None and run_steps < CHECK_STEPS:
        return Engine(str(device), "fp32" if precision == "auto" else precision, cl == "1", compiled, threads,
                      f"not measured: {run_steps} training steps, fewer than the {CHECK_STEPS} a check takes")
    if precision == "auto" or cl == "auto":
        m = measured_cpu_choice(model_name, min(batch, CHECK_BATCH), threads, stepper=stepper, tries=tries)
        reason = f"measured {describe_check(m)}"
        precision = m["precision"] if precision == "auto" else precision
        channels_last = m["channels_last"] if cl == "auto" else cl == "1"
    else:
        reason, channels_last = "set by CNNLIB_PRECISION and CNNLIB_CHANNELS_LAST", cl == "1"
    return Engine(str(device), precision, channels_last, compiled, threads, reason)
