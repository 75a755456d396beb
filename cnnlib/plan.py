"""The study's plan of runs, what of it exists, and training what is missing within a budget."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .data import CIFAR10, DeviceLoader, load_cifar10
from .models import FAMILIES, create_model
from .results import fit_or_load, list_runs, load_run, results_root
from .train import TrainConfig, default_device, make_config


def plan(profile: str = "full") -> list[TrainConfig]:
    """Every run of the study, in priority order: the four seed models, the
    controlled family, the degradation family (seed 0), then seeds 1 and 2 of
    the controlled and degradation families."""
    names = [*FAMILIES["seed"], *FAMILIES["controlled"], *FAMILIES["degradation"]]
    runs = [make_config(n, profile, 0) for n in names]
    for seed in (1, 2):
        runs += [make_config(n, profile, seed) for n in (*FAMILIES["controlled"], *FAMILIES["degradation"])]
    return runs


@dataclass
class PlanStatus:
    config: TrainConfig
    state: str  # "done", "missing" or "stale" (stored with another config)
    test_acc: float | None = None
    train_s: float | None = None
    device_name: str | None = None


def status(profile: str = "full") -> list[PlanStatus]:
    out = []
    for cfg in plan(profile):
        run = load_run(cfg)
        if run is None:
            out.append(PlanStatus(cfg, "missing"))
        elif run.meta["config_hash"] != cfg.hash:
            out.append(PlanStatus(cfg, "stale"))
        else:
            out.append(PlanStatus(cfg, "done", run.final["test_acc"], run.meta["train_s"], run.meta["device_name"]))
    return out


def measure_images_per_s(cfg: TrainConfig, data: CIFAR10, device: torch.device, steps: int = 3) -> float:
    """Training throughput of cfg's model from a few timed steps after one warm-up step."""
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, **dict(cfg.model_kwargs)).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    n = min(cfg.batch_size, len(data.train_y))
    loader = DeviceLoader(data.train_x[:n], data.train_y[:n], batch_size=n, mean=data.mean, std=data.std,
                          train=True, device=device, channels_last=device.type == "cuda")  # fmt: skip
    x, y = next(iter(loader))
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * n / (time.perf_counter() - t0)


_measured: dict[tuple[str, str, int], float] = {}  # (model, device type, batch size) -> images/s


def estimate_seconds(cfg: TrainConfig, data: CIFAR10, device: torch.device) -> float:
    """Expected wall time of a run: stored epoch times of the same model on the
    same kind of device when there are any, else a short measurement (once per
    model and batch size in a process)."""
    n_train = cfg.train_subset or len(data.train_y)
    n_test = cfg.test_subset or len(data.test_y)
    rates = [
        r.history["images_per_s"].median()
        for r in list_runs()
        if r.config.model == cfg.model and r.meta.get("device", "").split(":")[0] == device.type
    ]
    key = (cfg.model, device.type, cfg.batch_size)
    if not rates and key not in _measured:
        _measured[key] = measure_images_per_s(cfg, data, device)
    rate = max(rates) if rates else _measured[key]
    # evaluation runs forward only (about a third of a training step) once per epoch
    per_epoch = (n_train + n_test / 3) / rate
    return cfg.epochs * per_epoch * 1.05 + 5


def train_missing(budget_s: float, profile: str = "full", *, device: str | None = None,
                  data: CIFAR10 | None = None, log=print) -> dict[str, list[str]]:  # fmt: skip
    """Train the plan's missing runs in priority order while the budget allows.

    A run is started only if its estimated time fits in what is left of the
    budget; runs that do not fit are skipped (and reported), and smaller ones
    further down the plan are still tried. Each finished run is stored at
    once, and every epoch is checkpointed, so nothing finished is lost if the
    process is cut short.
    """
    start = time.perf_counter()
    dev = torch.device(device) if device else default_device()
    data = data if data is not None else load_cifar10()
    done, skipped, trained = [], [], []
    for st in status(profile):
        if st.state == "done":
            done.append(st.config.run_id)
            continue
        left = budget_s - (time.perf_counter() - start)
        if left < 10:  # no run fits; do not spend more of it measuring
            skipped.append(st.config.run_id)
            continue
        est = estimate_seconds(st.config, data, dev)
        if est > left:
            skipped.append(st.config.run_id)
            log(f"skip {st.config.run_id}: needs about {est:.0f} s, {left:.0f} s of the budget left")
            continue
        log(f"train {st.config.run_id} (about {est:.0f} s; {left:.0f} s of the budget left)")
        run = fit_or_load(st.config, retrain=st.state == "stale", data=data, device=dev)
        trained.append(st.config.run_id)
        log(f"done {st.config.run_id}: test accuracy {run.final['test_acc']:.4f} "
            f"in {run.meta['train_s']:.0f} s of training")  # fmt: skip
    log(f"{len(trained)} trained, {len(done)} already present, {len(skipped)} skipped; "
        f"results in {results_root()}")  # fmt: skip
    return dict(trained=trained, done=done, skipped=skipped)
