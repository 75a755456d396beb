"""Measurements of freshly initialised nets that notebooks 06 and 07 read, stored as small tables.

They involve no trained run, but they are floating-point sums over deep nets, and a CPU of another kind (another vector
unit, another oneDNN kernel) gives other last digits, which a deep plain net amplifies (plain56's first-over-last
gradient ratio differs by a few percent between two CPUs). So each is computed once, stored in
``<results>/at-init/<name>.csv`` with the settings that made it (``<name>.json``: arguments, torch version, CPU), and
read back while those settings are unchanged: the notebooks then show the same numbers on every machine, and do not
spend a minute recomputing them. Remove a table (or change its arguments) to compute it again. The ``.json`` holds the
table's SHA-256 too: a table that no longer matches it, or does not parse, raises ``DamagedRunError`` (one line naming
the file and what to do) instead of being read (``results.read_table``); ``python -m cnnlib verify`` checks them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
import torch

from . import diagnostics, mechanisms
from .data import CIFAR10, load_cifar10
from .engine import cpu_name
from .models import create_model
from .paths import results_root
from .results import read_table, write_table


def stored(name: str, settings: dict, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """The table ``name``, read from the store (checked: ``results.read_table``) when it was made with ``settings``,
    else computed by ``compute()`` and stored with them, the torch version, the CPU and its checksum."""
    path = results_root() / "at-init" / f"{name}.csv"
    if path.exists() and path.with_suffix(".json").exists():
        made, table = read_table(path)
        if made.get("settings") == settings:
            return table
    return write_table(path, compute(), dict(settings=settings, torch=torch.__version__, cpu=cpu_name()))


def _balanced_training_batch(d: CIFAR10, images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` unaugmented training images, normalised, class by class in turn (the sets are stored class by class: a
    plain prefix would be one class), and their labels. Training images: the test set stays for scoring."""
    from .train import interleaved  # the training module is heavy; only this measurement needs it

    idx = interleaved(d.train_y, images)
    mean, std = torch.tensor(d.mean).view(1, 3, 1, 1), torch.tensor(d.std).view(1, 3, 1, 1)
    return (d.train_x[idx].float() / 255 - mean) / std, d.train_y[idx]


def backward_profiles(models: Iterable[str], *, images: int = 256, inits: int = 10,
                      data: CIFAR10 | None = None) -> pd.DataFrame:  # fmt: skip
    """The backward signal per block (``diagnostics.backward_signal``: the norm of dL/dh of each block's output h, per
    image) of each of ``models`` freshly initialised from torch seeds 0 .. ``inits`` - 1, with BatchNorm and without
    (``norm=False``), on one class-balanced batch of ``images`` training images, in training mode (BatchNorm on the
    batch's statistics, as in the first training step). Columns of ``backward_signal`` plus ``model``, ``batchnorm``
    ('with BN' / 'without BN') and ``init_seed``. Unlike a weight gradient, which scales as 1/||W|| behind BatchNorm and
    with the activations' size without it, this is the signal back-propagation carries towards the input."""
    models = list(models)

    def compute() -> pd.DataFrame:
        x, y = _balanced_training_batch(data if data is not None else load_cifar10(), images)
        frames = []
        for norm in (True, False):
            for m in models:
                for seed in range(inits):
                    with torch.random.fork_rng(devices=[]):  # the caller's global RNG is left alone
                        torch.manual_seed(seed)
                        df = diagnostics.backward_signal(create_model(m, norm=norm), x, y)
                    frames.append(df.assign(model=m, batchnorm="with BN" if norm else "without BN", init_seed=seed))
        return pd.concat(frames, ignore_index=True)

    settings = dict(models=models, images=images, inits=inits, batch="balanced training images")
    return stored("backward_signal", settings, compute)


def signal_ratios(profiles: pd.DataFrame) -> pd.DataFrame:
    """Per model, BatchNorm setting and initialisation: log10 of the backward signal per image at the first
    block over that at the last block before the head (the stem and the head left out, as the per-run
    reading does), and the growth per block towards the input, 10 ** (log10 ratio / (blocks - 1))."""
    rows = []
    for (model, bn, seed), g in profiles.groupby(["model", "batchnorm", "init_seed"], sort=False):
        body = g[~g["block"].isin(["stem", "head"])].sort_values("index")
        log_ratio = float(np.log10(body["per_image"].iloc[0] / body["per_image"].iloc[-1]))
        rows.append(dict(model=model, batchnorm=bn, init_seed=seed, blocks=len(body), log10_first_last=log_ratio,
                         growth_per_block=10 ** (log_ratio / (len(body) - 1))))  # fmt: skip
    return pd.DataFrame(rows)


def shattering_tables(depths: Iterable[int] = (8, 20, 56), *, points: int = 256,
                      seeds: Iterable[int] = (0,)) -> list[pd.DataFrame]:  # fmt: skip
    """``mechanisms.shattering_table`` for each initialisation seed of ``seeds``, in order."""
    depths, seeds = list(depths), list(seeds)

    def compute() -> pd.DataFrame:
        return pd.concat([mechanisms.shattering_table(depths=depths, points=points, seed=s).assign(init_seed=s)
                          for s in seeds], ignore_index=True)  # fmt: skip

    table = stored("shattering", dict(depths=depths, points=points, seeds=seeds), compute)
    return [table[table["init_seed"] == s].drop(columns="init_seed").reset_index(drop=True) for s in seeds]


def gradient_traces(models: Iterable[str], *, points: int = 256, seed: int = 0) -> pd.DataFrame:
    """``mechanisms.gradient_trace`` of each of ``models`` freshly initialised from torch seed ``seed``, on the line
    between two standard-normal 3x32x32 images drawn from ``seed`` (as ``mechanisms.shattering_table`` draws them):
    columns ``model``, ``position`` (0 to 1 along the line) and ``gradient``. A deep plain net's trace amplifies the
    last digits a CPU's kernels give, so the figure drawn from it is stored with the tables, not drawn anew."""
    models = list(models)

    def compute() -> pd.DataFrame:
        g = torch.Generator().manual_seed(seed)
        x0, x1 = torch.randn(3, 32, 32, generator=g), torch.randn(3, 32, 32, generator=g)
        frames = []
        for m in models:
            with torch.random.fork_rng(devices=[]):  # the caller's global RNG is left alone
                torch.manual_seed(seed)
                trace = mechanisms.gradient_trace(create_model(m), x0, x1, points=points)
            frames.append(pd.DataFrame(dict(model=m, position=np.linspace(0, 1, points), gradient=trace)))
        return pd.concat(frames, ignore_index=True)

    return stored("gradient_traces", dict(models=models, points=points, seed=seed), compute)
