"""The recipe check: one setting of the shared recipe, chosen on held-out training images.

Before the full study, plain20 and resnet20 train for a short schedule (profile ``tune``) on
45,000 training images under each setting of ``config.RECIPE_GRID`` (peak learning rate x weight
decay), and are scored on the 5,000 training images held out; the test set plays no part. The
setting with the best mean held-out accuracy of the two nets is the recipe of every family,
chosen once and never per model. ``python -m cnnlib status --profile full`` shows the table;
``train-missing`` trains nothing past the check until the full profile uses the chosen setting.
"""

from __future__ import annotations

import math

import pandas as pd

from .config import RECIPE_GRID, make_config
from .results import Run, load_run

NETS = ("plain20", "resnet20")


def table(runs: dict[str, Run | None] | None = None) -> pd.DataFrame:
    """One row per setting: lr, weight decay, each net's final held-out accuracy (NaN while missing)
    and their mean (NaN unless both exist)."""
    rows = []
    for tag, setting in RECIPE_GRID.items():
        row = {"setting": tag, "lr": setting["lr"], "weight decay": setting["weight_decay"]}
        for net in NETS:
            cfg = make_config(net, "tune", 0, tag=tag)
            run = runs.get(cfg.run_id) if runs is not None else load_run(cfg)
            ok = run is not None and run.matches(cfg)
            row[f"{net} held-out acc"] = run.final["test_acc"] if ok else math.nan
        accs = [row[f"{n} held-out acc"] for n in NETS]
        row["mean"] = sum(accs) / len(accs) if not any(math.isnan(a) for a in accs) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def choice(df: pd.DataFrame | None = None) -> dict | None:
    """The chosen setting ({"setting", "lr", "weight_decay", "mean"}) once every run of the check
    exists, else None."""
    df = table() if df is None else df
    if df["mean"].isna().any():
        return None
    best = df.loc[df["mean"].idxmax()]
    return dict(setting=best["setting"], lr=float(best["lr"]), weight_decay=float(best["weight decay"]),
                mean=float(best["mean"]))  # fmt: skip


def applied(chosen: dict) -> bool:
    """Whether the full profile trains with the chosen setting."""
    full = make_config(NETS[1], "full")
    return math.isclose(full.lr, chosen["lr"]) and math.isclose(full.weight_decay, chosen["weight_decay"])


def blocking(df: pd.DataFrame | None = None) -> str | None:
    """Why the full study must wait, or None: the check still has runs to train (another worker may be
    training them), or it is complete but its choice is not the full profile's recipe yet."""
    df = table() if df is None else df
    chosen = choice(df)
    if chosen is None:
        missing = int(df[[f"{n} held-out acc" for n in NETS]].isna().to_numpy().sum())
        return (f"the recipe check has {missing} of its {len(NETS) * len(df)} runs still to train; the study "
                "starts once it is complete and its choice is the full profile's recipe")
    if applied(chosen):
        return None
    return (f"the recipe check is complete: setting {chosen['setting']} (mean held-out accuracy "
            f"{100 * chosen['mean']:.2f}%) is best; set lr={chosen['lr']:g} and weight_decay="
            f"{chosen['weight_decay']:g} in the full profile (cnnlib/config.py) before the study trains")
