"""The results store: one folder per run, written atomically, read back by the notebooks.

A run is ``model + profile + seed`` and lives in ``<root>/<model>-<profile>-s<seed>/``:

* ``history.csv``  one row per epoch (see ``cnnlib.train.fit``);
* ``predictions.npy``  the predicted class of every test image, in data-set order;
* ``model.pt``  the final weights, kept only for small models (the degradation
  family) so that trained networks can be probed without retraining, and
  ``model-epoch<N>.pt`` the same at a few earlier epochs (``snapshot_epochs``);
* ``run.json``  the whole config, its hash, versions, device, data source,
  wall time and final metrics. It is written last, so a folder without it is
  an unfinished run and is ignored.

Every file goes to a temporary name first and is renamed into place, so a
crash never leaves half a result.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from .models import create_model
from .paths import atomic_write, project_path
from .train import FitResult, TrainConfig, fit

WEIGHTS_MAX_PARAMS = 2_000_000  # keep model.pt for models up to this size (resnet56: 0.85M)


def results_root() -> Path:
    return project_path("CNNLIB_RESULTS", "results")


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


def run_dir(cfg: TrainConfig, root: Path | None = None) -> Path:
    return (root or results_root()) / cfg.run_id


def save_run(cfg: TrainConfig, result: FitResult, root: Path | None = None) -> Path:
    """Store a finished run; run.json goes last and marks the folder complete."""
    folder = run_dir(cfg, root)
    (folder / "run.json").unlink(missing_ok=True)  # incomplete until the new one lands
    atomic_write_bytes(folder / "history.csv", result.history.to_csv(index=False).encode())
    buf = io.BytesIO()
    np.save(buf, result.predictions.numpy().astype(np.uint8))
    atomic_write_bytes(folder / "predictions.npy", buf.getvalue())
    n_params = sum(v.numel() for k, v in result.state_dict.items() if not k.endswith(("running_mean", "running_var")))
    if n_params <= WEIGHTS_MAX_PARAMS:
        for name, state in [("model.pt", result.state_dict)] + [
            (f"model-epoch{e}.pt", st) for e, st in sorted(result.snapshots.items())
        ]:
            buf = io.BytesIO()
            torch.save(state, buf)
            atomic_write_bytes(folder / name, buf.getvalue())
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


def load_model(run: Run, epoch: int | None = None) -> nn.Module:
    """The trained network of a stored run (eval mode, CPU), at its last epoch or at a
    snapshot ``epoch``; only small models keep weights."""
    path = run.path / ("model.pt" if epoch is None else f"model-epoch{epoch}.pt")
    if not path.exists():
        raise FileNotFoundError(f"{run.config.run_id} kept no weights {'' if epoch is None else f'at epoch {epoch} '}"
                                f"(only models up to {WEIGHTS_MAX_PARAMS:,} parameters do)")  # fmt: skip
    model = create_model(run.config.model, **dict(run.config.model_kwargs))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def snapshot_epochs_of(run: Run) -> list[int]:
    """The epochs at which a stored run kept its weights, besides the last."""
    return sorted(int(p.stem.removeprefix("model-epoch")) for p in run.path.glob("model-epoch*.pt"))


def list_runs(root: Path | None = None) -> list[Run]:
    """Every finished run in the store, sorted by run id."""
    root = root or results_root()
    if not root.exists():
        return []
    runs = (load_run(p.name, root) for p in sorted(root.iterdir()) if p.is_dir())
    return [r for r in runs if r is not None]


def fit_or_load(
    cfg: TrainConfig,
    *,
    retrain: bool | None = None,
    root: Path | None = None,
    **fit_kwargs,
) -> Run:
    """The stored run for ``cfg``, training (and storing) it first if it is missing.

    ``retrain=True`` (or ``CNNLIB_RETRAIN=1``) trains again and replaces the
    stored run. A stored run whose config differs is never returned silently:
    that raises StaleRunError, which says how to replace it.
    """
    if retrain is None:
        retrain = os.environ.get("CNNLIB_RETRAIN", "") not in ("", "0")
    stored = None if retrain else load_run(cfg, root)
    if stored is not None:
        if stored.meta["config_hash"] != cfg.hash:
            changed = {
                k: (stored.meta["config"].get(k), v)
                for k, v in cfg.to_dict().items()
                if stored.meta["config"].get(k) != v
            }
            raise StaleRunError(
                f"{stored.path} was trained with another config (stored vs asked: {changed}); "
                "retrain it with retrain=True or CNNLIB_RETRAIN=1 "
                f"(command line: python -m cnnlib train {cfg.model} --profile {cfg.profile} "
                f"--seed {cfg.seed} --retrain)"
            )
        return stored
    result = fit(cfg, resume=not retrain, **fit_kwargs)
    save_run(cfg, result, root)
    return load_run(cfg, root)
