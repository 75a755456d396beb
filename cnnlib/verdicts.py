"""The original report's claims, checked with intervals (see ``cnnlib.stats``).

Each function takes stored runs (and the test labels where predictions are compared) and
returns a DataFrame with one row per claim or comparison: the estimate, its 95% interval,
how the interval was made, and a verdict that is "confirmed" or "refuted" only when the
interval separates the compared numbers; otherwise "cannot tell", with what would settle
it. ``markdown`` renders such a table for a notebook.

Comparisons of two models use every seed both have: with two or more seeds, a t-interval
across seeds (paired by seed where the seeds match); with one seed, the paired bootstrap
over test images (test accuracy only: other metrics need seeds for an interval).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from . import stats
from .analysis import label, model_costs, timed_on_one_gpu
from .results import Run

CONFIRMED, REFUTED, CANNOT_TELL = stats.CONFIRMED, stats.REFUTED, stats.CANNOT_TELL
NOT_IN_REGIME = "not supported in this regime"


def by_model(runs: Iterable[Run]) -> dict[str, dict[int, Run]]:
    """label (model, and variant if any) -> seed -> run."""
    out: dict[str, dict[int, Run]] = {}
    for r in runs:
        out.setdefault(label(r), {})[r.config.seed] = r
    return out


def final(run: Run, column: str) -> float:
    """The last epoch's value of a history column (NaN if the run did not record it)."""
    return float(run.history[column].iloc[-1]) if column in run.history else math.nan


def clean_train_error(run: Run) -> float:
    return 1 - final(run, "clean_train_acc")


def test_error(run: Run) -> float:
    return 1 - final(run, "test_acc")


def auc(run: Run) -> float:
    """Mean test accuracy over the run's epochs (the area under its test-accuracy curve)."""
    h = run.history
    return stats.area_under_curve(h["epoch"], h["test_acc"])


def compare(a: dict[int, Run], b: dict[int, Run], metric: Callable[[Run], float], *,
            labels: np.ndarray | None = None) -> dict:  # fmt: skip
    """metric(a) - metric(b) with an interval: across seeds (paired where both have the
    same seeds) when each side has two or more, else the paired bootstrap over test
    images when the metric is test accuracy and ``labels`` are given, else no interval."""
    va = {s: metric(r) for s, r in a.items() if np.isfinite(metric(r))}
    vb = {s: metric(r) for s, r in b.items() if np.isfinite(metric(r))}
    if not va or not vb:
        return dict(estimate=math.nan, low=math.nan, high=math.nan, seeds=0, method="not recorded by these runs")
    if len(va) >= 2 and len(vb) >= 2:
        paired = sorted(va) == sorted(vb)
        keys = sorted(va)
        cmp = stats.seed_difference([va[k] for k in keys], [vb[k] for k in (keys if paired else sorted(vb))],
                                    paired=paired)  # fmt: skip
        return dict(estimate=cmp.difference, low=cmp.low, high=cmp.high, seeds=min(len(va), len(vb)),
                    method=f"{cmp.method} over {min(len(va), len(vb))} seeds")  # fmt: skip
    seed = min(set(va) & set(vb)) if set(va) & set(vb) else None
    if metric is final_test_acc and labels is not None and seed is not None:
        cmp = stats.paired_difference(a[seed].predictions, b[seed].predictions, labels)
        return dict(estimate=cmp.difference, low=cmp.low, high=cmp.high, seeds=1,
                    method=f"paired bootstrap over {cmp.n} test images, seed {seed}; McNemar p={cmp.p_mcnemar:.2g}")
    est = np.mean(list(va.values())) - np.mean(list(vb.values()))
    return dict(estimate=float(est), low=math.nan, high=math.nan, seeds=1, method="one seed: no interval")


def final_test_acc(run: Run) -> float:
    return final(run, "test_acc")


def _fmt(row: dict, scale: float = 100, unit: str = "points") -> str:
    est, low, high = row["estimate"] * scale, row["low"] * scale, row["high"] * scale
    if not np.isfinite(est):
        return "n/a"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{est:+.1f} {unit} [no interval]"
    return f"{est:+.1f} [{low:+.1f}, {high:+.1f}] {unit}"


def _settle(row: dict) -> str:
    if row["seeds"] <= 1:
        return "settled by 3 seeds of each run (an interval across seeds)"
    return f"settled by more seeds or a longer budget (the interval spans 0 with {row['seeds']} seeds)"


def degradation(runs: Iterable[Run]) -> pd.DataFrame:
    """He et al.'s degradation test, in clean training error (eval mode, no augmentation).

    Rows: plain56 - plain20, resnet56 - resnet20 (depth's effect in each family), and the
    difference of differences (plain56 - plain20) - (resnet56 - resnet20): degradation that
    shortcuts remove shows as a positive first row and a positive third row. When the
    residual pair also gets worse with depth, the budget is too short to tell degradation
    from slower training of the deeper nets, and the reading says so.
    """
    m = by_model(runs)
    need = ("plain20", "plain56", "resnet20", "resnet56")
    if any(n not in m for n in need):
        return pd.DataFrame()
    plain = compare(m["plain56"], m["plain20"], clean_train_error)
    res = compare(m["resnet56"], m["resnet20"], clean_train_error)
    seeds = sorted(set.intersection(*(set(m[n]) for n in need)))
    dd = [(clean_train_error(m["plain56"][s]) - clean_train_error(m["plain20"][s]))
          - (clean_train_error(m["resnet56"][s]) - clean_train_error(m["resnet20"][s])) for s in seeds]  # fmt: skip
    dd = [v for v in dd if np.isfinite(v)]
    if len(dd) >= 2:
        iv = stats.seed_interval(dd)
        diff = dict(estimate=iv.estimate, low=iv.low, high=iv.high, seeds=len(dd), method=f"{iv.method} over seeds")
    else:
        diff = dict(estimate=float(np.mean(dd)) if dd else math.nan, low=math.nan, high=math.nan, seeds=len(dd),
                    method="one seed: no interval")  # fmt: skip
    rows = []
    for name, row, claim in (
        ("plain56 − plain20", plain, "the deeper plain net fits its training data worse"),
        ("resnet56 − resnet20", res, "the deeper residual net fits its training data worse"),
        ("(plain56 − plain20) − (resnet56 − resnet20)", diff, "depth hurts the plain nets more than the residual"),
    ):
        v = stats.verdict(row["low"], row["high"], +1)
        rows.append({"comparison (clean training error)": name, "claim": claim, "difference": _fmt(row),
                     "interval from": row["method"], "verdict": v,
                     "what would settle it": _settle(row) if v == CANNOT_TELL else ""})  # fmt: skip
    table = pd.DataFrame(rows)
    res_worse = stats.verdict(res["low"], res["high"], +1) == CONFIRMED
    if res_worse or (res["estimate"] > 0 and stats.verdict(diff["low"], diff["high"], +1) != CONFIRMED):
        how = "also gets worse" if res_worse else "may also get worse (on average; its interval spans 0)"
        table.attrs["reading"] = (
            f"The residual pair {how} with depth in this budget: the deeper nets may just train more slowly, "
            "so degradation (an optimisation failure specific to plain nets) cannot be separated from slower "
            "training here; the full profile's longer runs settle it."
        )
    elif stats.verdict(diff["low"], diff["high"], +1) == CONFIRMED:
        table.attrs["reading"] = ("Depth hurts the plain nets' fit of their own training data more than the "
                                  "residual nets': degradation, which the shortcuts remove (He et al. 2016).")
    else:
        table.attrs["reading"] = "The intervals do not separate: no verdict on degradation from these runs."
    return table


def overfitting(runs: Iterable[Run], shallow: str = "plain20", deep: str = "plain56",
                fitted_gap: float = 0.05) -> pd.DataFrame:  # fmt: skip
    """"Plain CNNs with many layers overfit": testable only when some model fits its
    training data (clean training accuracy at least ``fitted_gap`` above its test
    accuracy). Overfitting means the deeper net fits the training data better and
    generalises worse; a deeper net that fits its training data *worse* refutes it."""
    m = by_model(runs)
    if shallow not in m or deep not in m:
        return pd.DataFrame()
    gaps = {n: np.mean([final(r, "clean_train_acc") - final(r, "test_acc") for r in rs.values()])
            for n, rs in m.items()}  # fmt: skip
    widest = max(gaps, key=lambda n: gaps[n] if np.isfinite(gaps[n]) else -1)
    train = compare(m[deep], m[shallow], clean_train_error)
    test = compare(m[deep], m[shallow], test_error)
    if not np.isfinite(gaps[widest]) or gaps[widest] < fitted_gap:
        v = NOT_IN_REGIME
        why = (f"no model fits its training data: the widest gap between clean training and test accuracy is "
               f"{100 * gaps[widest]:.1f} points ({widest}); overfitting needs a model that fits its training "
               "set, which the full profile's 50,000-image runs may show")
    elif stats.verdict(train["low"], train["high"], +1) == CONFIRMED:
        v, why = REFUTED, f"{deep} fits its training data worse than {shallow}: that is degradation, not overfitting"
    elif stats.verdict(train["low"], train["high"], -1) == CONFIRMED and stats.verdict(
        test["low"], test["high"], +1
    ) == CONFIRMED:
        v, why = CONFIRMED, f"{deep} fits its training data better than {shallow} and generalises worse"
    else:
        v, why = CANNOT_TELL, "the intervals do not separate; " + _settle(train)
    return pd.DataFrame([{
        "claim": f"plain CNNs with many layers overfit ({deep} vs {shallow})",
        "clean training error, deep − shallow": _fmt(train), "test error, deep − shallow": _fmt(test),
        "verdict": v, "why": why,
    }])  # fmt: skip


RANKINGS = {  # the original report's rankings, tiers in decreasing order
    "accuracy": [["SE-ResNet"], ["ResNet", "DenseNet"]],
    "convergence speed": [["SE-ResNet"], ["DenseNet"], ["ResNet"]],
    "training time": [["DenseNet"], ["SE-ResNet"], ["ResNet"]],
}


def rankings(runs: Iterable[Run], names: dict[str, str], labels: np.ndarray | None = None) -> pd.DataFrame:
    """The original's three rankings on one family. ``names`` maps 'SE-ResNet', 'DenseNet',
    'ResNet' to model names. Accuracy: final test accuracy. Convergence: the mean test
    accuracy over the run (area under the curve; a model that plateaus early at a low level
    is not rewarded). Training time: only from runs timed on one GPU; until then the
    multiply-adds per image are the machine-independent cost, and the claim that DenseNet is
    the slowest is checked against them."""
    m = by_model(runs)
    if not all(v in m for v in names.values()):
        return pd.DataFrame()
    rows = []
    for claim, metric in (("accuracy", final_test_acc), ("convergence speed", auc)):
        pairwise = {(a, b): compare(m[names[a]], m[names[b]], metric, labels=labels)
                    for i, a in enumerate(names) for b in list(names)[i + 1:]}  # fmt: skip
        rv = stats.ranking_verdict(RANKINGS[claim], pairwise)
        evidence = "; ".join(f"{a} − {b}: {_fmt(c)}" for (a, b), c in pairwise.items())
        rows.append({"claim": f"{claim}: " + " > ".join(" ≈ ".join(t) for t in RANKINGS[claim]),
                     "measured by": "final test accuracy" if claim == "accuracy" else "mean test accuracy over the run",
                     "evidence (95% intervals)": evidence, "verdict": rv.verdict,
                     "what would settle it": rv.settle or ""})  # fmt: skip
    family = [r for v in names.values() for r in m[v].values()]
    timed, card = timed_on_one_gpu(family)
    macs = {k: model_costs(v)["macs"] / 1e9 for k, v in names.items()}
    slowest = max(macs, key=macs.get)
    cost = f"multiply-adds per image: {', '.join(f'{k} {v:.2f} G' for k, v in macs.items())}"
    if len(timed) == len(family):  # every run timed on one kind of GPU
        sec = {k: np.median([r.final["seconds_per_epoch"] for r in m[v].values()]) for k, v in names.items()}
        order = sorted(sec, key=sec.get, reverse=True)
        v = CONFIRMED if [[o] for o in order] == RANKINGS["training time"] else REFUTED
        evidence = f"seconds per epoch on {card}: " + ", ".join(f"{k} {sec[k]:.1f}" for k in order)
        settle = ""
    else:
        v = CANNOT_TELL
        costliest = "is" if slowest == "DenseNet" else "is not"
        evidence = f"no runs timed on one GPU; {cost} (DenseNet {costliest} the costliest)"
        settle = "training the family on one GPU (the full profile) times it"
    rows.append({"claim": "training time: DenseNet > SE-ResNet > ResNet", "measured by": "seconds per epoch",
                 "evidence (95% intervals)": evidence, "verdict": v, "what would settle it": settle})  # fmt: skip
    return pd.DataFrame(rows)


def vanishing_gradients(runs: Iterable[Run], plain: str = "plain56", residual: str = "resnet56",
                        *others: str) -> pd.DataFrame:  # fmt: skip
    """"Skip connections avoid vanishing gradients", from the backward signal itself.

    For each probe point (initialisation, steps 1, 5, 20, the probed epochs), the ratio of
    the per-image gradient norm dL/dh at the first block's output to that at the last
    block before the head (``gradients_blocks.csv``), as log10, with an interval across
    seeds. A ratio far below 1 (log10 < -1) means the signal vanishes towards the input.
    ``others``: more labels to include, e.g. 'plain56 (lr0.1x)'.
    """
    m = by_model(runs)
    rows = []
    for model in (plain, residual, *others):
        for seed, r in sorted(m.get(model, {}).items()):
            b = r.table("blocks")
            if b.empty:
                continue
            for point, g in b.groupby("point", sort=False):
                g = g.sort_values("index")
                body = g[~g["block"].isin(["stem", "head"])]
                if len(body) < 2:
                    continue
                ratio = body["per_image"].iloc[0] / body["per_image"].iloc[-1]
                rows.append({"model": model, "seed": seed, "point": point, "step": int(g["step"].iloc[0]),
                             "log10 first/last": float(np.log10(ratio))})  # fmt: skip
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    out = []
    for (model, point), g in df.groupby(["model", "point"], sort=False):
        iv = stats.seed_interval(g["log10 first/last"]) if len(g) else None
        low, high = iv.low, iv.high
        if len(g) >= 2:
            v = "vanishes" if high < -1 else "does not vanish" if low > -1 else CANNOT_TELL
        else:
            v = CANNOT_TELL
        out.append({"model": model, "point": point, "step": int(g["step"].iloc[0]), "seeds": len(g),
                    "first/last block signal": f"{10 ** iv.estimate:.3g}",
                    "log10, 95% interval": f"{iv.estimate:+.2f} [{low:+.2f}, {high:+.2f}]" if len(g) >= 2
                    else f"{iv.estimate:+.2f} [one seed]", "signal towards the input": v})  # fmt: skip
    return pd.DataFrame(out).sort_values(["step", "model"], kind="stable").reset_index(drop=True)


def markdown(df: pd.DataFrame, index: bool = False) -> str:
    """A DataFrame as a Markdown table (cells' '|' escaped), for IPython.display.Markdown."""
    if index:
        df = df.reset_index()
    cells = [[str(v).replace("|", "\\|").replace("\n", " ") for v in row] for row in df.itertuples(index=False)]
    head = "| " + " | ".join(map(str, df.columns)) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "".join("| " + " | ".join(r) + " |\n" for r in cells)


# --- notebook 07: why skip connections work -------------------------------------------------------------------------


def lesions(runs: Iterable[Run]) -> pd.DataFrame:
    """Veit et al.'s lesion study, per net (seed 0): intact accuracy, the mean accuracy after
    deleting one deletable block, the worst single deletion, the mean after deleting 5 random
    blocks, and how many random draws each k has (``lesion_verdict`` puts the interval on them)."""
    rows = []
    for r in runs:
        single, rand = r.table("lesion_single"), r.table("lesion_random")
        if single.empty:
            continue
        intact = float(single["intact"].iloc[0]) if "intact" in single else math.nan
        one = rand[rand["k"] == 1]["accuracy"] if not rand.empty else pd.Series(dtype=float)
        rows.append({
            "model": r.config.model, "intact accuracy (%)": round(100 * intact, 1),
            "deletable blocks": int(single["accuracy"].notna().sum()), "blocks": len(single),
            "one block deleted, mean (%)": round(100 * float(single["accuracy"].mean()), 1),
            "worst single deletion (%)": round(100 * float(single["accuracy"].min()), 1),
            "k=5 random, mean (%)": round(100 * float(rand[rand["k"] == 5]["accuracy"].mean()), 1)
            if (not rand.empty and (rand["k"] == 5).any()) else math.nan,
            "draws per k": int(one.size),
        })  # fmt: skip
    return pd.DataFrame(rows).set_index("model") if rows else pd.DataFrame()


def lesion_verdict(runs: Iterable[Run], residual: str = "resnet56", plain: str = "plain56", k: int = 1) -> dict:
    """"Residual nets degrade smoothly, plain nets collapse" (Veit et al.): the accuracy lost
    by deleting k random blocks, residual minus plain, with a Welch interval over the draws
    (the draws are the only source of spread: one trained net each)."""
    m = by_model(runs)
    loss = {}
    for name in (residual, plain):
        r = m.get(name, {}).get(0)
        t = r.table("lesion_random") if r is not None else pd.DataFrame()
        if t.empty or not (t["k"] == k).any():
            return {}
        loss[name] = (t["intact"] - t["accuracy"])[t["k"] == k].to_numpy()
    cmp = stats.seed_difference(loss[plain], loss[residual])
    v = stats.verdict(cmp.low, cmp.high, +1)
    return {"claim": f"deleting {k} random block(s) costs {plain} more accuracy than {residual}",
            "difference (points)": stats.fmt_interval(cmp),
            "interval from": f"Welch t over {len(loss[plain])} and {len(loss[residual])} random draws (seed 0 nets)",
            "verdict": v}  # fmt: skip


def shattering(tables: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Balduzzi et al.: lag-1 autocorrelation of the input-gradient trace at initialisation, per
    depth and net, mean with a t-interval over the initialisation seeds (one table per seed),
    and whether the residual net's exceeds the plain net's at each depth."""
    df = pd.concat(list(tables), ignore_index=True)
    rows = []
    for depth, g in df.groupby("depth"):
        p = g[g["net"] == "plain"]["lag1_autocorrelation"].to_numpy()
        r = g[g["net"] == "residual"]["lag1_autocorrelation"].to_numpy()
        ip, ir = stats.seed_interval(p), stats.seed_interval(r)
        cmp = stats.seed_difference(r, p, paired=True) if len(p) >= 2 else None
        rows.append({"depth": depth, "plain": stats.fmt_interval(ip, 1, 2), "residual": stats.fmt_interval(ir, 1, 2),
                     "residual − plain": stats.fmt_interval(cmp, 1, 2) if cmp else "n/a",
                     "verdict: residual more correlated": stats.verdict(cmp.low, cmp.high, +1) if cmp
                     else CANNOT_TELL})  # fmt: skip
    return pd.DataFrame(rows).set_index("depth")


def depth_sweep(runs: Iterable[Run]) -> pd.DataFrame:
    """He et al. Fig. 6 as a table: final clean training error and test error by depth and
    family, mean and 95% t-interval over the seeds that exist."""
    rows = []
    for model, seeds in by_model(runs).items():
        fam = "plain" if model.startswith("plain") else "residual"
        depth = int("".join(ch for ch in model if ch.isdigit()))
        for col, fn in (("clean training error", clean_train_error), ("test error", test_error)):
            vals = [v for v in (fn(r) for r in seeds.values()) if np.isfinite(v)]
            if vals:
                iv = stats.seed_interval(vals)
                rows.append({"family": fam, "depth": depth, "metric": col, "seeds": len(vals), "mean": iv.estimate,
                             "low": iv.low, "high": iv.high, "text": stats.fmt_interval(iv)})  # fmt: skip
    return pd.DataFrame(rows).sort_values(["metric", "family", "depth"]).reset_index(drop=True)
