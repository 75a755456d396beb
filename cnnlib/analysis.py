"""Tables the notebooks show, computed from stored runs: costs, convergence, accuracy.

Everything here is a pure function of stored runs (plus the model
definitions), so a notebook that calls it shows the same numbers every time.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

import numpy as np
import pandas as pd
import torchinfo

from .data import CIFAR10, CLASSES
from .models import create_model
from .results import Run
from .stats import area_under_curve


@cache
def model_costs(name: str) -> dict[str, float]:
    """Parameters and multiply-adds of one forward pass on a 32x32 image (torchinfo)."""
    stats = torchinfo.summary(create_model(name), input_size=(1, 3, 32, 32), verbose=0)
    return {"params": int(stats.total_params), "macs": int(stats.total_mult_adds)}


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


def data_note(runs: Iterable[Run]) -> str:
    """What a figure of ``runs`` shows, for its title: profile(s), images and seeds."""
    runs = list(runs)
    parts = []
    for profile in dict.fromkeys(r.config.profile for r in runs):
        group = [r for r in runs if r.config.profile == profile]
        sizes = sorted({r.config.n_images() for r in group})
        imgs = "; ".join(f"{a:,} training / {b:,} test images" for a, b in sizes)
        seeds = sorted({r.config.seed for r in group})
        parts.append(f"profile '{profile}', {imgs}, seed{'s' if len(seeds) > 1 else ''} "
                     f"{', '.join(map(str, seeds))}")  # fmt: skip
    return "; ".join(parts)


def epochs_to_fraction(history: pd.DataFrame, fraction: float = 0.9, column: str = "test_acc") -> int:
    """First epoch whose ``column`` reaches ``fraction`` of the final epoch's value."""
    target = fraction * history[column].iloc[-1]
    return int(history.loc[history[column] >= target, "epoch"].iloc[0])


def epochs_to_loss(history: pd.DataFrame, threshold: float, column: str = "train_loss") -> float:
    """First epoch whose ``column`` falls to ``threshold`` or below (NaN if never)."""
    hit = history.loc[history[column] <= threshold, "epoch"]
    return float(hit.iloc[0]) if len(hit) else float("nan")


def mean_std(values: pd.Series, scale: float = 100, digits: int = 1) -> str:
    """'m' for one value, 'm ± s' (sample std) for several."""
    if len(values) == 1:
        return f"{values.iloc[0] * scale:.{digits}f}"
    return f"{values.mean() * scale:.{digits}f} ± {values.std(ddof=1) * scale:.{digits}f}"


def summary_table(runs: Iterable[Run], loss_threshold: float | None = None) -> pd.DataFrame:
    """One row per model: costs, time per epoch, memory, final training (running; and clean,
    where recorded) and test accuracy (mean ± sample std over seeds when there are several),
    and the mean test accuracy over the run (convergence as the area under the curve). With
    ``loss_threshold``, a first column gives the epochs to reach that training loss."""
    rows = []
    for model, group in _by_model(runs).items():
        costs = model_costs(model)
        acc = pd.Series([r.final["test_acc"] for r in group])
        peak = [r.meta.get("peak_memory_mb") for r in group]
        rows.append(
            {
                "model": model,
                "params (M)": round(costs["params"] / 1e6, 2),
                "GMACs / image": round(costs["macs"] / 1e9, 3),
                "s / epoch": round(float(np.median([r.final["seconds_per_epoch"] for r in group])), 1),
                "peak GPU MB": round(float(np.nanmax([p if p is not None else np.nan for p in peak])), 0)
                if any(p is not None for p in peak)
                else "n/a (CPU)",
                "epochs": group[0].final["epochs"],
                "seeds": len(group),
                "final train acc (%)": mean_std(pd.Series([r.final["train_acc"] for r in group])),
                "final test acc (%)": mean_std(acc),
                "mean test acc over the run (%)": mean_std(
                    pd.Series([area_under_curve(r.history["epoch"], r.history["test_acc"]) for r in group])
                ),
            }
        )
        if all("clean_train_acc" in r.history for r in group):  # eval mode, unaugmented: comparable with test
            clean = pd.Series([r.history["clean_train_acc"].iloc[-1] for r in group])
            rows[-1] = {**rows[-1], "final clean train acc (%)": mean_std(clean)}
        if loss_threshold is not None:
            epochs = pd.Series([epochs_to_loss(r.history, loss_threshold) for r in group])
            rows[-1] = {f"epochs to train loss {loss_threshold:.3f}": mean_std(epochs, scale=1, digits=0), **rows[-1]}
    return pd.DataFrame(rows).set_index("model")


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """Counts: rows are the true class, columns the predicted class."""
    n = len(CLASSES)
    counts = np.bincount(np.asarray(labels) * n + np.asarray(predictions), minlength=n * n).reshape(n, n)
    return pd.DataFrame(counts, index=pd.Index(CLASSES, name="true"), columns=pd.Index(CLASSES, name="predicted"))


def per_class_table(runs: Iterable[Run], data: CIFAR10) -> pd.DataFrame:
    """Per-class test accuracy (%) of each run with its exact 95% binomial interval, one column per run."""
    from .stats import accuracy_interval, fmt_interval

    out = {}
    for r in runs:
        labels, preds = test_labels(data, r), np.asarray(r.predictions)
        out[r.config.model] = [fmt_interval(accuracy_interval(preds[labels == c], labels[labels == c]))
                               for c in range(len(CLASSES))]  # fmt: skip
    return pd.DataFrame(out, index=pd.Index(CLASSES, name="class"))


def closing_lines(runs: Iterable[Run]) -> str:
    """One Markdown line per run: final test accuracy, the gap to training accuracy (clean,
    eval mode, where recorded; else the running one) and the mean test accuracy over the run."""
    from .stats import area_under_curve

    lines = []
    for r in runs:
        h = r.history
        clean = "clean_train_acc" in h
        col, what = ("clean_train_acc", "clean training") if clean else ("train_acc", "running training")
        gap = 100 * (h[col].iloc[-1] - h["test_acc"].iloc[-1])
        lines.append(f"- `{r.config.model}`: final test accuracy {100 * h['test_acc'].iloc[-1]:.1f}%, {what} minus "
                     f"test accuracy {gap:+.1f} points, mean test accuracy over the {len(h)} epochs "
                     f"{100 * area_under_curve(h['epoch'], h['test_acc']):.1f}%")  # fmt: skip
    return "\n".join(lines)


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray) -> pd.Series:
    cm = confusion_matrix(predictions, labels)
    return pd.Series(np.diag(cm) / cm.sum(axis=1), index=cm.index, name="accuracy")


def run_data(data: CIFAR10, run: Run) -> CIFAR10:
    """The (sub)set of the data a run was trained and evaluated on."""
    return run.config.select(data)


def test_labels(data: CIFAR10, run: Run) -> np.ndarray:
    """The labels of the test images a run was evaluated on, in the order of its predictions."""
    return run_data(data, run).test_y.numpy()


# The original report's final accuracies (read off its curves; "stable at ~N%").
ORIGINAL_ACCURACY = {"seed_cnn": 0.60, "seed_resnet18": 0.72, "seed_densenet": 0.71, "seed_senet18": 0.82}


def versus_original(runs: Iterable[Run]) -> pd.DataFrame:
    """The original report's number next to ours, for the seed models among ``runs``."""
    rows = []
    for r in runs:
        if r.config.model in ORIGINAL_ACCURACY:
            rows.append({
                "model": r.config.model,
                "profile": r.config.profile,
                "original report (%)": round(100 * ORIGINAL_ACCURACY[r.config.model]),
                "ours (%)": round(100 * r.final["test_acc"], 1),
                "epochs": r.final["epochs"],
                "training images": r.config.n_images()[0],
            })  # fmt: skip
    return pd.DataFrame(rows).set_index(["model", "profile"]) if rows else pd.DataFrame()


def _by_model(runs: Iterable[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for r in runs:
        out.setdefault(r.config.model, []).append(r)
    return out


def _ranking(values: dict[str, list[float]], margin: float, higher_first: bool = True) -> tuple[list[list[str]], str]:
    """Group models into tiers: neighbours closer than ``margin`` (or than twice their
    seeds' spread) tie. Returns the tiers and a readable 'a > b ≈ c' string."""
    stats = {m: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0) for m, v in values.items()}
    order = sorted(stats, key=lambda m: stats[m][0], reverse=higher_first)
    tiers = [[order[0]]]
    for prev, cur in zip(order, order[1:], strict=False):
        gap = abs(stats[prev][0] - stats[cur][0])
        noise = 2 * max(stats[prev][1], stats[cur][1])
        if gap > max(margin, noise):
            tiers.append([cur])
        else:
            tiers[-1].append(cur)
    text = " > ".join(" ≈ ".join(t) for t in tiers)
    return tiers, text


def _verdict(claimed: list[list[str]], observed: list[list[str]], n_seeds: int) -> str:
    if observed == claimed:
        verdict = "confirmed"
    elif any(len(t) > 1 for t in observed) and _compatible(claimed, observed):
        verdict = "cannot tell (differences within the margin)"
    else:
        verdict = "refuted"
    return verdict + (" — one seed" if n_seeds < 2 else "")


def _compatible(claimed: list[list[str]], observed: list[list[str]]) -> bool:
    """True if merging ties could turn ``observed`` into ``claimed`` (no strict order is reversed)."""
    rank_c = {m: i for i, t in enumerate(claimed) for m in t}
    rank_o = {m: i for i, t in enumerate(observed) for m in t}
    return all(not (rank_o[a] < rank_o[b] and rank_c[a] > rank_c[b]) for a in rank_c for b in rank_c)


def ranking_claims(runs: Iterable[Run], names: dict[str, str]) -> pd.DataFrame:
    """Test the original's three rankings on ``runs`` of one family.

    ``names`` maps 'SE-ResNet', 'DenseNet', 'ResNet' to model names. Margins:
    1 epoch for convergence (epochs to 90% of the final test accuracy),
    1 point of accuracy, 10% of time per epoch; with several seeds, a gap must
    also exceed twice the larger seed spread. Training time gets a verdict only
    when every run was timed on the same GPU.
    """
    by = _by_model(runs)
    if not all(m in by for m in names.values()):
        return pd.DataFrame()
    label = {m: k for k, m in names.items()}
    n_seeds = min(len(by[m]) for m in names.values())

    def values(fn):
        return {label[m]: [fn(r) for r in by[m]] for m in names.values()}

    slowest = max(np.median([r.final["seconds_per_epoch"] for r in by[m]]) for m in names.values())
    # Times compare only between runs on one kind of GPU; CPU runs here shared a loaded machine.
    devices = {r.meta["device_name"] for m in names.values() for r in by[m]}
    timed_alike = len(devices) == 1 and not next(iter(devices)).startswith("CPU")
    checks = [
        ("convergence speed: SE-ResNet > DenseNet > ResNet", [["SE-ResNet"], ["DenseNet"], ["ResNet"]],
         values(lambda r: epochs_to_fraction(r.history)), 1.0, False, "epochs to 90% of final test accuracy"),
        ("accuracy: SE-ResNet > ResNet ≈ DenseNet", [["SE-ResNet"], ["ResNet", "DenseNet"]],
         values(lambda r: 100 * r.final["test_acc"]), 1.0, True, "final test accuracy (%)"),
        ("training time: DenseNet > SE-ResNet > ResNet", [["DenseNet"], ["SE-ResNet"], ["ResNet"]],
         values(lambda r: r.final["seconds_per_epoch"]), 0.1 * slowest, True, "seconds per epoch"),
    ]  # fmt: skip
    rows = []
    for claim, claimed, vals, margin, higher_first, what in checks:
        tiers, text = _ranking(vals, margin, higher_first)
        evidence = ", ".join(f"{k} {np.mean(v):.1f}" for k, v in vals.items())
        verdict = _verdict(claimed, tiers, n_seeds)
        if what == "seconds per epoch" and not timed_alike:
            verdict = "cannot tell (the runs were not timed on one GPU; see the timing caveat)"
        rows.append({"claim": claim, "observed": text, "evidence": f"{what}: {evidence}", "verdict": verdict})
    return pd.DataFrame(rows)


def degradation_verdict(runs: Iterable[Run], shallow: str = "plain20", deep: str = "plain56",
                        margin: float = 0.01) -> dict[str, str]:  # fmt: skip
    """Overfitting or degradation? Compare ``deep``'s final training and test error
    with ``shallow``'s (He et al. 2016, Fig. 6). Differences within ``margin`` tie."""
    by = _by_model(runs)
    if shallow not in by or deep not in by:
        return {}

    def err(model, col):
        return float(np.mean([1 - r.final[col] for r in by[model]]))

    d_train = err(deep, "train_acc") - err(shallow, "train_acc")
    d_test = err(deep, "test_acc") - err(shallow, "test_acc")
    if d_train > margin:
        verdict = f"degradation: {deep} fits its training data worse than {shallow}"
    elif d_train < -margin and d_test > margin:
        verdict = f"overfitting: {deep} fits its training data better than {shallow} but generalises worse"
    elif abs(d_train) <= margin and abs(d_test) <= margin:
        verdict = "no difference beyond the margin"
    else:
        verdict = f"{deep} is no worse than {shallow}"
    return {
        "comparison": f"{deep} vs {shallow}",
        "training error change (points)": f"{100 * d_train:+.1f}",
        "test error change (points)": f"{100 * d_test:+.1f}",
        "reading": verdict,
    }
