"""Tables the notebooks show, computed from stored runs: costs, convergence, accuracy.

Everything here is a pure function of stored runs (plus the model
definitions), so a notebook that calls it shows the same numbers every time.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .constants import CHANCE, NEAR_CHANCE
from .results import Run
from .stats import accuracy_interval, binomial_interval

if TYPE_CHECKING:  # the data, the models and torchinfo are imported where they are needed: these tables import no torch
    from .config import TrainConfig
    from .data import CIFAR10


def _torchinfo(name: str, **kwargs):
    """torchinfo's summary of a model for one 32x32 image (``kwargs`` go to ``torchinfo.summary``)."""
    import torchinfo

    from .models import create_model

    return torchinfo.summary(create_model(name), input_size=(1, 3, 32, 32), verbose=0, **kwargs)


@cache
def model_costs(name: str) -> dict[str, float]:
    """Parameters and multiply-adds of one forward pass on a 32x32 image."""
    stats = _torchinfo(name)
    return {"params": int(stats.total_params), "macs": int(stats.total_mult_adds)}


def model_summary(name: str, **kwargs) -> str:
    """``_torchinfo``'s table with the mult-adds line in plain words (torchinfo names its unit after an enum,
    "Units.MEGABYTES")."""
    stats = _torchinfo(name, **kwargs)
    return "\n".join(f"Total mult-adds: {stats.total_mult_adds / 1e6:,.1f} million"
                     if line.startswith("Total mult-adds") else line for line in str(stats).splitlines())  # fmt: skip


def long_history(runs: Iterable[Run]) -> pd.DataFrame:
    """All runs' histories in long form (one row per run and epoch), ready for seaborn."""
    frames = [r.history.assign(model=r.config.model, seed=r.config.seed, profile=r.config.profile) for r in runs]
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    df["train_err"], df["test_err"] = 1 - df["train_acc"], 1 - df["test_acc"]
    if "clean_train_acc" in df:
        df["clean_train_err"] = 1 - df["clean_train_acc"]
    return df


def data_groups(runs: Iterable[Run]) -> list[dict]:
    """What a figure of ``runs`` shows (``render.data_note`` words it): per profile, in order of first appearance,
    its image counts (training, test), its seeds, and ``only``: where its models' seeds differ, the models whose
    seeds are not all of them, grouped by the seeds they have ({"models", "seeds"}, in order of first appearance)."""
    runs, groups = list(runs), []
    for p in dict.fromkeys(r.config.profile for r in runs):
        mine = [r for r in runs if r.config.profile == p]
        per_model = {m: sorted({r.config.seed for r in mine if r.config.model == m})
                     for m in dict.fromkeys(r.config.model for r in mine)}  # fmt: skip
        seeds = sorted({s for ss in per_model.values() for s in ss})
        fewer: dict[tuple[int, ...], list[str]] = {}
        for m, ss in per_model.items():
            if ss != seeds:
                fewer.setdefault(tuple(ss), []).append(m)
        groups.append(dict(profile=p, images=sorted({r.config.n_images() for r in mine}), seeds=seeds,
                           only=[{"models": ms, "seeds": list(ss)} for ss, ms in fewer.items()]))  # fmt: skip
    return groups


def family_profiles(families: dict[str, Iterable[Run]]) -> dict[str, tuple[str, ...]]:
    """Each family's profiles, in order of first appearance (``render.family_titles`` names them where they
    differ: the numbers do not compare across them)."""
    return {name: tuple(dict.fromkeys(r.config.profile for r in runs)) for name, runs in families.items()}


# the fields of a training recipe, as a reader names them
RECIPE_FIELDS = {"lr": "peak lr", "epochs": "epochs", "batch_size": "batch", "weight_decay": "weight decay",
                 "warmup": "warm-up (fraction of steps)", "momentum": "Nesterov momentum",
                 "label_smoothing": "label smoothing"}  # fmt: skip


def recipe_table(families: dict[str, Iterable[TrainConfig]]) -> pd.DataFrame:
    """The training recipe of each family (index), read from the configs its runs were (or would be) trained
    with: profile, models, and each field of ``RECIPE_FIELDS`` ('a / b' where the family's models differ)."""
    rows = {}
    for name, configs in families.items():
        configs = list(configs)
        if not configs:
            continue
        row = {"profile": ", ".join(dict.fromkeys(c.profile for c in configs)),
               "models": ", ".join(dict.fromkeys(c.model for c in configs))}
        row.update({label: " / ".join(f"{v:g}" for v in dict.fromkeys(getattr(c, field) for c in configs))
                    for field, label in RECIPE_FIELDS.items()})  # 'a / b' where the family's models differ
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def accuracy_cost(runs: Iterable[Run], data: CIFAR10) -> pd.DataFrame:
    """One row per run: model, profile, multiply-adds per image (G) and final test accuracy with its exact 95%
    binomial interval over the test images (``acc``, ``low``, ``high``), sorted by cost."""
    rows = []
    for r in runs:
        iv = accuracy_interval(r.predictions, test_labels(data, r))
        rows.append({"model": r.config.model, "profile": r.config.profile,
                     "GMACs": model_costs(r.config.model)["macs"] / 1e9,
                     "acc": iv.estimate, "low": iv.low, "high": iv.high})  # fmt: skip
    return pd.DataFrame(rows).sort_values(["GMACs", "acc"], ignore_index=True)


def summary_table(runs: Iterable[Run]) -> pd.DataFrame:
    """One row per model: costs, time per epoch, memory, the final training (running; and clean, where recorded:
    else None) and test accuracy, and the mean test accuracy over the run (convergence as the area under the
    curve), each accuracy as the list of its seeds' values (``render.summary_table`` words them). The peak GPU
    memory (NaN for a run trained on a CPU) is left out when no run of the table was trained on a GPU."""
    runs = list(runs)
    rows = []
    for model, seeds in by_model(runs).items():
        group = list(seeds.values())
        costs = model_costs(group[0].config.model)
        peak = [r.meta.get("peak_memory_mb") for r in group]
        # eval mode, unaugmented training images: comparable with the test accuracy
        clean = ([float(r.history["clean_train_acc"].iloc[-1]) for r in group]
                 if all("clean_train_acc" in r.history for r in group) else None)  # fmt: skip
        rows.append({
            "model": model,
            "params (M)": round(costs["params"] / 1e6, 2),
            "GMACs / image": round(costs["macs"] / 1e9, 3),
            "s / epoch": round(float(np.median([r.final["seconds_per_epoch"] for r in group])), 1),
            "peak GPU MB": round(float(np.nanmax([p if p is not None else np.nan for p in peak])), 0)
            if any(p is not None for p in peak) else np.nan,
            "epochs": group[0].final["epochs"],
            "seeds": len(group),
            "final train acc, running (%)": [r.final["train_acc"] for r in group],
            "final train acc, clean (%)": clean,
            "final test acc (%)": [r.final["test_acc"] for r in group],
            "mean test acc over the run (%)": [auc(r) for r in group],
        })  # fmt: skip
    table = pd.DataFrame(rows).set_index("model")
    if not any(r.meta.get("peak_memory_mb") is not None for r in runs):
        table = table.drop(columns="peak GPU MB")
    return table


def near_chance(runs: Iterable[Run], within: float = NEAR_CHANCE) -> pd.DataFrame:
    """The runs whose final training accuracy (clean where recorded) is within ``within`` of chance (10%): they did
    not learn, and they pull their model's mean down. One row per run: its id, final training and test accuracy,
    and the epoch of its highest running training loss."""
    rows = []
    for r in runs:
        h = r.history
        col = "clean_train_acc" if "clean_train_acc" in h else "train_acc"
        if h[col].iloc[-1] <= CHANCE + within:
            worst = h.loc[h["train_loss"].idxmax()]
            rows.append({"run": r.config.run_id, "final training accuracy": h[col].iloc[-1],
                         "final test accuracy": h["test_acc"].iloc[-1], "highest training loss": worst["train_loss"],
                         "in epoch": int(worst["epoch"])})  # fmt: skip
    return pd.DataFrame(rows, columns=["run", "final training accuracy", "final test accuracy",
                                       "highest training loss", "in epoch"])  # fmt: skip


def step_time_table(step_times: pd.DataFrame, batch: int) -> pd.DataFrame:
    """From ``runs.step_times``: one row per model (in the order timed), the median seconds of its training step
    under each engine setting, the fastest setting (the one training chooses) and its images per second."""
    medians = step_times.groupby(["model", "setting"], sort=False)["seconds"].median().unstack()
    out = medians.round(3).rename(columns=lambda s: f"{s} (s)")
    out["fastest"] = medians.idxmin(axis=1)
    out["images/s"] = (batch / medians.min(axis=1)).round(0).astype(int)
    return out


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """Counts: rows are the true class, columns the predicted class."""
    from .data import CLASSES

    n = len(CLASSES)
    counts = np.bincount(np.asarray(labels) * n + np.asarray(predictions), minlength=n * n).reshape(n, n)
    return pd.DataFrame(counts, index=pd.Index(CLASSES, name="true"), columns=pd.Index(CLASSES, name="predicted"))


def per_class_table(runs: Iterable[Run], data: CIFAR10) -> pd.DataFrame:
    """Per-class test accuracy (%) of each run, one column per run (model label), one row per class;
    ``per_class_precision`` says how precise each entry is."""
    from .data import CLASSES

    out = {}
    for r in runs:
        labels, preds = test_labels(data, r), np.asarray(r.predictions)
        out[r.config.label] = [round(100 * float(np.mean(preds[labels == c] == c)), 1)
                               if np.any(labels == c) else np.nan for c in range(len(CLASSES))]  # fmt: skip
    return pd.DataFrame(out, index=pd.Index(CLASSES, name="class"))


def per_class_precision(runs: Iterable[Run], data: CIFAR10) -> tuple[int, float]:
    """(n, half): the fewest test images a per-class entry rests on, and the half-width of its exact 95% binomial
    interval at the widest (an accuracy of 50%), as a fraction."""
    from .data import CLASSES

    n = min(int(c) for r in runs for c in np.bincount(test_labels(data, r), minlength=len(CLASSES)))
    iv = binomial_interval(n // 2, n)  # half right: the widest
    return n, (iv.high - iv.low) / 2


def test_labels(data: CIFAR10, run: Run) -> np.ndarray:
    """The labels of the test images a run was evaluated on, in the order of its predictions."""
    return run.config.select(data).test_y.numpy()  # the (sub)set of the data the run was evaluated on


# The original report's final accuracies (read off its curves; "stable at ~N%").
ORIGINAL_ACCURACY = {"seed_cnn": 0.60, "seed_resnet18": 0.72, "seed_densenet": 0.71, "seed_senet18": 0.82}
# What a reader expects of each architecture under the full profile (final epoch, JPEG copy): the report's
# models well above its numbers, the CIFAR nets near the literature's (He et al. 2016: resnet20 91.25%,
# resnet56 93.03% after 164 epochs). Runs are measured against them; nothing is tuned toward them.
TARGET_ACCURACY = {"seed_resnet18": 0.85, "seed_densenet": 0.82, "seed_senet18": 0.93, "resnet20": 0.91,
                   "resnet56": 0.925, "resnet18": 0.935, "se_resnet18": 0.935, "densenet121": 0.94}  # fmt: skip


def auc(run: Run) -> float:
    """Convergence speed: the mean test accuracy over the run (the area under its test-accuracy curve), each logged
    epoch weighing the same. Unlike 'epochs to 90% of the final accuracy', a model that plateaus early at a low
    accuracy scores low, so it is not called "fast". Compare runs of one length only."""
    return float(np.asarray(run.history["test_acc"], dtype=float).mean())


def fit_at_two_rates(shared: Iterable[Run], low: Iterable[Run]) -> pd.DataFrame:
    """Each net's final clean training accuracy (%) under the shared recipe and under a variant of it at a lower peak
    learning rate (``low``), on the seeds the variant has (the mean over them), and the gain in points (low −
    shared): how much more of its training images each net fits at the lower rate. One row per model, in the order
    the shared runs come; columns "peak lr <shared>", "peak lr <low>", "gain (points)". Empty when ``low`` is."""
    low = list(low)
    seeds = {r.config.seed for r in low}
    shared = [r for r in shared if r.config.seed in seeds]
    if not low or not shared:
        return pd.DataFrame()
    rows = [dict(net=r.config.model, lr=f"peak lr {r.config.lr:g}",
                 acc=100 * float(r.history["clean_train_acc"].iloc[-1])) for r in shared + low]  # fmt: skip
    fit = pd.DataFrame(rows).pivot_table(index="net", columns="lr", values="acc", sort=False)
    fit = fit[[f"peak lr {shared[0].config.lr:g}", f"peak lr {low[0].config.lr:g}"]]
    fit["gain (points)"] = fit.iloc[:, 1] - fit.iloc[:, 0]
    fit.columns.name = None
    return fit


def by_model(runs: Iterable[Run], tag: str | None = None) -> dict[str, dict[int, Run]]:
    """label -> seed -> run (a variant such as plain56 at lr/10 never pools with the model's own seeds); with
    ``tag``, the runs of that variant only ("" for the recipe itself), keyed by model name."""
    out: dict[str, dict[int, Run]] = {}
    for r in runs:
        if tag is None or r.config.tag == tag:
            out.setdefault(r.config.label if tag is None else r.config.model, {})[r.config.seed] = r
    return out


def stage_profile(runs: Iterable[Run], epoch: int = 1) -> pd.DataFrame:
    """Per run and stage (stem to head), the per-stage probe's means over epoch ``epoch``: the weight-gradient L2
    norm of the stage's parameters (``grad``) and the std of its output (``act_std``), one row per (model, seed,
    stage), stages in the network's order. Runs without the probe's columns are left out."""
    rows = []
    for r in runs:
        h = r.history
        if len(h) < epoch:
            continue
        stages = [c.removeprefix("grad_") for c in h.columns if c.startswith("grad_")]
        rows += [dict(model=r.config.label, seed=r.config.seed, stage=s, order=i,
                      grad=float(h[f"grad_{s}"].iloc[epoch - 1]), act_std=float(h[f"act_std_{s}"].iloc[epoch - 1]))
                 for i, s in enumerate(stages) if f"act_std_{s}" in h]  # fmt: skip
    return pd.DataFrame(rows, columns=["model", "seed", "stage", "order", "grad", "act_std"])
