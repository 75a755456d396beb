"""The study's plan of runs, what of it exists, and training what is missing within a budget.

The plan is a list of *units*, trained in order: a family's runs of one seed form one
unit, which starts only if all of its missing runs fit in what is left of the budget, so
that no comparison is left with one member. A single model outside a family is a unit of
its own. ``train_missing`` can run several units at once as separate processes on one
device (``workers``), sharing one deadline; they take units from a queue of claim files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import aftertrain
from .data import CIFAR10, load_cifar10
from .models import FAMILIES
from .paths import atomic_write, checkpoint_root
from .results import fit_or_load, list_runs, load_run, results_root
from .train import RunWontFit, TrainConfig, build, default_device, loaders, lr_at, make_config, training_step


def units(profile: str = "full") -> list[list[TrainConfig]]:
    """The plan in priority order, as units (see the module docstring):

    1. seed 0: the degradation family, the controlled family (densenet121, the most
       expensive run, last within it), then the four models of the original report,
       cheapest first;
    2. seeds 1 and 2 of the degradation and controlled families;
    3. the depth sweep (plain/resnet 32 and 44), seeds 0-2;
    4. the learning-rate control: plain56 at a tenth of the peak lr, seed 0.
    """
    cfg = lambda name, seed, **kw: make_config(name, profile, seed, **kw)  # noqa: E731
    out = [[cfg(n, 0) for n in FAMILIES["degradation"]], [cfg(n, 0) for n in FAMILIES["controlled"]]]
    out += [[cfg(n, 0)] for n in ("seed_cnn", "seed_resnet18", "seed_densenet", "seed_senet18")]
    for seed in (1, 2):
        out += [[cfg(n, seed) for n in FAMILIES["degradation"]], [cfg(n, seed) for n in FAMILIES["controlled"]]]
    out += [[cfg(n, seed) for n in FAMILIES["depth"]] for seed in (0, 1, 2)]
    out.append([cfg("plain56", 0, tag="lr0.1x")])
    return out


def plan(profile: str = "full") -> list[TrainConfig]:
    """Every run of the study, in priority order (the units, flattened)."""
    return [c for unit in units(profile) for c in unit]


@dataclass
class PlanStatus:
    config: TrainConfig
    state: str  # "done", "missing" or "stale" (stored with another config)
    test_acc: float | None = None
    train_s: float | None = None
    device_name: str | None = None


def run_status(cfg: TrainConfig) -> PlanStatus:
    run = load_run(cfg)
    if run is None:
        return PlanStatus(cfg, "missing")
    if not run.matches(cfg):
        return PlanStatus(cfg, "stale")
    return PlanStatus(cfg, "done", run.final["test_acc"], run.meta["train_s"], run.meta["device_name"])


def status(profile: str = "full") -> list[PlanStatus]:
    return [run_status(cfg) for cfg in plan(profile)]


def measure_images_per_s(cfg: TrainConfig, data: CIFAR10, device: torch.device, steps: int = 3) -> float:
    """Training throughput of cfg's recipe (``train.training_step``) from a few timed steps
    after one warm-up step."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data = cfg.select(data)
    model, opt = build(cfg, device)
    model.train()
    x, y = next(iter(loaders(cfg, data, device)["train"]))
    lr = lr_at(0, 1, cfg)
    training_step(model, opt, x, y, cfg, lr, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        training_step(model, opt, x, y, cfg, lr, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * len(y) / (time.perf_counter() - t0)


_measured: dict[tuple[str, str, int], float] = {}  # (model, device type, batch size) -> images/s
START_S = 5.0  # per run: building, moving the data, cuDNN autotuning


def estimate_seconds(cfg: TrainConfig, data: CIFAR10, device: torch.device) -> float:
    """Expected wall time of a run, evaluation, probes and after-training tables included: from stored epoch
    times of the same model and batch size on the same kind of device when there are any, else a short
    measurement (once per model and batch size in a process)."""
    n_train, n_test = cfg.n_images(data)
    n_clean = min(cfg.clean_subset or n_train, n_train)
    rates = [
        r.history["images_per_s"].median()
        for r in list_runs()
        if r.config.model == cfg.model and r.config.batch_size == cfg.batch_size
        and r.meta.get("device", "").split(":")[0] == device.type
    ]
    key = (cfg.model, device.type, cfg.batch_size)
    if not rates and key not in _measured:
        _measured[key] = measure_images_per_s(cfg, data, device)
    rate = max(rates) if rates else _measured[key]
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


def _claim(claims: Path | None, unit: list[TrainConfig]) -> bool:
    """Take a unit from the shared queue (first come); always True without a queue."""
    if claims is None:
        return True
    try:
        os.close(os.open(claims / f"{unit[0].run_id}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def train_missing(budget_s: float, profile: str = "full", *, device: str | None = None,
                  data: CIFAR10 | None = None, log=print, workers: int = 1,
                  checkpoint_every_s: float = 0.0, deadline: float | None = None,
                  claims: Path | None = None, models: list[str] | None = None) -> dict[str, list[str]]:  # fmt: skip
    """Train the plan's missing runs (of ``models`` only, if given), unit by unit, while the budget allows.

    A unit starts only if the estimates of its missing runs add up to no more than what
    is left (times ``workers``: runs sharing a device go slower); units that do not fit
    are skipped and smaller ones further down are still tried. Each run gets the
    deadline: one that projects past it after an epoch stops checkpointed
    (``RunWontFit``) and resumes on the next call. Each finished run is stored at once.
    ``workers > 1`` starts that many worker processes of this function instead.
    """
    deadline = deadline if deadline is not None else time.time() + budget_s
    known = {m for fam in FAMILIES.values() for m in fam}
    if models is not None and (unknown := sorted(set(models) - known)):
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; see python -m cnnlib list")
    if workers > 1:
        return _spawn_workers(workers, profile, device, deadline, checkpoint_every_s, log, models)
    dev = torch.device(device) if device else default_device()
    data = data if data is not None else load_cifar10()
    done, skipped, trained, stopped = [], [], [], []
    for unit in units(profile):
        unit = [c for c in unit if models is None or c.model in models]
        if not unit:
            continue
        todo = [st for st in map(run_status, unit) if st.state != "done"]
        done += [c.run_id for c in unit if c.run_id not in {st.config.run_id for st in todo}]
        if not todo or not _claim(claims, unit):
            continue
        left = deadline - time.time()
        if left < 10:  # no run fits; do not spend more of it measuring
            skipped += [st.config.run_id for st in todo]
            continue
        est = sum(estimate_seconds(st.config, data, dev) for st in todo) * (1 if claims is None else _workers(claims))
        names = " ".join(st.config.run_id for st in todo)
        if est > left:
            skipped += [st.config.run_id for st in todo]
            log(f"skip {names}: needs about {est:.0f} s, {left:.0f} s left")
            continue
        log(f"train {names} (about {est:.0f} s; {left:.0f} s left)")
        for st in todo:
            try:
                run = fit_or_load(st.config, retrain=st.state == "stale", data=data, device=dev,
                                  deadline=deadline, checkpoint_every_s=checkpoint_every_s)  # fmt: skip
            except RunWontFit as e:
                log(str(e))
                stopped.append(st.config.run_id)
                break
            trained.append(st.config.run_id)
            log(f"done {st.config.run_id}: test accuracy {run.final['test_acc']:.4f} "
                f"in {run.meta['train_s']:.0f} s of training")  # fmt: skip
    log(f"{len(trained)} trained, {len(done)} already present, {len(skipped)} skipped, "
        f"{len(stopped)} stopped to resume later; results in {results_root()}")  # fmt: skip
    result = dict(trained=trained, done=done, skipped=skipped, stopped=stopped)
    if claims is not None:  # a worker: report to the process that started it
        atomic_write(claims / f"report-{os.getpid()}.json", lambda f: f.write(json.dumps(result).encode()))
    return result


def _workers(claims: Path) -> int:
    return int((claims / "workers").read_text())


def _spawn_workers(n: int, profile: str, device: str | None, deadline: float, checkpoint_every_s: float,
                   log, models: list[str] | None = None) -> dict[str, list[str]]:  # fmt: skip
    claims = checkpoint_root() / "claims" / f"{int(time.time())}-{os.getpid()}"
    claims.mkdir(parents=True)
    (claims / "workers").write_text(str(n))
    before = {st.config.run_id for st in status(profile) if st.state == "done"}
    cmd = [sys.executable, "-m", "cnnlib", "train-missing", "--profile", profile, "--budget", "1",
           "--deadline", repr(deadline), "--claims", str(claims),
           "--checkpoint-every", repr(checkpoint_every_s)] + (["--device", device] if device else [])  # fmt: skip
    cmd += ["--models", *models] if models else []
    log(f"{n} workers share the device until the deadline")
    procs = [subprocess.Popen(cmd) for _ in range(n)]
    codes = [p.wait() for p in procs]
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
