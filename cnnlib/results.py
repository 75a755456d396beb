"""The results store: one folder per run, written atomically, read back by the notebooks.

A run is ``model + profile + seed`` and lives in ``<root>/<model>-<profile>-s<seed>/``:

* ``history.csv``  one row per epoch (see ``cnnlib.train.fit``);
* ``predictions.npy``  the predicted class of every test image, in data-set order;
* the small tables of ``cnnlib.aftertrain`` (gradient profiles during training, layer responses and the mechanism
  analyses of the trained net), measured while the weights were in hand; the weights themselves never enter the store
  (small models keep them under ``paths.weights_root()``, git-ignored);
* ``run.json``  the whole config, its hash, versions, device, data source, wall time, final metrics and the size and
  SHA-256 of every other file of the run (``files``). It is written last, so a folder without it is an unfinished run
  and is ignored.

Every file goes to a temporary name first and is renamed into place, so a crash never leaves half a result. Every read
checks the run (``check_run``): a file that does not match its checksum, does not parse, or disagrees with the run's
epochs raises ``DamagedRunError``, one line naming the file and what to do, before anything is computed or plotted from
it. Runs stored before the checksums were recorded are checked for what can be checked (they parse, have their columns,
agree on the epochs); ``record_checksums`` adds the checksums to their ``run.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .paths import atomic_write, results_root, shown, weights_root

if TYPE_CHECKING:  # reading the store imports no torch; training (fit_or_load) and the tables import it
    from torch import nn

    from .config import TrainConfig
    from .data import CIFAR10
    from .engine import Engine
    from .train import FitResult, TrainingDiverged


class StaleRunError(RuntimeError):
    """A stored run exists under this name but was trained with another config."""


class DamagedRunError(RuntimeError):
    """A file of a stored run (or of another stored table: ``remedy`` then says what to do) is missing, truncated or
    garbled: one line naming it and what to do."""

    def __init__(self, folder: Path, name: str, problem: str, remedy: str | None = None):
        self.folder, self.name, self.problem = folder, name, problem
        super().__init__(f"{shown(folder / name)} {problem}; {remedy or _remedy(folder)}")


def committed(folder: Path, name: str = "run.json") -> bool:
    """Whether git tracks the file ``name`` of ``folder`` (a run's run.json: then git can restore the run)."""
    try:
        proc = subprocess.run(["git", "ls-files", "--error-unmatch", name], cwd=folder, capture_output=True,
                              timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


def _remedy(folder: Path) -> str:
    """What to do about a damaged run: restore it from git if git has it, or retrain it."""
    retrain = "retrain it"
    # the run id (TrainConfig.run_id: model-profile[-tag]-sSEED) names the command; run.json may be the damage
    if m := re.fullmatch(r"(?P<model>[^-]+)-(?P<profile>[^-]+)(?:-(?P<tag>.+))?-s(?P<seed>[0-9]+)", folder.name):
        tag = f" --tag {m['tag']}" if m["tag"] else ""
        retrain = (f"retrain it with `python -m cnnlib train {m['model']} --profile {m['profile']} --seed {m['seed']}"
                   f"{tag} --retrain`")  # fmt: skip
    if committed(folder):
        return f"restore the run with `git checkout -- {shown(folder)}`, or {retrain}"
    return retrain


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# the history columns every reader relies on
HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds")


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
        """One of the run's tables (``aftertrain.TABLES``; empty if it has none); DamagedRunError if it won't parse."""
        from .aftertrain import TABLES

        if name not in TABLES:
            raise ValueError(f"unknown table {name!r}; choose from {sorted(TABLES)}")
        path = self.path / TABLES[name]
        try:
            return pd.read_csv(path) if path.exists() else pd.DataFrame()
        except (ValueError, UnicodeDecodeError) as e:
            raise DamagedRunError(self.path, TABLES[name], f"does not parse as CSV ({e})") from None


def _write_tables(folder: Path, tables: dict[str, pd.DataFrame]) -> None:
    from . import aftertrain

    for name, table in tables.items():
        atomic_write(folder / aftertrain.TABLES[name], table.to_csv(index=False))


def save_run(cfg: TrainConfig, result: FitResult, root: Path | None = None) -> Path:
    """Store a finished run; run.json goes last and marks the folder complete."""
    from . import aftertrain

    folder = (root or results_root()) / cfg.run_id
    (folder / "run.json").unlink(missing_ok=True)  # incomplete until the new one lands
    for name, file in aftertrain.TABLES.items():  # a table of an earlier run of this name is not this run's
        if name not in result.tables:
            (folder / file).unlink(missing_ok=True)
    atomic_write(folder / "history.csv", result.history.to_csv(index=False))
    atomic_write(folder / "predictions.npy", lambda f: np.save(f, result.predictions.numpy().astype(np.uint8)))
    _write_tables(folder, result.tables)
    aftertrain.save_weights(cfg.run_id, result.state_dict)
    last = result.history.iloc[-1]
    final = {k: float(last[k]) for k in ("train_loss", "train_acc", "test_loss", "test_acc")}
    final = dict(epochs=int(last["epoch"]), **final, seconds_per_epoch=float(result.history["seconds"].median()))
    meta = dict(run_id=cfg.run_id, config=cfg.to_dict(), config_hash=cfg.hash, **result.info, final=final)
    meta["files"] = _file_records(folder)
    _write_meta(folder, meta)
    return folder


def _write_meta(folder: Path, meta: dict) -> None:
    atomic_write(folder / "run.json", json.dumps(meta, indent=2) + "\n")


def _file_records(folder: Path) -> dict[str, dict]:
    """name -> size and SHA-256 of every file of the run but run.json (what ``check_run`` compares)."""
    return {p.name: dict(size=p.stat().st_size, sha256=sha256(p))
            for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".") and p.name != "run.json"}


def _read_meta(folder: Path) -> dict:
    try:
        meta = json.loads((folder / "run.json").read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise DamagedRunError(folder, "run.json", f"does not parse as JSON ({e})") from None
    if not isinstance(meta, dict):
        raise DamagedRunError(folder, "run.json", "does not hold a run's record")
    missing = [k for k in ("config", "config_hash", "final") if k not in meta]
    if missing or not isinstance(meta["final"], dict) or "epochs" not in meta["final"]:
        raise DamagedRunError(folder, "run.json", f"lacks {', '.join(missing) or 'final.epochs'}")
    return meta


def _check_files(folder: Path, meta: dict) -> None:
    """Each file run.json records exists with its size and SHA-256 (runs stored before the records: nothing)."""
    for name, record in meta.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise DamagedRunError(folder, name, "is missing")
        size = path.stat().st_size
        if size != record["size"]:
            raise DamagedRunError(folder, name, f"has {size:,} bytes where run.json records {record['size']:,}")
        if sha256(path) != record["sha256"]:
            raise DamagedRunError(folder, name, "does not match the SHA-256 that run.json records")


def _read_history(folder: Path, meta: dict) -> pd.DataFrame:
    """history.csv, parsed, with its columns and one row per epoch of the run."""
    path = folder / "history.csv"
    if not path.is_file():
        raise DamagedRunError(folder, "history.csv", "is missing")
    try:
        history = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError) as e:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise DamagedRunError(folder, "history.csv", f"does not parse as CSV ({str(e).strip()})") from None
    missing = [c for c in HISTORY_COLUMNS if c not in history.columns]
    if missing:
        raise DamagedRunError(folder, "history.csv", f"lacks the column(s) {', '.join(missing)}")
    epochs = int(meta["final"]["epochs"])
    numeric = history[list(HISTORY_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    if numeric.isna().any().any():  # a run whose loss became NaN stopped as diverged and was never stored
        raise DamagedRunError(folder, "history.csv", "holds cells that are not numbers")
    if len(history) != epochs or history["epoch"].tolist() != list(range(1, epochs + 1)):
        raise DamagedRunError(folder, "history.csv", f"holds {len(history)} epoch row(s) where run.json says "
                                                      f"the run trained {epochs}")  # fmt: skip
    return history


def _read_predictions(folder: Path, config: TrainConfig) -> np.ndarray:
    """predictions.npy: one class in 0-9 per scored image."""
    path = folder / "predictions.npy"
    if not path.is_file():
        raise DamagedRunError(folder, "predictions.npy", "is missing")
    try:
        predictions = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DamagedRunError(folder, "predictions.npy", f"does not load as a NumPy array ({e})") from None
    n_test = config.n_images()[1]
    if predictions.ndim != 1 or len(predictions) > n_test or (len(predictions) and predictions.max() > 9):
        raise DamagedRunError(folder, "predictions.npy", f"holds {predictions.shape} values, not one class per "
                                                          f"scored image (at most {n_test:,})")  # fmt: skip
    return predictions


def check_run(folder: Path) -> Run:
    """The run stored in ``folder``, read and checked: every file run.json records matches its size and SHA-256,
    run.json, history.csv and predictions.npy parse, the history has its columns and one row per epoch that run.json
    says the run trained. Raises DamagedRunError (one line: the file, what is wrong, what to do)."""
    from .config import TrainConfig

    meta = _read_meta(folder)
    _check_files(folder, meta)
    try:
        config = TrainConfig.from_dict(meta["config"])
    except (TypeError, ValueError, KeyError) as e:
        raise DamagedRunError(folder, "run.json", f"holds a config this version cannot read ({e})") from None
    history = _read_history(folder, meta)
    history.attrs["config"] = meta["config"]
    return Run(config, history, _read_predictions(folder, config), meta, folder)


def load_run(cfg_or_id: TrainConfig | str, root: Path | None = None) -> Run | None:
    """The stored run for a config (or a run id), checked (``check_run``: DamagedRunError if a file of it
    is damaged), or None if there is none."""
    run_id = cfg_or_id if isinstance(cfg_or_id, str) else cfg_or_id.run_id
    folder = (root or results_root()) / run_id
    if not (folder / "run.json").exists():
        return None
    return check_run(folder)


def list_runs(root: Path | None = None, *, skip_damaged: bool = False) -> list[Run]:
    """Every finished run in the store, sorted by run id. A damaged run raises DamagedRunError, unless
    ``skip_damaged`` (for estimates that only want what is sound, e.g. the plan's measured rates)."""
    root = root or results_root()
    if not root.exists():
        return []
    runs = []
    for p in sorted(root.iterdir()):
        if not p.is_dir():
            continue
        try:
            run = load_run(p.name, root)
        except DamagedRunError:
            if not skip_damaged:
                raise
            continue
        if run is not None:
            runs.append(run)
    return runs


def record_checksums(root: Path | None = None) -> list[str]:
    """Add the size and SHA-256 of every file to the run.json of each stored run that has none yet (runs stored before
    ``save_run`` recorded them), after checking what can be checked without them; the rest of run.json stays as it was.
    Returns the run ids whose run.json changed. A damaged run raises DamagedRunError before any run.json is written."""
    from . import aftertrain

    runs = [r for r in list_runs(root) if "files" not in r.meta]
    for run in runs:
        for name in aftertrain.TABLES:  # every table parses
            run.table(name)
    for run in runs:
        _write_meta(run.path, run.meta | {"files": _file_records(run.path)})
    return [r.config.run_id for r in runs]


def retag(run: Run, tag: str, root: Path | None = None) -> Run:
    """Store ``run`` as the variant ``tag`` of its config (``""``: the profile's own recipe) and remove it under its
    old name: the same training, named for what it now is (``recipe.record``: when a family's own check chooses
    another setting, the runs of its earlier recipe become that setting's variant, and the runs trained at the chosen
    setting become the family's own). Nothing is retrained or recomputed. The files are copied as they are (their
    checksums still hold); run.json gets the new run id, tag and hash, and lists the names the run was stored under
    before (``stored_as``). The new folder is complete, its run.json written last, before the old one is removed, so
    an interruption leaves the run under its old name or under both, and calling this again finishes the move. Kept
    weights (small models) move with it. Raises FileExistsError if another run holds the new name."""
    new = dataclasses.replace(run.config, tag=tag)
    if new.run_id == run.config.run_id:
        return run
    root = root or results_root()
    target = root / new.run_id
    meta = run.meta | dict(run_id=new.run_id, config=new.to_dict(), config_hash=new.hash,
                           stored_as=[*run.meta.get("stored_as", []), run.config.run_id])  # fmt: skip
    if (target / "run.json").exists():  # an interrupted move, or another run
        there = check_run(target)
        if not there.matches(new) or there.meta.get("files") != run.meta.get("files"):
            raise FileExistsError(f"{shown(target)} holds another run; {run.config.run_id} stays where it is")
    else:
        moving = root / f".{new.run_id}.moving"  # without a run.json, neither folder reads as a run
        for folder in (moving, target):
            shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(run.path, moving, ignore=shutil.ignore_patterns("run.json", ".*"))
        os.replace(moving, target)
        _write_meta(target, meta)
    shutil.rmtree(run.path)
    weights = weights_root() / run.config.run_id
    if weights.is_dir() and not (weights_root() / new.run_id).exists():
        os.replace(weights, weights_root() / new.run_id)
    return check_run(target)


# --- runs that diverged: a finding, kept so that the plan skips the config -------------------------------------------


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
    atomic_write(path, json.dumps(record, indent=1) + "\n")
    return path


def divergence(cfg: TrainConfig) -> dict | None:
    """The record of ``cfg``'s divergence (run_id, message, history, ...), or None if it did not diverge; a damaged
    record raises DamagedRunError (``read_divergence``)."""
    path = diverged_path(cfg)
    if not path.is_file():
        return None
    record = read_divergence(path)
    return record if record["config_hash"] == cfg.hash else None


def read_divergence(path: Path) -> dict:
    """A divergence's record, checked: one that does not parse raises DamagedRunError, since read as "did not diverge"
    it would send the plan to train the config again."""
    try:
        record = json.loads(path.read_bytes())
    except ValueError as e:  # a UnicodeDecodeError too
        raise _damaged_file(path, f"does not parse as JSON ({e})", "remove it to train the config again") from None
    if not isinstance(record, dict) or "config_hash" not in record:
        raise _damaged_file(path, "does not hold a divergence's record", "remove it to train the config again")
    return record


def _damaged_file(path: Path, problem: str, remake: str) -> DamagedRunError:
    """The error of a damaged file that is not a run's: restore it from git where git has it, else ``remake``."""
    restore = f"restore it with `git checkout -- {shown(path)}`, or " if committed(path.parent, path.name) else ""
    return DamagedRunError(path.parent, path.name, problem, restore + remake)


# --- tables beside the runs: measurements that belong to no run, each a CSV with a JSON record ------------------------
# (<results>/<folder>/<name>.csv and <name>.json), and how each folder's tables are made again
TABLE_FOLDERS = {
    "at-init": "remove it and its .json: the notebook that reads it computes both again (`cnnlib.at_init`)",
    "step-times": "time the steps again with `python benchmarks/step_rates.py --store`",
}


def write_table(path: Path, table: pd.DataFrame, record: dict, **to_csv) -> pd.DataFrame:
    """Store ``table`` as the CSV ``path`` (``to_csv``: pandas' options), then, last, ``record`` with the CSV's SHA-256
    in the JSON beside it (``path`` with the suffix .json). Returns the table as read back, to the last digit."""
    atomic_write(path, table.to_csv(index=False, **to_csv))
    _write_record(path, record)
    return pd.read_csv(path)


def _write_record(path: Path, record: dict) -> None:
    """The JSON beside the table ``path``: ``record`` with the table's SHA-256."""
    atomic_write(path.with_suffix(".json"), json.dumps(record | dict(sha256=sha256(path)), indent=2) + "\n")


def table_damaged(path: Path, problem: str) -> DamagedRunError:
    """The error of a damaged file of a table beside the runs (``_damaged_file``), made again as its folder's tables
    are (``TABLE_FOLDERS``)."""
    return _damaged_file(path, problem, TABLE_FOLDERS[path.parent.name])


def read_table(path: Path) -> tuple[dict, pd.DataFrame]:
    """(record, table) of a table that ``write_table`` stored at ``path``, checked first: the record parses as a JSON
    object, the CSV matches the SHA-256 it records (tables stored before the checksums: not compared) and parses. Else
    DamagedRunError: one line naming the file and what to do (restore it from git, or make it again)."""
    record = path.with_suffix(".json")
    if not record.is_file():
        raise table_damaged(record, "is missing")
    try:
        made = json.loads(record.read_bytes())
    except ValueError as e:  # a UnicodeDecodeError too
        raise table_damaged(record, f"does not parse as JSON ({e})") from None
    if not isinstance(made, dict):
        raise table_damaged(record, "does not hold a table's record")
    if not path.is_file():
        raise table_damaged(path, "is missing")
    if "sha256" in made and sha256(path) != made["sha256"]:
        raise table_damaged(path, f"does not match the SHA-256 that {record.name} records")
    try:
        return made, pd.read_csv(path)
    except ValueError as e:  # pandas' ParserError and EmptyDataError too
        raise table_damaged(path, f"does not parse as CSV ({str(e).strip()})") from None


def stored_tables(root: Path | None = None) -> list[Path]:
    """The CSV of every table beside the runs (``TABLE_FOLDERS``), by its record: a record without its table counts."""
    root = root or results_root()
    return [p.with_suffix(".csv") for folder in TABLE_FOLDERS for p in sorted((root / folder).glob("*.json"))]


def record_table_checksums(root: Path | None = None) -> list[str]:
    """Add the SHA-256 to the record of each table beside the runs stored without one (each checked first:
    ``read_table``); returns their names (folder/name.csv)."""
    added = []
    for path in stored_tables(root):
        made, _ = read_table(path)
        if "sha256" not in made:
            _write_record(path, made)
            added.append(f"{path.parent.name}/{path.name}")
    return added


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


def fit(cfg: TrainConfig, **kwargs) -> FitResult:
    """``train.fit``, imported when a run is trained: importing the store imports no torch."""
    from .train import fit

    return fit(cfg, **kwargs)


def fit_or_load(cfg: TrainConfig, *, retrain: bool = False, root: Path | None = None, data: CIFAR10 | None = None,
                **fit_kwargs) -> Run:  # fmt: skip
    """The stored run for ``cfg``, training it first if it is missing: ``fit``, then the tables measured on the trained
    weights (``measure_tables``, while they are in hand), then ``save_run``.

    ``retrain=True`` trains again and replaces the stored run (the notebooks and the command line turn
    ``CNNLIB_RETRAIN=1`` / ``--retrain`` into it). A stored run whose config differs is never returned silently: that
    raises StaleRunError, which says how to replace it.
    """
    stored = None if retrain else load_run(cfg, root)
    if stored is not None:
        if not stored.matches(cfg):
            was = stored.meta["config"]
            changed = {k: (was.get(k), v) for k, v in cfg.to_dict().items() if was.get(k) != v}
            raise StaleRunError(f"{stored.path} was trained with another config (stored vs asked: {changed}); "
                                "retrain it with retrain=True (or CNNLIB_RETRAIN=1 in a notebook) (command line: "
                                f"python -m cnnlib train {cfg.model} --profile {cfg.profile} --seed {cfg.seed} "
                                "--retrain)")  # fmt: skip
        return stored
    result = fit(cfg, resume=not retrain, data=data, **fit_kwargs)
    if result.model is not None:
        result.tables |= measure_tables(cfg, result.model, result.data, result.engine,
                                        init_fingerprint=result.info["init_fingerprint"])  # fmt: skip
    save_run(cfg, result, root)
    return load_run(cfg, root)


def measure_tables(cfg: TrainConfig, model: nn.Module, data: CIFAR10, engine: Engine | str,
                   init_fingerprint: float | None = None) -> dict[str, pd.DataFrame]:  # fmt: skip
    """The tables of ``cnnlib.aftertrain`` measured on trained weights (``aftertrain.finish``): the layer
    responses, and for ``dissected`` runs the mechanism tables, which also need the initial weights: they
    are rebuilt from the config's seed and checked against ``init_fingerprint``. ``data`` is the images the
    run used (``cfg.select``'ed), ``engine`` the run's (or a device). Called right after ``fit`` and again
    on a stored run's kept weights (``recompute_tables``)."""
    from . import aftertrain
    from .train import as_engine, balanced, build, loaders

    ld = loaders(cfg, data, engine)
    tables = aftertrain.finish(model, ld["test"])
    if not aftertrain.dissected(cfg):
        return tables
    init, _ = build(cfg, engine)
    if init_fingerprint is not None and not np.isclose(aftertrain.fingerprint(init), init_fingerprint, rtol=1e-9):
        raise ValueError(f"{cfg.run_id}: the rebuilt initial weights do not match the run's (fingerprint)")
    clean, test = balanced(ld["clean"], aftertrain.SURFACE_IMAGES), balanced(ld["test"])
    settings = aftertrain.mechanism_settings(len(data.train_y), as_engine(engine).torch_device)
    return tables | aftertrain.mechanism_tables(model, init.state_dict(), clean, test, **settings)


def recompute_tables(run: Run, data: CIFAR10 | None = None, device: str = "cpu") -> list[str]:
    """Measure again, from the run's kept weights, the tables ``measure_tables`` makes right after training (layer
    responses; the mechanism tables for the degradation family), and store them in the run folder. The gradient profiles
    measured *during* training cannot be redone this way. Returns the names of the tables written."""
    from . import aftertrain
    from .data import load_cifar10

    cfg = run.config
    model = aftertrain.load_weights(run).to(device)
    data = cfg.select(data if data is not None else load_cifar10())
    tables = measure_tables(cfg, model, data, device, init_fingerprint=run.meta.get("init_fingerprint"))
    _write_tables(run.path, tables)
    if "files" in run.meta:  # the new tables' checksums, so that the run still reads as sound
        run.meta["files"] = _file_records(run.path)
        _write_meta(run.path, run.meta)
    return sorted(tables)
