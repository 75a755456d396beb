"""Measurements of freshly initialised nets that notebooks 06 and 07 read, stored as small tables.

They involve no trained run, but they are floating-point sums over deep nets, and a CPU of another
kind (another vector unit, another oneDNN kernel) gives other last digits, which a deep plain net
amplifies (plain56's first-over-last gradient ratio differs by a few percent between two CPUs). So
each is computed once, stored in ``<results>/at-init/<name>.csv`` with the settings that made it
(``<name>.json``: arguments, torch version, CPU), and read back while those settings are unchanged:
the notebooks then show the same numbers on every machine, and do not spend a minute recomputing
them. Remove a table (or change its arguments) to compute it again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

import pandas as pd
import torch

from . import diagnostics, mechanisms
from .data import CIFAR10, load_cifar10
from .engine import cpu_name
from .models import create_model
from .paths import results_root
from .results import atomic_write_bytes

__all__ = ["gradient_profiles", "shattering_tables", "stored"]


def _folder():
    return results_root() / "at-init"


def stored(name: str, settings: dict, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """The table ``name``, read from the store when it was made with ``settings``, else computed by
    ``compute()`` and stored with them."""
    folder = _folder()
    csv, meta = folder / f"{name}.csv", folder / f"{name}.json"
    if csv.exists() and meta.exists() and json.loads(meta.read_text()).get("settings") == settings:
        return pd.read_csv(csv)
    table = compute()
    atomic_write_bytes(csv, table.to_csv(index=False).encode())
    made = dict(settings=settings, torch=torch.__version__, cpu=cpu_name())
    atomic_write_bytes(meta, (json.dumps(made, indent=2) + "\n").encode())
    return pd.read_csv(csv)  # what later calls read, to the last digit


def gradient_profiles(models: Iterable[str], *, images: int = 256, data: CIFAR10 | None = None) -> pd.DataFrame:
    """Per-layer weight-gradient norms (``diagnostics.gradient_norms``) of each of ``models``, freshly
    initialised from torch seed 0, with BatchNorm and without (``norm=False``), on one batch of the
    first ``images`` test images (normalised); columns of ``gradient_norms`` plus ``model`` and
    ``batchnorm`` ('with BN' / 'without BN')."""
    models = list(models)

    def compute() -> pd.DataFrame:
        d = data if data is not None else load_cifar10()
        mean, std = torch.tensor(d.mean).view(1, 3, 1, 1), torch.tensor(d.std).view(1, 3, 1, 1)
        x, y = (d.test_x[:images].float() / 255 - mean) / std, d.test_y[:images]
        frames = []
        for norm in (True, False):
            for m in models:
                with torch.random.fork_rng(devices=[]):  # the caller's global RNG is left alone
                    torch.manual_seed(0)
                    df = diagnostics.gradient_norms(create_model(m, norm=norm), x, y)
                frames.append(df.assign(model=m, batchnorm="with BN" if norm else "without BN"))
        return pd.concat(frames, ignore_index=True)

    return stored("gradient_norms", dict(models=models, images=images, seed=0), compute)


def shattering_tables(depths: Iterable[int] = (8, 20, 56), *, points: int = 256,
                      seeds: Iterable[int] = (0,)) -> list[pd.DataFrame]:  # fmt: skip
    """``mechanisms.shattering_table`` for each initialisation seed of ``seeds``, in order."""
    depths, seeds = list(depths), list(seeds)

    def compute() -> pd.DataFrame:
        return pd.concat([mechanisms.shattering_table(depths=depths, points=points, seed=s).assign(init_seed=s)
                          for s in seeds], ignore_index=True)  # fmt: skip

    table = stored("shattering", dict(depths=depths, points=points, seeds=seeds), compute)
    return [table[table["init_seed"] == s].drop(columns="init_seed").reset_index(drop=True) for s in seeds]
