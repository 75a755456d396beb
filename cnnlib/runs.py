"""The stored runs a notebook shows: which profile, which runs, and where they come from.

A notebook asks for runs by model and seed; ``resolve_profile`` picks the profile (``CNNLIB_PROFILE``, the notebook's
parameter, or the richest profile whose runs all exist) and ``get_runs`` loads them. Nothing here trains: a missing run
is named with the command that trains it (``python -m cnnlib train``, which calls ``results.fit_or_load``), and the
notebook stops. Importing this module imports no torch: the README writer reads ``PREFERRED`` from it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from .results import Run

PREFERRED = ("full", "cpu")  # the richest profile first


class MissingRuns(RuntimeError):
    """Runs a notebook needs are not stored (each is named above, with the command that trains it)."""


def stored(cfg) -> Run | None:
    """The stored run of exactly ``cfg`` (None for one of another config, e.g. an older recipe)."""
    from .results import load_run

    run = load_run(cfg)
    return run if run is not None and run.matches(cfg) else None


def resolve_profile(requested: str | None, models: list[str], seeds=(0,)) -> str:
    """The profile a notebook shows: $CNNLIB_PROFILE, else ``requested``, else the
    first of PREFERRED whose runs of ``models`` all exist (with today's config), else "full"."""
    from .config import make_config

    chosen = os.environ.get("CNNLIB_PROFILE") or requested
    if chosen:
        make_config(models[0], chosen)  # validates the name
        return chosen
    for profile in PREFERRED:
        if all(stored(make_config(m, profile, s)) is not None for m in models for s in seeds):
            return profile
    return "full"


def get_run(model: str, profile: str, seed: int = 0) -> Run | None:
    """The stored run of today's config; None, with the command that trains it, if it is missing."""
    from .config import make_config
    from .results import load_run

    cfg = make_config(model, profile, seed)
    run = load_run(cfg)  # a damaged run stops here
    if run is not None and run.matches(cfg):
        return run
    state = "missing" if run is None else "stored with another config"
    print(f"{state}: run {cfg.run_id}; train it with `python -m cnnlib train {model} --profile {profile} "
          f"--seed {seed}{' --retrain' if run is not None else ''}`")  # fmt: skip
    return None


def get_runs(models: list[str], profile: str, seeds=(0,), *, required: bool = True, tag: str = "") -> list[Run]:
    """Every run of ``models`` x ``seeds``: a missing run is named (with the command that trains it) and the
    notebook stops with MissingRuns instead of plotting half. ``required=False``: the stored runs only (extra seeds
    are shown when they exist), of the seeds every one of ``models`` has (a family's seed is compared only when all
    its members exist); a seed held back is named. ``tag``: the runs of that recipe variant (stored runs only)."""
    from .config import make_config
    from .results import complete_seeds

    if not required or tag:
        runs = [stored(make_config(m, profile, s, tag=tag)) for m in models for s in seeds]
        kept, held = complete_seeds([r for r in runs if r is not None], models)
        for seed, missing in held.items():
            print(f"seed {seed} held back (a family's seed is compared only when all its members exist); not "
                  f"stored yet in profile '{profile}'{f' ({tag})' if tag else ''}: {', '.join(missing)}")  # fmt: skip
        return kept
    runs = [get_run(m, profile, s) for m in models for s in seeds]
    if any(r is None for r in runs):
        raise MissingRuns(f"runs of profile '{profile}' are missing: {sum(r is None for r in runs)} (listed "
                          "above); train them, or choose another PROFILE")  # fmt: skip
    return runs


def how_trained(run: Run) -> str:
    """Precision, memory format, compiled or not and threads of a run (``Engine.describe`` of its ``run.json``);
    runs stored before the engine was recorded trained in fp32 NCHW eager on a CPU, bf16 channels_last on CUDA."""
    from .engine import Engine

    e = run.meta.get("engine")
    if e is None:
        cuda = run.meta.get("device", "cpu").startswith("cuda")
        return "bf16 autocast, channels_last, eager" if cuda else "fp32, NCHW, eager"
    return Engine(**{k: e[k] for k in ("device", "precision", "channels_last", "compiled", "threads")}).describe()


def provenance_groups(runs: list[Run]) -> list[dict]:
    """The runs grouped by what produced them (``render.provenance`` words each group as a line): profile, image
    counts (training, test), device, engine (``how_trained``) and torch, with the seeds of each model (and variant)
    in order of first appearance."""
    groups: dict[tuple, dict[str, list[int]]] = {}
    for r in runs:
        c = r.config
        key = (c.profile, c.n_images(), r.meta["device_name"], how_trained(r), r.meta["torch"])
        groups.setdefault(key, {}).setdefault(c.model + (f"-{c.tag}" if c.tag else ""), []).append(c.seed)
    return [dict(profile=p, images=n, device=d, how=how, torch=t, seeds={m: sorted(s) for m, s in models.items()})
            for (p, n, d, how, t), models in groups.items()]


def step_times() -> tuple[pd.DataFrame, dict] | None:
    """Every model's training step, timed in one run on one machine (``benchmarks/step_rates.py --store``): the
    timed steps (columns model, setting, round, seconds) and the conditions they were timed in (CPU, threads,
    batch, the share of the cores other processes used meanwhile); None where none are stored. A damaged or
    incomplete table raises ``DamagedRunError``, one line naming the file and what to do (``results.read_table``)."""
    from .paths import results_root
    from .results import read_table, table_damaged

    path = results_root() / "step-times" / "step_times.csv"
    if not path.exists():
        return None
    when, steps = read_table(path)
    if not {"model", "setting", "round", "seconds"} <= set(steps.columns) or not (steps["seconds"] > 0).all():
        raise table_damaged(path, "lacks a column of the timed steps, or holds a time that is not positive")
    if lacks := {"cpu", "cores", "threads", "batch", "rounds", "started", "others_share"} - set(when):
        raise table_damaged(path.with_suffix(".json"), f"lacks {', '.join(sorted(lacks))}")
    return steps, when
