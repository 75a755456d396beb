"""The results store: one folder per run, written atomically, read back by the notebooks.

A run is ``model + profile + seed`` and lives in ``<root>/<model>-<profile>-s<seed>/``:

* ``history.csv``  one row per epoch (see ``cnnlib.train.fit``);
* ``predictions.npy``  the predicted class of every test image, in data-set order;
* the small tables of ``cnnlib.aftertrain`` (gradient profiles during training,
  layer responses and the mechanism analyses of the trained net), measured
  while the weights were in hand; the weights themselves never enter the
  store (small models keep them under ``paths.weights_root()``, git-ignored);
* ``run.json``  the whole config, its hash, versions, device, data source,
  wall time and final metrics. It is written last, so a folder without it is
  an unfinished run and is ignored.

Every file goes to a temporary name first and is renamed into place, so a
crash never leaves half a result.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import aftertrain
from .paths import atomic_write, results_root
from .train import FitResult, TrainConfig, fit

__all__ = ["Run", "StaleRunError", "complete_seeds", "fit_or_load", "list_runs", "load_run", "results_root", "run_dir",
           "save_run"]


class StaleRunError(RuntimeError):
    """A stored run exists under this name but was trained with another config."""


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically (see ``paths.atomic_write``)."""
    atomic_write(path, lambda f: f.write(payload))


@dataclass
class Run:
    """A finished run read back from the store."""

    config: TrainConfig
    history: pd.DataFrame
    predictions: np.ndarray
    meta: dict  # run.json
    path: Path

    @property
    def final(self) -> dict:
        return self.meta["final"]

    def matches(self, cfg: TrainConfig) -> bool:
        """Whether this run was trained with exactly ``cfg``."""
        return self.meta["config_hash"] == cfg.hash

    def table(self, name: str) -> pd.DataFrame:
        """One of the run's aftertrain tables (empty if it has none)."""
        return aftertrain.load_table(self, name)


def _write_tables(folder: Path, tables: dict[str, pd.DataFrame]) -> None:
    for name, table in tables.items():
        atomic_write_bytes(folder / aftertrain.TABLES[name], table.to_csv(index=False).encode())


def run_dir(cfg: TrainConfig, root: Path | None = None) -> Path:
    return (root or results_root()) / cfg.run_id


def save_run(cfg: TrainConfig, result: FitResult, root: Path | None = None) -> Path:
    """Store a finished run; run.json goes last and marks the folder complete."""
    folder = run_dir(cfg, root)
    (folder / "run.json").unlink(missing_ok=True)  # incomplete until the new one lands
    atomic_write_bytes(folder / "history.csv", result.history.to_csv(index=False).encode())
    atomic_write(folder / "predictions.npy", lambda f: np.save(f, result.predictions.numpy().astype(np.uint8)))
    _write_tables(folder, result.tables)
    aftertrain.save_weights(cfg.run_id, result.state_dict)
    last = result.history.iloc[-1]
    meta = dict(
        run_id=cfg.run_id,
        config=cfg.to_dict(),
        config_hash=cfg.hash,
        **result.info,
        final=dict(
            epochs=int(last["epoch"]),
            train_loss=float(last["train_loss"]),
            train_acc=float(last["train_acc"]),
            test_loss=float(last["test_loss"]),
            test_acc=float(last["test_acc"]),
            seconds_per_epoch=float(result.history["seconds"].median()),
        ),
    )
    atomic_write_bytes(folder / "run.json", (json.dumps(meta, indent=2) + "\n").encode())
    return folder


def load_run(cfg_or_id: TrainConfig | str, root: Path | None = None) -> Run | None:
    """The stored run for a config (or a run id), or None if there is none."""
    run_id = cfg_or_id.run_id if isinstance(cfg_or_id, TrainConfig) else cfg_or_id
    folder = (root or results_root()) / run_id
    if not (folder / "run.json").exists():
        return None
    meta = json.loads((folder / "run.json").read_text())
    history = pd.read_csv(folder / "history.csv")
    config = TrainConfig.from_dict(meta["config"])
    history.attrs["config"] = meta["config"]
    return Run(config, history, np.load(folder / "predictions.npy"), meta, folder)


def list_runs(root: Path | None = None) -> list[Run]:
    """Every finished run in the store, sorted by run id."""
    root = root or results_root()
    if not root.exists():
        return []
    runs = (load_run(p.name, root) for p in sorted(root.iterdir()) if p.is_dir())
    return [r for r in runs if r is not None]


def complete_seeds(runs: Iterable[Run], models: Iterable[str]) -> tuple[list[Run], dict[int, list[str]]]:
    """A family counts only when all its members of a seed exist: the runs of ``models`` whose seed every
    one of ``models`` has (in their order; runs of other models are left out), and the seeds held back,
    each with the models it still misses."""
    models, runs = list(models), [r for r in runs if r.config.model in models]
    have: dict[int, set[str]] = {}
    for r in runs:
        have.setdefault(r.config.seed, set()).add(r.config.model)
    held = {seed: [m for m in models if m not in ms] for seed, ms in sorted(have.items()) if set(models) - ms}
    return [r for r in runs if r.config.seed not in held], held


def fit_or_load(
    cfg: TrainConfig,
    *,
    retrain: bool = False,
    root: Path | None = None,
    **fit_kwargs,
) -> Run:
    """The stored run for ``cfg``, training (and storing) it first if it is missing.

    ``retrain=True`` trains again and replaces the stored run (the notebooks and the
    command line turn ``CNNLIB_RETRAIN=1`` / ``--retrain`` into it). A stored run whose
    config differs is never returned silently: that raises StaleRunError, which says how
    to replace it.
    """
    stored = None if retrain else load_run(cfg, root)
    if stored is not None:
        if not stored.matches(cfg):
            changed = {
                k: (stored.meta["config"].get(k), v)
                for k, v in cfg.to_dict().items()
                if stored.meta["config"].get(k) != v
            }
            raise StaleRunError(
                f"{stored.path} was trained with another config (stored vs asked: {changed}); "
                "retrain it with retrain=True (or CNNLIB_RETRAIN=1 in a notebook) "
                f"(command line: python -m cnnlib train {cfg.model} --profile {cfg.profile} "
                f"--seed {cfg.seed} --retrain)"
            )
        return stored
    result = fit(cfg, resume=not retrain, **fit_kwargs)
    save_run(cfg, result, root)
    return load_run(cfg, root)


def recompute_tables(run: Run, data=None, device: str = "cpu") -> list[str]:
    """Measure again, from the run's kept weights, the tables ``aftertrain.finish`` makes right
    after training (layer responses; the mechanism tables for the degradation family),
    and store them in the run folder. The initial weights are rebuilt from the config's seed
    (checked against the stored fingerprint). The gradient profiles measured *during* training
    cannot be redone this way. Returns the names of the tables written."""
    import torch

    from .data import load_cifar10
    from .train import balanced_batches, build, loaders

    cfg, dev = run.config, torch.device(device)
    model = aftertrain.load_weights(run).to(dev)
    init, _ = build(cfg, dev)
    stored = run.meta.get("init_fingerprint")
    if stored is not None and not np.isclose(aftertrain.fingerprint(init), stored, rtol=1e-9):
        raise ValueError(f"{cfg.run_id}: the rebuilt initial weights do not match the run's (fingerprint)")
    data = cfg.select(data if data is not None else load_cifar10())
    ld = loaders(cfg, data, dev)
    clean, test = balanced_batches(ld, aftertrain.SURFACE_IMAGES)
    tables = aftertrain.after_training(cfg, model, ld["test"], init_state=init.state_dict(), clean=clean, test=test,
                                       n_train=len(data.train_y), device=dev)  # fmt: skip
    _write_tables(run.path, tables)
    return sorted(tables)
