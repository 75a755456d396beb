"""The study's plan of runs, what of it exists, and training what is missing within a budget.

The plan is a list of *stages* (``stages``), each a list of *units*, trained in order: a family's runs of one seed form
one unit, a single model outside a family is a unit of its own. A family counts for the notebooks only when all of its
members of a seed exist.

``train_missing`` has two policies:

* ``"sequential"`` (the CPU's, where one run takes hours): the missing runs in plan order, one after another; the run
  that reaches the deadline stops there, checkpointed (within an epoch if need be), and the next call resumes it, bit
  for bit.
* ``"units"`` (the GPU's, where a whole unit takes minutes): a unit starts only if all of its missing runs fit in what
  is left of the budget, so no comparison is left with one member; a run that projects past the deadline stops
  checkpointed. Several units can train at once as separate processes on one device (``workers``), taking units from a
  queue of claim files.
* ``"finish"`` (a CPU whose checkpoints may not outlive the call, e.g. a fresh machine each time): sequential, but a run
  starts (or resumes) only if its estimate at this job's thread count (at the median of its stored rates) fits in what
  is left; the others wait for a longer call, and shorter runs further down the plan go first. Checkpointed runs
  come before the plan's order (``_unit_order``): their checkpoints help only on the machine that wrote them. Stored
  rates can be another day's: after its first epoch a run that would end past the deadline at that epoch's pace
  stops, checkpointed, and the runs after it are judged at that pace (how many times its estimate the run needed).
  When nothing more fits and at least ``FILL_MIN_S`` are left, the call *fills* them with one waiting run (a
  checkpointed one first, else the first in plan order), trained up to the deadline and stopped checkpointed as
  ``sequential`` would: a run longer than any call (seed_senet18, densenet121 on a 2-core CPU) advances wherever the
  machine outlives the call, and the cores are not left idle while the plan has missing runs.
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from . import aftertrain, engine, recipe
from .config import RECIPE_CHECKS, RecipeNotChosen, TrainConfig, make_config
from .constants import LR_CONTROL
from .data import CIFAR10, load_cifar10
from .models import FAMILIES
from .paths import atomic_write, checkpoint_root, results_root
from .results import (
    DamagedRunError,
    diverged_path,
    divergence,
    fit_or_load,
    list_runs,
    load_run,
    record_divergence,
)
from .train import RunWontFit, StopRule, TrainingDiverged, default_device, peek_checkpoint, stepper


def stages(profile: str = "full") -> list[tuple[str, list[list[TrainConfig]]]]:
    """The plan in priority order: (stage name, units); the stage names say what each holds.

    Stage 0 (full profile only) is the recipe checks (``config.RECIPE_CHECKS``, profile ``tune``), scored on 5,000
    held-out training images. Stage 5 asks whether degradation is a property of depth or of the shared recipe's lr 0.8:
    the degradation family at He et al.'s 0.1 at batch 128, linearly scaled to batch 512 (``LR_CONTROL``). In stage 7
    the controlled family's own lr check (``config.RECIPE_CHECKS["controlled"]``) comes before its seeds 1 and 2, which
    wait for its choice; if the choice moves the family's lr, seed 0 is trained again at it first, as the chosen
    setting's variant (``recipe.retraining``), before the choice is recorded; densenet121, the most expensive run, is
    last within each of its seeds.

    In the full profile, a family whose recipe checks have no recorded choice yet has no config to train: its units are
    left out until the choices are recorded (``recipe.record_new``).
    """

    def cfg(name: str, seed: int, **kw) -> TrainConfig | None:
        try:
            return make_config(name, profile, seed, **kw)
        except RecipeNotChosen:  # its family's recipe waits for a check's choice
            return None

    family = lambda fam, seed, tag="": [cfg(n, seed, tag=tag) for n in FAMILIES[fam]]  # noqa: E731
    out = []
    if profile == "full":
        # one run a unit, so that two workers share a check's last setting too
        out.append(("0 recipe check", [[c] for check in RECIPE_CHECKS if not RECIPE_CHECKS[check].get("later")
                                       for c in recipe.configs(check)]))  # fmt: skip
    out += [
        ("1 original report, seed 0", [[cfg(n, 0)] for n in FAMILIES["seed"]]),
        ("2 degradation, seed 0", [family("degradation", 0)]),
        ("3 controlled, seed 0", [family("controlled", 0)]),
        ("4 degradation, seeds 1-2", [family("degradation", s) for s in (1, 2)]),
    ]  # fmt: skip
    if profile == "full":  # the control is of the full profile's recipe
        out.append(("5 degradation at lr 0.4, seeds 0-2", [family("degradation", s, LR_CONTROL) for s in (0, 1, 2)]))
    out += [
        ("6 original report, seeds 1-2", [[cfg(n, s)] for s in (1, 2) for n in FAMILIES["seed"]]),
        ("7 controlled: its lr check, then seeds 1-2",
         ([[c] for c in recipe.configs("controlled")] + [recipe.retraining("controlled")] if profile == "full" else [])
         + [family("controlled", s) for s in (1, 2)]),
        ("8 depth sweep, lr/10 control", [family("depth", s) for s in (0, 1, 2)] + [[cfg("plain56", 0, tag="lr0.1x")]]),
    ]  # fmt: skip
    kept = (([c for c in unit if c is not None] for unit in us) for _, us in out)
    return [(name, [unit for unit in us if unit]) for (name, _), us in zip(out, kept, strict=True)]


def units(profile: str = "full") -> list[list[TrainConfig]]:
    """The plan's units in priority order (the stages, flattened one level)."""
    return [unit for _, us in stages(profile) for unit in us]


def plan(profile: str = "full") -> list[TrainConfig]:
    """Every run of the study, in priority order (the units, flattened)."""
    return [c for unit in units(profile) for c in unit]


@dataclass
class PlanStatus:
    config: TrainConfig
    # "done", "partly" (a checkpoint of this config), "diverged" (this config's loss became NaN: a recipe
    # finding, not retrained until the recipe changes), "missing", "stale" (stored with another config) or
    # "damaged" (a file of the stored run is damaged: restored from git or retrained by hand, never silently)
    state: str
    test_acc: float | None = None
    train_s: float | None = None
    device_name: str | None = None
    epochs_done: int | None = None  # partly: finished epochs in the checkpoint
    steps_done: int | None = None  # partly: optimizer steps into the next epoch
    images_per_s: float | None = None  # partly: median training rate of its epochs so far
    message: str | None = None  # diverged, damaged: what happened

    @property
    def share_left(self) -> float:
        """The share of the run's optimizer steps still to train: 1, or what a partial run's checkpoint leaves."""
        if self.state != "partly":
            return 1.0
        spe = self.config.steps_per_epoch()
        return max(0.0, 1 - (self.epochs_done * spe + self.steps_done) / max(1, self.config.epochs * spe))


def run_status(cfg: TrainConfig, *, checkpoints: bool = False) -> PlanStatus:
    """Whether ``cfg``'s run is stored; with ``checkpoints``, also how far an unfinished one got."""
    try:
        run = load_run(cfg)
        record = divergence(cfg) if run is None else None
    except DamagedRunError as e:
        return PlanStatus(cfg, "damaged", message=str(e))
    if run is not None and not run.matches(cfg):
        return PlanStatus(cfg, "stale")
    if run is not None:
        return PlanStatus(cfg, "done", run.final["test_acc"], run.meta["train_s"], run.meta["device_name"])
    if record is not None:
        return PlanStatus(cfg, "diverged", epochs_done=len(record["history"]), message=record["message"])
    info = peek_checkpoint(cfg) if checkpoints else None
    if info is not None:
        return PlanStatus(cfg, "partly", train_s=info["train_s"], epochs_done=info["epoch"], steps_done=info["step"],
                          images_per_s=info["images_per_s"])  # fmt: skip
    return PlanStatus(cfg, "missing")


def status(profile: str = "full", *, checkpoints: bool = False) -> list[PlanStatus]:
    return [run_status(cfg, checkpoints=checkpoints) for cfg in plan(profile)]


def measure_images_per_s(cfg: TrainConfig, device: torch.device, steps: int = 3) -> float:
    """Training throughput of cfg's recipe from a few timed steps after one untimed (``engine.time_step``),
    under the engine the run would get."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as fit sets it
    eng = engine.choose(device, cfg.model, cfg.batch_size, stepper=stepper)
    return cfg.batch_size / engine.time_step(cfg.model, cfg.batch_size, eng, stepper=stepper, steps=steps)[0]


_measured: dict[tuple[str, str, int], float] = {}  # (model, device type, batch size) -> images/s
START_S = 5.0  # per run: building, moving the data, cuDNN autotuning


_checkpoint_rates: dict[tuple[str, int], float] = {}  # (model, batch size) -> images/s of unfinished runs


def _cpu_of(run) -> tuple:
    eng = run.meta.get("engine", {})
    return eng.get("cpu"), eng.get("bf16_features")


_runs_read: tuple[tuple, list] = ((), [])  # (the store's file stats, its sound runs) as last read


def _sound_runs() -> list:
    """The store's sound runs (``list_runs(skip_damaged=True)``), read again only when a file of it changed: the
    estimates ask for them once per run of the plan, and reading every run each time made ``status`` take
    half a minute."""
    global _runs_read
    root = results_root()
    stats = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.glob("*/*")))
    if stats != _runs_read[0] or not stats:
        _runs_read = (stats, list_runs(skip_damaged=True))
    return _runs_read[1]


def known_rate(cfg: TrainConfig, device_type: str, threads: int | None = None, *, exact: bool = False,
               checks: bool = True, typical: bool = False) -> float | None:  # fmt: skip
    """Training images/s of ``cfg.model`` at ``cfg.batch_size`` on this kind of device (on a CPU: this CPU model) from
    what was measured already: stored runs, then checkpoints of unfinished runs, then the engine's cached check (at its
    small batch, preferably at ``threads``, default this process's; scaled by ``check_scale``, since on a CPU the rate
    per image depends on the batch; ``checks=False`` leaves it out). With
    ``exact``, on a CPU, only what was measured at that thread count counts. Of several stored runs: the fastest (what
    the hardware can do, for planning), or with ``typical`` their median (what a run gets with other work beside it,
    for judging whether one fits before a deadline). None if nothing."""
    # a CPU's rates say nothing of another CPU's; one name ("AMD EPYC") covers CPUs with and without
    # hardware bf16, so the bf16 features must agree too
    here = (engine.cpu_name(), list(engine.bf16_features())) if device_type == "cpu" else None
    rates = [
        r.history["images_per_s"].median()
        for r in _sound_runs()
        if r.config.model == cfg.model and r.config.batch_size == cfg.batch_size
        and r.meta.get("device", "").split(":")[0] == device_type
        and (here is None or _cpu_of(r) == here)
        and not (exact and r.meta.get("engine", {}).get("threads") != (threads or torch.get_num_threads()))
    ]
    if rates:
        return float(statistics.median(rates)) if typical else max(rates)
    if device_type == "cpu":
        ckpt = None if exact else _checkpoint_rates.get((cfg.model, cfg.batch_size))
        checked = engine.cached_rate(cfg.model, threads, exact=exact) if checks and not ckpt else None
        return ckpt or (checked * check_scale(cfg.batch_size, threads, typical=typical) if checked else None)
    return None


def check_scale(batch_size: int, threads: int | None = None, *, typical: bool = False) -> float:
    """How much faster this CPU's stored runs at ``batch_size`` trained than the engine's cached check of the same
    model predicted: the median ratio over the models that have both (of the fastest runs, or with ``typical`` their
    median: ``known_rate``), else 1. The check times a few steps at its small batch, where a CPU trains fewer images a
    second than at the runs' batch (on a Zen 4: 1.13-1.85x at batch 512; on a Xeon with AMX, 1.6x for resnet20), so
    unscaled it made the runs known only by their check look longer than they are."""
    here = (engine.cpu_name(), list(engine.bf16_features()))
    models = sorted({r.config.model for r in _sound_runs() if r.config.batch_size == batch_size
                     and r.meta.get("device", "").split(":")[0] == "cpu" and _cpu_of(r) == here})  # fmt: skip
    ratios = []
    for model in models:
        if checked := engine.cached_rate(model, threads):
            ran = known_rate(SimpleNamespace(model=model, batch_size=batch_size), "cpu", threads, checks=False,
                             typical=typical)  # fmt: skip
            ratios.append(ran / checked)
    return float(statistics.median(ratios)) if ratios else 1.0


def estimate_seconds(cfg: TrainConfig, data: CIFAR10 | None, device: torch.device, *, measure: bool = True,
                     threads: int | None = None, exact: bool = False, checks: bool = True,
                     typical: bool = False) -> float:  # fmt: skip
    """Expected wall time of a run, evaluation, probes and after-training tables included: from stored epoch
    times of the same model and batch size on the same kind of device when there are any (with ``exact``,
    only those at ``threads``; the fastest, or with ``typical`` the median: ``known_rate``), else a short measurement
    (once per model and batch size in a process, at its threads; with ``measure=False`` NaN instead)."""
    n_train, n_test = cfg.n_images(data)
    n_clean = cfg.n_clean(data)
    key = (cfg.model, device.type, cfg.batch_size)
    rate = known_rate(cfg, device.type, threads, exact=exact, checks=checks, typical=typical) or _measured.get(key)
    if rate is None:
        if not measure:
            return math.nan
        _measured[key] = rate = measure_images_per_s(cfg, device)
    # evaluation (clean training images and test images) runs forward only: about a
    # third of a training step per image; each gradient-profile point costs two
    # forward-backward passes over the probe batch
    per_epoch = (n_train + (n_test + n_clean) / 3) / rate
    points = len(aftertrain.PROBE_STEPS) + len(aftertrain.probe_epochs(cfg.epochs))
    probes = points * 2 * aftertrain.probe_images(n_train) / rate if aftertrain.monitored(cfg.model) else 0.0
    # the mechanism tables after training: forward passes, a third of a training step each
    settings = aftertrain.mechanism_settings(n_train, device)
    tables = aftertrain.mechanism_passes(cfg.model, settings) / (3 * rate) if aftertrain.dissected(cfg) else 0.0
    return cfg.epochs * per_epoch * 1.05 + probes + tables + START_S


def measure_missing_rates(profile: str = "full", threads: int | None = None) -> list[str]:
    """On a CPU, run the engine's cached check (one training step per setting, at ``threads``, default this
    process's) for every model of the plan that has no known rate yet, so that ``stage_hours_left`` can
    count it; returns the models measured."""
    if default_device().type != "cpu":
        return []
    measured, before = [], torch.get_num_threads()
    try:
        torch.set_num_threads(threads or before)
        for cfg in {c.model: c for c in plan(profile)}.values():
            if known_rate(cfg, "cpu", threads) is None:
                engine.choose("cpu", cfg.model, cfg.batch_size, stepper=stepper)
                measured.append(cfg.model)
    finally:
        torch.set_num_threads(before)
    return measured


def stage_hours_left(profile: str = "full", device: torch.device | None = None, threads: int | None = None,
                     ) -> list[tuple[str, float, float, int]]:  # fmt: skip
    """Per stage: (name, estimated hours of training left on this kind of device for one job of ``threads`` threads
    (default: this process's) at the best measured rates, the same at the median stored rates (``known_rate``: a
    busy or slower host day), runs without a known rate). Partly trained runs count what their checkpoints leave."""
    device = device or default_device()
    states = {c.run_id: run_status(c, checkpoints=True) for c in plan(profile)}
    for st in states.values():  # what unfinished runs measured counts for their model and batch size
        if st.state == "partly" and st.images_per_s and device.type == "cpu":
            _checkpoint_rates[(st.config.model, st.config.batch_size)] = st.images_per_s
    out = []
    for name, us in stages(profile):
        best, typical, unknown = 0.0, 0.0, 0
        for cfg in (c for u in us for c in u):
            st = states[cfg.run_id]
            if st.state in ("done", "diverged"):  # a diverged config is not trained again
                continue
            est = [estimate_seconds(cfg, None, device, measure=False, threads=threads, typical=typical_rate)
                   for typical_rate in (False, True)]  # the best rate, then the median
            if math.isnan(est[0]):
                unknown += 1
                continue
            best, typical = best + st.share_left * est[0] / 3600, typical + st.share_left * est[1] / 3600
        out.append((name, best, typical, unknown))
    return out


def _claim(claims: Path | None, unit: list[TrainConfig], what: str = "claim") -> bool:
    """Take a unit from the shared queue (first come; ``what`` names the task, e.g. logging that it is
    skipped, so that only one worker does it); always True without a queue."""
    if claims is None:
        return True
    try:
        os.close(os.open(claims / f"{unit[0].run_id}.{what}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def train_missing(budget_s: float, profile: str = "full", *, device: str | None = None,
                  data: CIFAR10 | None = None, log=print, workers: int = 1,
                  checkpoint_every_s: float = 0.0, deadline: float | None = None,
                  claims: Path | None = None, models: list[str] | None = None,
                  policy: str | None = None) -> dict[str, list[str]]:  # fmt: skip
    """Train the plan's missing runs (of ``models`` only, if given) while the budget allows.

    ``policy``: see the module docstring (default: ``"sequential"`` on a CPU, ``"units"`` on a GPU, where the estimates
    of runs that share the device count ``workers`` times, as they go slower). Each finished run is stored at once.
    ``workers > 1`` starts that many worker processes of this function instead.
    """
    deadline = deadline if deadline is not None else time.time() + budget_s
    known = {m for fam in FAMILIES.values() for m in fam}
    if models is not None and (unknown := sorted(set(models) - known)):
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; see python -m cnnlib list")
    dev = torch.device(device) if device else default_device()
    policy = policy or ("sequential" if dev.type == "cpu" else "units")
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; use one of {', '.join(POLICIES)}")
    if workers > 1:
        return _spawn_workers(workers, profile, device, deadline, checkpoint_every_s, log, models, policy)
    data = data if data is not None else load_cifar10()
    done, skipped, trained, stopped = [], [], [], []
    over = False  # a run reached the deadline: nothing more starts
    pace = 1.0  # finish: how many times its estimate a run of this call turned out to need (the host's speed today)
    waits: list[PlanStatus] = []  # finish: runs that did not fit, in plan order (judged-and-stopped ones included)
    waiting: dict[str, str] = {}  # per recipe check: why its families wait for its choice ("" if not)
    for check in RECIPE_CHECKS if profile == "full" else ():
        if recorded := recipe.record_new(check):  # complete since the last call: its choice is now the recipe
            log(f"recipe check '{check}' chose {recorded['setting']}: recorded in cnnlib/recipe_choice.json as "
                "the full profile's recipe of its families")  # fmt: skip
    handled: set[str] = set()  # runs already taken (finish: a checkpointed run first, then not again in its unit)
    for unit in _unit_order(profile, policy):
        unit = [c for c in unit if (models is None or c.model in models) and c.run_id not in handled]
        handled |= {c.run_id for c in unit}
        if not unit:
            continue
        if _waits_for_a_recipe(unit[0], waiting, log):
            skipped += [c.run_id for c in unit if run_status(c).state != "done"]
            continue
        todo = [st for st in (run_status(c, checkpoints=True) for c in unit) if st.state != "done"]
        done += [c.run_id for c in unit if c.run_id not in {st.config.run_id for st in todo}]
        for st in [st for st in todo if st.state in ("diverged", "damaged") and _claim(claims, [st.config], "skip")]:
            log(f"skip {st.config.run_id}: " + (st.message if st.state == "damaged" else
                f"it diverged before with this recipe ({st.message}); change the recipe of its family "
                f"(benchmarks/RESULTS.md) or delete {diverged_path(st.config)}"))  # fmt: skip
            skipped.append(st.config.run_id)
        todo = [st for st in todo if st.state not in ("diverged", "damaged")]
        # a checkpointed run first: it finishes soonest, and its checkpoint helps only on the machine that wrote it
        todo.sort(key=lambda st: st.state != "partly")
        if not todo or not _claim(claims, unit):
            continue
        left = deadline - time.time()
        if over or left < 10:  # nothing more fits; do not spend more of it measuring
            skipped += [st.config.run_id for st in todo]
            continue
        if policy == "units":
            sharing = 1 if claims is None else int((claims / "workers").read_text())  # _spawn_workers wrote it
            est = sum(estimate_seconds(st.config, data, dev) for st in todo) * sharing
            names = " ".join(st.config.run_id for st in todo)
            if est > left:
                skipped += [st.config.run_id for st in todo]
                log(f"skip {names}: needs about {est:.0f} s, {left:.0f} s left")
                continue
            log(f"train {names} (about {est:.0f} s; {left:.0f} s left)")
        for st in todo:
            if over:
                skipped.append(st.config.run_id)
                continue
            if policy != "units" and not _starts(policy, st.config, data, dev, deadline, log, pace):
                skipped.append(st.config.run_id)
                waits.append(st)
                continue
            out = _train(st, StopRule(deadline, until_deadline=policy != "units", judge_first=policy == "finish",
                                      every_s=checkpoint_every_s), data, dev, log)  # fmt: skip
            if out is True:
                trained.append(st.config.run_id)
            elif out is False:
                skipped.append(st.config.run_id)
            else:
                stopped.append(st.config.run_id)
                if policy == "finish" and math.isfinite(out.needed_s):  # judged after its first epoch: too slow
                    pace = max(pace, out.needed_s / max(seconds_to_finish(st.config, data, dev) - START_S, 1.0))
                    waits.append(PlanStatus(st.config, "partly"))
                    log(f"this call's runs need about {pace:.2f}x their estimates; the next ones are judged so")
                else:
                    over = True
    if policy == "finish" and not over and waits and deadline - time.time() >= FILL_MIN_S:
        fill = sorted(waits, key=lambda st: st.state != "partly")[0]  # a checkpoint here already goes first
        log(f"fill {fill.config.run_id}: nothing else fits in the {(deadline - time.time()) / 3600:.1f} h left; "
            "it trains until the deadline and stops checkpointed, to resume on the next call if this machine's "
            "checkpoints last")  # fmt: skip
        out = _train(fill, StopRule(deadline, until_deadline=True, every_s=checkpoint_every_s), data, dev, log)
        if out is not False:  # listed once, by how the fill ended (it may have been judged and stopped before)
            skipped, stopped = ([r for r in rs if r != fill.config.run_id] for rs in (skipped, stopped))
            (trained if out is True else stopped).append(fill.config.run_id)
    log(f"{len(trained)} trained, {len(done)} already present, {len(skipped)} not started, "
        f"{len(stopped)} stopped to resume later; results in {results_root()}")  # fmt: skip
    result = dict(trained=trained, done=done, skipped=skipped, stopped=stopped)
    if claims is not None:  # a worker: report to the process that started it
        atomic_write(claims / f"report-{os.getpid()}.json", json.dumps(result))
    return result


POLICIES = ("sequential", "units", "finish")
FILL_MIN_S = 600.0  # finish: the least time left that a waiting run is started for, to fill it


def _unit_order(profile: str, policy: str) -> list[list[TrainConfig]]:
    """The plan's units in order; under ``"finish"``, each checkpointed run of the plan first, as a unit of its own:
    a checkpoint lives on the machine that wrote it, so a run nearly done is finished (if it fits) before the call
    spends its hours on runs earlier in the plan, and its checkpoint is not left to a machine that may not return."""
    order = units(profile)
    if policy != "finish":
        return order
    return [[c] for unit in order for c in unit if run_status(c, checkpoints=True).state == "partly"] + order


def _train(st: PlanStatus, stops: StopRule, data: CIFAR10, dev: torch.device, log) -> bool | RunWontFit:
    """Train (or resume) ``st``'s run under ``stops``: True if it finished and is stored, False if it diverged (the
    finding recorded), else the ``RunWontFit`` it stopped with, checkpointed. Each outcome is logged."""
    try:
        run = fit_or_load(st.config, retrain=st.state == "stale", data=data, device=dev, stops=stops)
    except RunWontFit as e:
        log(str(e))
        return e
    except TrainingDiverged as e:  # a finding about the recipe: keep it, and go on with the plan
        log(f"error: {e}; recorded in {record_divergence(st.config, e)}")
        return False
    log(f"done {st.config.run_id}: {st.config.scored} accuracy {run.final['test_acc']:.4f} "
        f"in {run.meta['train_s']:.0f} s of training")  # fmt: skip
    return True


def _waits_for_a_recipe(cfg: TrainConfig, waiting: dict[str, str], log) -> bool:
    """Whether the family of ``cfg`` (a run of the full profile) waits for a recipe check's choice; ``waiting`` keeps
    each check's reason ("" if none) across the units of a call, so that each is logged once."""
    if cfg.profile != "full":
        return False
    if cfg.tag and any(cfg.run_id in {c.run_id for c in recipe.retraining(check)}
                       for check in recipe.checks_of(cfg.model)):  # fmt: skip
        return False  # seed 0 at a later check's choice: what the choice waits for before it is recorded
    for check in recipe.checks_of(cfg.model):
        if check not in waiting:
            waiting[check] = recipe.blocking(check=check) or ""
            if waiting[check]:
                log(f"wait: {waiting[check]}")
    return any(waiting[check] for check in recipe.checks_of(cfg.model))


def _starts(policy: str, cfg: TrainConfig, data: CIFAR10, dev: torch.device, deadline: float, log,
            pace: float = 1.0) -> bool:  # fmt: skip
    """Whether a CPU policy starts (or resumes) ``cfg``'s run now, logged with its estimate: ``sequential`` always;
    ``finish`` only if the run's estimate (times ``pace``) fits in what is left of the call, else it logs why the
    run waits."""
    if policy == "sequential":
        # only rates measured at this job's threads: a check at another count can be far off
        n = torch.get_num_threads()
        est = estimate_seconds(cfg, data, dev, measure=False, threads=n, exact=True)
        about = f"about {est / 3600:.1f} h in all" if not math.isnan(est) else f"no rate at {n} thread(s) yet"
        log(f"train {cfg.run_id} ({about}; {(deadline - time.time()) / 3600:.1f} h left in this call)")
        return True
    over = deadline - time.time() < 10  # the call is over: list what waits, time no more steps
    need = math.inf if over else seconds_to_finish(cfg, data, dev) * pace
    if need > (left := deadline - time.time()):
        why = ("the call's deadline has passed" if over else f"needs about {need / 3600:.1f} h at "
               f"{torch.get_num_threads()} thread(s), {left / 3600:.1f} h left")  # fmt: skip
        log(f"skip {cfg.run_id}: {why}; it waits for a longer call")
        return False
    log(f"train {cfg.run_id} (about {need / 3600:.1f} h to finish; {left / 3600:.1f} h left)")
    return True


def seconds_to_finish(cfg: TrainConfig, data: CIFAR10, device: torch.device) -> float:
    """Estimated wall time left of ``cfg``'s run at this process's thread count: all of it, or what its
    checkpoint leaves. The rate: the median of stored runs at this thread count (a run judged at the fastest one
    missed its deadline with tests running beside it), else a few steps timed at the run's batch size (not the
    engine's check, whose small batch can be far slower per image)."""
    est = estimate_seconds(cfg, data, device, threads=torch.get_num_threads(), exact=True, checks=False, typical=True)
    st = run_status(cfg, checkpoints=True)
    return est if st.state != "partly" else START_S + (est - START_S) * st.share_left


def job_threads(workers: int) -> int:
    """Threads of each of ``workers`` CPU training jobs: the cores split, not oversubscribed."""
    return max(1, (os.cpu_count() or 1) // workers)


def _spawn_workers(n: int, profile: str, device: str | None, deadline: float, checkpoint_every_s: float,
                   log, models: list[str] | None = None, policy: str = "units") -> dict[str, list[str]]:  # fmt: skip
    claims = checkpoint_root() / "claims" / f"{time.time_ns()}-{os.getpid()}"  # two calls within a second differ
    claims.mkdir(parents=True)
    (claims / "workers").write_text(str(n))
    before = {st.config.run_id for st in status(profile) if st.state == "done"}
    cmd = [sys.executable, "-m", "cnnlib", "train-missing", "--profile", profile, "--budget", "1",
           "--deadline", repr(deadline), "--claims", str(claims),
           "--checkpoint-every", repr(checkpoint_every_s), "--policy", policy]  # fmt: skip
    cmd += ["--device", device] if device else []
    cmd += ["--models", *models] if models else []
    env, each = dict(os.environ), ""
    if (torch.device(device) if device else default_device()).type == "cpu" and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(job_threads(n))
        each = f" ({env['OMP_NUM_THREADS']} thread(s) each)"
    log(f"{n} workers share the device until the deadline{each}")
    procs = [subprocess.Popen(cmd, env=env) for _ in range(n)]
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:  # Ctrl-C reaches the workers too; a SIGTERM of this process only: pass it on as one
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        raise
    after = {st.config.run_id for st in status(profile) if st.state == "done"}
    if any(codes):
        log(f"worker exit codes: {codes}")
    return merge_reports(claims, before, after)


def merge_reports(claims: Path, before: set[str], after: set[str]) -> dict[str, list[str]]:
    """One result from the workers' reports. A unit belongs to the worker that claimed it, so
    trained, skipped and stopped runs are unions; runs stored by a worker that died before
    reporting are found by comparing the runs done ``before`` and ``after``."""
    reports = [json.loads(p.read_text()) for p in sorted(claims.glob("report-*.json"))]
    trained = {rid for r in reports for rid in r["trained"]} | (after - before)
    stopped = {rid for r in reports for rid in r["stopped"]} - trained
    skipped = {rid for r in reports for rid in r["skipped"]} - trained - stopped
    return dict(trained=sorted(trained), done=sorted(before), skipped=sorted(skipped), stopped=sorted(stopped))
