"""The original report's claims, checked with intervals (see ``cnnlib.stats``).

Each function takes stored runs (and the test labels where predictions are compared) and
returns a DataFrame with one row per claim or comparison: the estimate, its interval, how
the interval was made, and a verdict that is "confirmed" or "refuted" only when the
interval separates the compared numbers; otherwise "cannot tell", with what would settle
it. ``markdown`` renders such a table for a notebook, with the table's note (``attrs``).

The rules, the same in every table:

- The unit of replication is the trained network. Comparisons of two models use every
  seed both have: with two or more seeds each, a Welch t-interval across seeds, unpaired
  (two architectures trained with one seed share only the order of their data); with one
  seed, the paired bootstrap over test images (test accuracy only: other metrics need
  seeds for an interval), and a verdict from it holds for these trained networks only
  (seed-to-seed variance is left out), which the verdict says.
- Intervals stay in the feasible range (``cnnlib.stats``: logit / Fisher z for means of
  bounded values, clipping for their differences).
- One table is one family of claims: its intervals are drawn at their Holm-adjusted levels
  (``stats.holm_adjust``; family-wise error ``ALPHA`` = 5%), and the table's note says so.
- A claimed tie is tested against ``TIE_MARGIN`` (1 point) in both directions.
- A comparison of accuracy losses in which one side sits near chance (within
  ``NEAR_CHANCE`` of ``CHANCE``, 10%, as ``analysis.near_chance``) says "cannot tell
  (floor)": a net at chance has nothing left to lose. Comparisons of accuracy levels keep
  their verdict: a net at chance is worse than one above it.

These thresholds, like every number the study fixed before looking at its runs, live in
``cnnlib.constants``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from . import stats
from .analysis import label, model_costs, timed_on_one_gpu
from .constants import ALPHA, CHANCE, FITS_TRAINING, GRADIENT_THRESHOLD, GRADIENT_THRESHOLD_WHY, NEAR_CHANCE, TIE_MARGIN  # noqa: F401 (ALPHA)
from .models import info
from .results import Run

CONFIRMED, REFUTED, CANNOT_TELL = stats.CONFIRMED, stats.REFUTED, stats.CANNOT_TELL
NOT_IN_REGIME = "not testable in this regime"
CANNOT_TELL_FLOOR = "cannot tell (floor)"
CANNOT_TELL_ONE_NET = "cannot tell (one network per architecture)"
THESE_NETWORKS = "these trained networks only"
HE_EPOCHS = 164  # He et al. 2016's CIFAR-10 schedule (64k iterations at batch 128), the reference for "longer"
# the backward signal, read over a net's depth: "grows" (not "explodes": a run that blows up shows it in its loss,
# skip_findings.explosions) names a tenfold rise towards the input in a net that may train well
VANISHES, GROWS, NEITHER = "vanishes", "grows", "neither"
UNIT = (0.0, 1.0)  # the feasible range of accuracies and error rates


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


def _seeds(n_a: int, n_b: int) -> str:
    return f"{n_a} seeds" if n_a == n_b else f"{n_a} and {n_b} seeds"


def compare(a: dict[int, Run], b: dict[int, Run], metric: Callable[[Run], float], *,
            labels: np.ndarray | None = None, bounds: tuple[float, float] = UNIT) -> dict:  # fmt: skip
    """metric(a) - metric(b) with a 95% interval: a Welch t-interval across seeds (unpaired:
    different architectures share only the data order of a seed number) when each side has
    two or more, else the paired bootstrap over test images when the metric is test accuracy
    and ``labels`` are given (its verdicts hold for these trained networks only), else no
    interval. ``bounds``: the metric's feasible range (accuracies and errors: [0, 1]); the
    interval is clipped to the difference's. The dict carries the ``evidence`` to draw the
    interval at another level (None without an interval) and ``seeds`` (0: not recorded)."""
    va = {s: metric(r) for s, r in a.items() if np.isfinite(metric(r))}
    vb = {s: metric(r) for s, r in b.items() if np.isfinite(metric(r))}
    if not va or not vb:
        return dict(estimate=math.nan, low=math.nan, high=math.nan, seeds=0, method="not recorded by these runs",
                    evidence=None, confidence=0.95)  # fmt: skip
    if len(va) >= 2 and len(vb) >= 2:
        cmp = stats.seed_difference(list(va.values()), list(vb.values()), bounds=bounds)
        method = cmp.method.replace("Welch t", f"Welch t over {_seeds(len(va), len(vb))}", 1)
        return dict(estimate=cmp.difference, low=cmp.low, high=cmp.high, seeds=min(len(va), len(vb)),
                    method=method, evidence=cmp.evidence, confidence=0.95)  # fmt: skip
    seed = min(set(va) & set(vb)) if set(va) & set(vb) else None
    if metric is final_test_acc and labels is not None and seed is not None:
        cmp = stats.paired_difference(a[seed].predictions, b[seed].predictions, labels)
        return dict(estimate=cmp.difference, low=cmp.low, high=cmp.high, seeds=1,
                    evidence=stats.bootstrap_evidence(cmp),
                    method=f"paired bootstrap over {cmp.n:,} test images, seed {seed} ({THESE_NETWORKS}); "
                           f"McNemar {stats.fmt_p(cmp.p_mcnemar)}", confidence=0.95)  # fmt: skip
    est = np.mean(list(va.values())) - np.mean(list(vb.values()))
    return dict(estimate=float(est), low=math.nan, high=math.nan, seeds=1, method="one seed: no interval",
                evidence=None, confidence=0.95)  # fmt: skip


def _holm(rows: Sequence[dict], decided: Sequence[Callable[[float, float], bool]]) -> int:
    """Draw each row's interval at its Holm level across ``rows`` (one table's claims); rows without
    ``evidence`` or marked ``untested`` (e.g. at the floor) keep theirs and do not count. Returns k."""
    claims = [(None if r.get("untested") else r.get("evidence"), d) for r, d in zip(rows, decided, strict=True)]
    out = stats.holm_adjust(claims)
    for r, a in zip(rows, out, strict=True):
        if a is not None:
            r.update(low=a.low, high=a.high, confidence=a.confidence, p_holm=a.p_holm)
    return sum(a is not None for a in out)


def _level(row: dict) -> str:
    """'98.33% level' for a row with an interval, '' otherwise."""
    if not (np.isfinite(row.get("low", math.nan)) and np.isfinite(row.get("high", math.nan))):
        return ""
    return f"{100 * row.get('confidence', 0.95):.4g}% level"


def _near_chance(accuracies: Iterable[float]) -> bool:
    v = [a for a in accuracies if np.isfinite(a)]
    return bool(v) and float(np.mean(v)) <= CHANCE + NEAR_CHANCE


def final_test_acc(run: Run) -> float:
    return final(run, "test_acc")


def _fmt(row: dict, scale: float = 100, unit: str = "points") -> str:
    est, low, high = row["estimate"] * scale, row["low"] * scale, row["high"] * scale
    unit = f" {unit}" if unit else ""
    if not np.isfinite(est):
        return "n/a"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{est:+.1f}{unit} [no interval]"
    return f"{est:+.1f} [{low:+.1f}, {high:+.1f}]{unit}"


def _settle(row: dict) -> str:
    if row.get("floor"):
        return (f"not settled by more seeds: {row['floor']} within {100 * NEAR_CHANCE:g} points of chance, where "
                "the error cannot rise further; a budget in which every net learns settles it")
    if row["seeds"] <= 1:
        return "settled by 3 seeds of each run (an interval across seeds)"
    return f"settled by more seeds or a longer budget (the interval spans 0 with {row['seeds']} seeds)"


def _depth_contrast(m: dict[str, dict[int, Run]], names: Sequence[str]) -> dict:
    """(names[0] - names[1]) - (names[2] - names[3]) in clean training error, Welch across each net's seeds."""
    vals = [[v for v in (clean_train_error(r) for r in m[n].values()) if np.isfinite(v)] for n in names]
    if any(not v for v in vals):
        return dict(estimate=math.nan, low=math.nan, high=math.nan, seeds=0, method="not recorded by these runs",
                    evidence=None, confidence=0.95)  # fmt: skip
    if all(len(v) >= 2 for v in vals):
        ev = stats.welch_contrast(vals, [1, -1, -1, 1], bounds=UNIT)
        low, high = ev.interval(0.95)
        seeds = ", ".join(str(len(v)) for v in vals)
        return dict(estimate=ev.estimate, low=low, high=high, seeds=min(len(v) for v in vals), evidence=ev,
                    method=f"{ev.method} over the four nets' seeds ({seeds})", confidence=0.95)  # fmt: skip
    est = float(np.mean(vals[0]) - np.mean(vals[1]) - np.mean(vals[2]) + np.mean(vals[3]))
    return dict(estimate=est, low=math.nan, high=math.nan, seeds=1, method="one seed: no interval", evidence=None,
                confidence=0.95)  # fmt: skip


def degradation(runs: Iterable[Run]) -> pd.DataFrame:
    """He et al.'s degradation test, in clean training error (eval mode, no augmentation).

    Rows: plain56 - plain20, resnet56 - resnet20 (depth's effect in each family), and the
    difference of differences (plain56 - plain20) - (resnet56 - resnet20): degradation that
    shortcuts remove shows as a positive first row and a positive third row. Welch intervals
    across seeds (unpaired), Holm-adjusted across the three rows (``attrs['note']``). The third
    row compares losses of fit, so it says "cannot tell (floor)" when a net's clean training
    accuracy sits within ``NEAR_CHANCE`` of chance. When the residual pair also gets worse with
    depth, the budget is too short to tell degradation from slower training of the deeper nets,
    and the reading (``attrs['reading']``) says so.
    """
    m = by_model(runs)
    need = ("plain20", "plain56", "resnet20", "resnet56")
    if any(n not in m for n in need):
        return pd.DataFrame()
    plain = compare(m["plain56"], m["plain20"], clean_train_error)
    res = compare(m["resnet56"], m["resnet20"], clean_train_error)
    diff = _depth_contrast(m, ("plain56", "plain20", "resnet56", "resnet20"))
    low_nets = [n for n in need if _near_chance(final(r, "clean_train_acc") for r in m[n].values())]
    if low_nets:
        diff.update(untested=True, floor=f"{' and '.join(low_nets)} {'sits' if len(low_nets) == 1 else 'sit'}")
    rows_in = [plain, res, diff]
    k = _holm(rows_in, [stats.sign_decided] * 3)
    rows = []
    for name, row, claim in (
        ("plain56 − plain20", plain, "the deeper plain net fits its training data worse"),
        ("resnet56 − resnet20", res, "the deeper residual net fits its training data worse"),
        ("(plain56 − plain20) − (resnet56 − resnet20)", diff, "depth hurts the plain nets more than the residual"),
    ):
        v = CANNOT_TELL_FLOOR if row.get("floor") else stats.verdict(row["low"], row["high"], +1)
        level = _level(row)
        rows.append({"comparison (clean training error)": name, "claim": claim, "difference": _fmt(row),
                     "interval from": row["method"] + (f"; {level}" if level else ""), "verdict": v,
                     "what would settle it": _settle(row) if v.startswith(CANNOT_TELL) else ""})  # fmt: skip
    table = pd.DataFrame(rows)
    # the row of depth's effect within each kind of net, by the nets' connections (models.info): its readers
    # (skip_findings) find it there rather than read a net's kind off its name
    within = {info(deep).connections: f"{deep} − {shallow}" for deep, shallow in (("plain56", "plain20"),
                                                                                   ("resnet56", "resnet20"))}
    verdict_of = dict(zip(("plain", "res", "diff"), table["verdict"], strict=True))
    res_worse = verdict_of["res"] == CONFIRMED
    longer = ("the full profile's longer runs settle it" if {r.config.profile for n in need for r in m[n].values()}
              != {"full"} else f"a longer schedule (He et al. trained {HE_EPOCHS} epochs) would settle it")  # fmt: skip
    if not np.isfinite(diff["low"]) and not diff.get("floor"):  # a net with one seed: no interval yet
        one = [n for n in need if len(m[n]) < 2]
        reading = (f"With one seed of {', '.join(one)} there is no interval across seeds yet, so no verdict on "
                   "degradation from these runs (the differences above are one training run's each); seeds 1 and 2 "
                   "of the four nets give the intervals.")  # fmt: skip
    elif res_worse or (res["estimate"] > 0 and verdict_of["diff"] != CONFIRMED):
        how = "also gets worse" if res_worse else "may also get worse (on average; its interval spans 0)"
        reading = (
            f"The residual pair {how} with depth in this budget: the deeper nets may just train more slowly, "
            "so degradation (an optimisation failure specific to plain nets) cannot be separated from slower "
            f"training here; {longer}."
        )
    elif verdict_of["diff"] == CONFIRMED:
        reading = ("Depth hurts the plain nets' fit of their own training data more than the "
                   "residual nets': degradation, which the shortcuts remove (He et al. 2016).")  # fmt: skip
    elif verdict_of["diff"] == CANNOT_TELL_FLOOR:
        reading = (f"{diff['floor'].capitalize()} near chance: the losses of fit with depth do not compare, so "
                   "no verdict on degradation from these runs.")  # fmt: skip
    else:
        reading = "The intervals do not separate: no verdict on degradation from these runs."
    table.attrs.update(reading=reading, note=stats.holm_note(k), claims=k, within=within)
    return table


def overfitting(runs: Iterable[Run], shallow: str = "plain20", deep: str = "plain56",
                fits: float = FITS_TRAINING) -> pd.DataFrame:  # fmt: skip
    """"Plain CNNs with many layers overfit": overfitting means the deeper net fits its training
    data better and generalises worse, which can only show once the nets fit their training data:
    the claim is "not testable in this regime" unless the shallow net's mean clean training accuracy
    is at least ``fits`` (``FITS_TRAINING``, 90%). Then a deeper net that fits its training data
    *worse* refutes it (that is degradation), and it is confirmed when the deeper net's clean training
    error is lower and its test error higher. One claim (95% intervals, no multiplicity adjustment:
    confirming it needs both intervals, an intersection-union test, which needs none)."""
    m = by_model(runs)
    if shallow not in m or deep not in m:
        return pd.DataFrame()
    accs = [a for a in (final(r, "clean_train_acc") for r in m[shallow].values()) if np.isfinite(a)]
    fit = float(np.mean(accs)) if accs else math.nan
    train = compare(m[deep], m[shallow], clean_train_error)
    test = compare(m[deep], m[shallow], test_error)
    if not np.isfinite(fit):
        v, why = NOT_IN_REGIME, f"the runs of {shallow} do not record a clean training accuracy"
    elif fit < fits:
        v = NOT_IN_REGIME
        why = (f"{shallow} reaches {100 * fit:.1f}% clean training accuracy, below the {100 * fits:g}% at which a "
               "net counts as fitting its training data; overfitting (the deeper net fitting its training data "
               "better and generalising worse) can only show among nets that fit it")  # fmt: skip
    elif stats.verdict(train["low"], train["high"], +1) == CONFIRMED:
        v, why = REFUTED, f"{deep} fits its training data worse than {shallow}: that is degradation, not overfitting"
    elif stats.verdict(train["low"], train["high"], -1) == CONFIRMED and stats.verdict(
        test["low"], test["high"], +1
    ) == CONFIRMED:
        v, why = CONFIRMED, f"{deep} fits its training data better than {shallow} and generalises worse"
    else:
        separate = "the intervals do not separate" if np.isfinite(train["low"]) else "one seed: no interval yet"
        v, why = CANNOT_TELL, f"{separate}; " + _settle(train)
    table = pd.DataFrame([{
        "claim": f"plain CNNs with many layers overfit ({deep} vs {shallow})",
        "clean training error, deep − shallow": _fmt(train), "test error, deep − shallow": _fmt(test),
        "verdict": v, "why": why,
    }])  # fmt: skip
    gate = (f"Testable because {shallow} reaches {100 * fit:.1f}% clean training accuracy (mean over its seeds), "
            f"past the {100 * fits:g}% at which a net counts as fitting its training data." if fit >= fits else
            f"Testable once {shallow} reaches {100 * fits:g}% clean training accuracy.")  # fmt: skip
    table.attrs.update(note=("One claim, 95% intervals, no multiplicity adjustment (confirming it needs both "
                             f"intervals: an intersection-union test). {gate}"), claims=1)  # fmt: skip
    return table


RANKINGS = {  # the original report's rankings, tiers in decreasing order, in the order it states them
    "accuracy": [["SE-ResNet"], ["ResNet", "DenseNet"]],
    "convergence speed": [["SE-ResNet"], ["DenseNet"], ["ResNet"]],
    "training time": [["DenseNet"], ["SE-ResNet"], ["ResNet"]],
}
_RANKED_BY = {"accuracy": ("final test accuracy", final_test_acc),
              "convergence speed": ("mean test accuracy over the run", auc)}  # fmt: skip


def _tie_decided(low: float, high: float) -> bool:
    return stats.tie_verdict(low, high, TIE_MARGIN) != CANNOT_TELL


def method_of(c: dict, labels: np.ndarray | None) -> tuple[str, int]:
    """A ``compare`` row's method (a key of ``render.METHODS``) and its n (seeds per net, or test images)."""
    if not (np.isfinite(c["low"]) and np.isfinite(c["high"])):
        return "none", max(c["seeds"], 1)
    if c["seeds"] >= 2:
        return "welch", c["seeds"]
    return "paired bootstrap", len(labels)


def rankings(runs: Iterable[Run], names: dict[str, str], labels: np.ndarray | None = None, *,
             family: str) -> pd.DataFrame:
    """The original's three rankings on one family, as a verdict frame (``render``'s columns): ids
    ``ranking.<family>.<n>`` (``family``: "original" or "controlled"; n the claim's place in ``RANKINGS``).
    ``names`` maps 'SE-ResNet', 'DenseNet', 'ResNet' to model names.

    Accuracy is the final test accuracy; convergence the mean test accuracy over the run (area under the curve:
    a model that plateaus early at a low level is not rewarded). Their pairwise intervals are one family,
    Holm-adjusted (each pair's ``level``); a claimed tie is tested against ``TIE_MARGIN``. A row's a, b,
    estimate and interval are those of the pair that decides it (the first refuted pair, else the first
    undecided one, else the first); every pair is in the list column ``pairs``. Training time is ranked only
    from runs timed on one GPU (seconds per epoch); otherwise its verdict is "cannot tell", method "untimed",
    and the list column ``cost`` holds each model's multiply-adds per image (G), the machine-independent cost."""
    m = by_model(runs)
    if not all(v in m for v in names.values()):
        return pd.DataFrame()
    order = list(names)
    claims = {claim: {(a, b): compare(m[names[a]], m[names[b]], metric, labels=labels)
                      for i, a in enumerate(order) for b in order[i + 1:]}
              for claim, (_, metric) in _RANKED_BY.items()}  # fmt: skip
    tested, decided = [], []
    for claim, pairwise in claims.items():
        tier_of = {n: i for i, t in enumerate(RANKINGS[claim]) for n in t}
        for (a, b), c in pairwise.items():
            tested.append(c)
            decided.append(_tie_decided if tier_of[a] == tier_of[b] else stats.sign_decided)
    _holm(tested, decided)
    rows = []
    for n, (claim, pairwise) in enumerate(claims.items(), start=1):
        rv = stats.ranking_verdict(RANKINGS[claim], pairwise, tie_margin=TIE_MARGIN)
        ranked = [x for t in RANKINGS[claim] for x in t]
        pairs = []
        for (a, b), p in zip([(a, b) for i, a in enumerate(ranked) for b in ranked[i + 1:]],
                             rv.table.itertuples(), strict=True):  # fmt: skip
            c = pairwise.get((a, b)) or pairwise[(b, a)]
            method, size = method_of(c, labels)
            pairs.append(dict(a=names[a], b=names[b], claimed="≈" if p.claimed == "≈" else ">", estimate=p.estimate,
                              low=p.low, high=p.high, level=c.get("confidence", 0.95) if method != "none" else math.nan,
                              n=size, method=method, verdict=p.verdict))  # fmt: skip
        decisive = next((p for p in pairs if p["verdict"] == REFUTED), None) or next(
            (p for p in pairs if p["verdict"] != CONFIRMED), pairs[0])  # fmt: skip
        rows.append(dict(id=f"ranking.{family}.{n}", claim=f"{claim}: " + " > ".join(" ≈ ".join(t) for t in
                                                                                      RANKINGS[claim]),
                         a=decisive["a"], b=decisive["b"], quantity=_RANKED_BY[claim][0],
                         **{k: decisive[k] for k in ("estimate", "low", "high", "level", "n", "method")},
                         unit="points", verdict=rv.verdict, pairs=pairs, cost=None))  # fmt: skip
    family_runs = [r for v in names.values() for r in m[v].values()]
    timed, _card = timed_on_one_gpu(family_runs)
    cost = {v: model_costs(v)["macs"] / 1e9 for v in names.values()}
    time = dict(id=f"ranking.{family}.3", claim="training time: " + " > ".join(" ≈ ".join(t) for t in
                                                                            RANKINGS["training time"]),
                a=names["DenseNet"], b=names["ResNet"], quantity="seconds per epoch", estimate=math.nan, low=math.nan,
                high=math.nan, level=math.nan, n=len(timed), unit="ratio", method="untimed", verdict=CANNOT_TELL,
                pairs=[], cost=cost)  # fmt: skip
    if len(timed) == len(family_runs):  # every run timed on one kind of GPU: rank their seconds per epoch
        sec = {k: float(np.median([r.final["seconds_per_epoch"] for r in m[v].values()])) for k, v in names.items()}
        ranked = sorted(sec, key=sec.get, reverse=True)
        time.update(estimate=sec["DenseNet"] / sec["ResNet"], method="none",
                    verdict=CONFIRMED if [[o] for o in ranked] == RANKINGS["training time"] else REFUTED)
    rows.append(time)
    return pd.DataFrame(rows)


def gradient_outcome(low: float, high: float, threshold: float = GRADIENT_THRESHOLD) -> str:
    """The backward signal's first/last block ratio, from an interval of its log10: "vanishes" when
    the whole interval lies below -``threshold`` (a tenfold loss towards the input), "grows" when
    it lies wholly above +``threshold``, "neither" when it lies wholly within ±``threshold``, else
    cannot tell (NaN bounds too). A point value (low == high) gives the point's reading."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return CANNOT_TELL
    if low > high:
        raise ValueError(f"interval bounds out of order: [{low}, {high}]")
    if high < -threshold:
        return VANISHES
    if low > threshold:
        return GROWS
    if -threshold <= low and high <= threshold:
        return NEITHER
    return CANNOT_TELL


def _gradient_decided(low: float, high: float) -> bool:
    return gradient_outcome(low, high) != CANNOT_TELL


def vanishing_gradients(runs: Iterable[Run], plain: str = "plain56", residual: str = "resnet56",
                        *others: str) -> pd.DataFrame:  # fmt: skip
    """"Skip connections avoid vanishing gradients", from the backward signal itself.

    For each probe point (initialisation, steps 1, 5, 20, the probed epochs), the ratio of
    the per-image gradient norm dL/dh at the first block's output to that at the last
    block before the head (``gradients_blocks.csv``), as log10, with a t-interval across
    seeds. Three outcomes (``gradient_outcome``): the whole interval below -1 (a tenfold loss
    towards the input) "vanishes", wholly above +1 "grows", wholly within ±1 "neither";
    else cannot tell (and with one seed). Each row also gives the per-seed values and the growth per
    block towards the input that the mean amounts to, 10 ** (log10 ratio / (blocks - 1)). The rows
    with an interval are one family, Holm-adjusted (``attrs['note']``). ``others``: more labels to include, e.g.
    'plain56 (lr0.1x)'. (The signal at initialisation over many initialisations, with and
    without BatchNorm, is ``at_init.backward_profiles``'.)
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
                             "log10 first/last": float(np.log10(ratio)), "blocks": len(body)})  # fmt: skip
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    groups = [(model, point, g) for (model, point), g in df.groupby(["model", "point"], sort=False)]
    cells = [dict(estimate=float(g["log10 first/last"].mean()), low=math.nan, high=math.nan, confidence=0.95,
                  evidence=stats.seed_evidence(g["log10 first/last"])) for _, _, g in groups]  # fmt: skip
    k = _holm(cells, [_gradient_decided] * len(cells))
    out = []
    for (model, point, g), c in zip(groups, cells, strict=True):
        est, low, high = c["estimate"], c["low"], c["high"]
        has = np.isfinite(low) and np.isfinite(high)
        out.append({"model": model, "point": point, "step": int(g["step"].iloc[0]), "seeds": len(g),
                    "first/last block signal": f"{10 ** est:.3g}",
                    "log10 per seed": " / ".join(f"{v:+.2f}" for v in g["log10 first/last"]),
                    "per block": f"{10 ** (est / (int(g['blocks'].iloc[0]) - 1)):.3f}x",
                    "log10 [interval]": f"{est:+.2f} [{low:+.2f}, {high:+.2f}]" if has else f"{est:+.2f} [one seed]",
                    "level": f"{100 * c['confidence']:.4g}%" if has else "",
                    "signal towards the input": gradient_outcome(low, high) if has else CANNOT_TELL})  # fmt: skip
    table = pd.DataFrame(out).sort_values(["step", "model"], kind="stable").reset_index(drop=True)
    table.attrs.update(
        note=(f"Outcomes: the whole interval of log10(first/last) below −{GRADIENT_THRESHOLD:g} vanishes, above "
              f"+{GRADIENT_THRESHOLD:g} grows, within ±{GRADIENT_THRESHOLD:g} neither; otherwise cannot tell. "
              + GRADIENT_THRESHOLD_WHY + " " + stats.holm_note(k)),
        claims=k,
    )  # fmt: skip
    return table


def markdown(df: pd.DataFrame, index: bool = False, note: bool = True) -> str:
    """A DataFrame as a Markdown table (cells' '|' escaped), for IPython.display.Markdown; with
    ``note`` the table's ``attrs['note']`` (how its intervals were adjusted) follows it."""
    text = df.attrs.get("note", "") if note else ""
    if index:
        df = df.reset_index()
    cells = [[str(v).replace("|", "\\|").replace("\n", " ") for v in row] for row in df.itertuples(index=False)]
    head = "| " + " | ".join(map(str, df.columns)) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "".join("| " + " | ".join(r) + " |\n" for r in cells) + (f"\n{text}\n" if text else "")


# --- notebook 07: why skip connections work -------------------------------------------------------------------------


def lesions(runs: Iterable[Run]) -> pd.DataFrame:
    """Veit et al.'s lesion study, per net (seed 0): intact accuracy, the mean accuracy after
    deleting one deletable block, the worst single deletion, the mean after deleting 5 random
    blocks, and how many random draws each k has (``lesion_verdicts`` puts the interval on them)."""
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


def _lesion_curves(seeds: dict[int, Run], k: int) -> dict[int, dict]:
    """seed -> the accuracy lost by deleting k random blocks (one value per draw), the intact accuracy and
    the mean accuracy left, for each trained network that stores a lesion table with k."""
    out = {}
    for seed, r in sorted(seeds.items()):
        t = r.table("lesion_random")
        if t.empty or not (t["k"] == k).any():
            continue
        g = t[t["k"] == k]
        out[seed] = {"loss": (g["intact"] - g["accuracy"]).to_numpy(dtype=float),
                     "intact": float(g["intact"].iloc[0]), "left": float(g["accuracy"].mean())}  # fmt: skip
    return out


def _loss_range(curves: Iterable[dict]) -> tuple[float, float]:
    """The feasible range of the accuracy a deletion can cost these networks: from intact - 1 (a net that
    ends at 100%) to intact (one that ends at 0%), over their intact accuracies."""
    intact = [c["intact"] for c in curves]
    return min(intact) - 1, max(intact)


LESION_PAIRS = (("resnet56", "plain56"), ("resnet20", "plain20"))


def lesion_verdicts(runs: Iterable[Run], pairs: Sequence[tuple[str, str]] = LESION_PAIRS,
                    ks: Sequence[int] = (1, 5)) -> pd.DataFrame:  # fmt: skip
    """"Residual nets degrade smoothly, plain nets collapse" (Veit et al.), one row per (residual,
    plain) pair and k: the accuracy lost by deleting k random blocks, plain minus residual.

    The unit of replication is the trained network: each network's lesion curve gives one value
    (its mean loss over the random draws), and with two or more networks per architecture the
    verdict rests on a Welch interval across networks. With one network per architecture the draws
    are the only spread, which is variation within one network: the verdict is "cannot tell (one
    network per architecture)", and the column 'these trained networks only' gives what the Welch
    interval over the draws says about those two networks. A net within ``NEAR_CHANCE`` of chance
    intact, or both nets after the deletions, have nothing left to lose: "cannot tell (floor)". One
    net left there alone lost all it could, which biases the difference one way only: a plain net at
    chance still confirms the claim (never refutes it), a residual net at chance still refutes it. The
    table's intervals are Holm-adjusted across its tested rows (``attrs['note']``); ``attrs['floor']``
    maps each claim to the nets at the floor ('detail': net -> its accuracy left and intact) and the
    one whose collapse the verdict stands despite ('stands_despite', "" if none); ``attrs['networks']``
    maps it to the trained networks its interval is over, (plain, residual), or None where the interval
    is over the random draws within one network a side."""
    m = by_model(runs)
    rows = []
    for residual, plain in pairs:
        for k in ks:
            cr, cp = _lesion_curves(m.get(residual, {}), k), _lesion_curves(m.get(plain, {}), k)
            if not cr or not cp:
                continue
            low, untrained = {}, False  # the nets left near chance; whether one was there before any deletion
            for n, c in ((plain, cp), (residual, cr)):
                left, intact = (np.mean([v[key] for v in c.values()]) for key in ("left", "intact"))
                if _near_chance([left]) or _near_chance([intact]):
                    low[n] = f"{n} ({100 * left:.1f}% left, intact {100 * intact:.1f}%)"
                    untrained |= _near_chance([intact])
            # A net left at chance lost all it could: its loss understates what the deletions did to it. With only
            # the plain net there, the measured difference can only be too small, so an interval above 0 still
            # confirms the claim (Veit et al.'s collapse) and nothing can refute it; with only the residual net
            # there, the other way round. Both there, or a net at chance intact, and the losses do not compare.
            one_sided = {plain: +1, residual: -1}[next(iter(low))] if len(low) == 1 and not untrained else 0
            row = {"residual": residual, "plain": plain, "k": k, "nets": (len(cp), len(cr)),
                   "floor": dict(low), "one_sided": one_sided,
                   "untested": bool(low) and not one_sided,
                   "low": math.nan, "high": math.nan, "confidence": 0.95}  # fmt: skip
            if min(len(cp), len(cr)) >= 2:
                per_net = [[v["loss"].mean() for v in c.values()] for c in (cp, cr)]
                ev = stats.welch_contrast(per_net, [1, -1], bounds=[_loss_range(cp.values()), _loss_range(cr.values())])
                row.update(evidence=ev, method=f"Welch t over {len(cp)} and {len(cr)} trained networks (each: its "
                                               f"mean loss over {len(next(iter(cp.values()))['loss'])} random draws)")
            else:
                common = sorted(set(cp) & set(cr))
                sp, sr = (common[0], common[0]) if common else (next(iter(cp)), next(iter(cr)))
                ev = stats.welch_contrast([cp[sp]["loss"], cr[sr]["loss"]], [1, -1],
                                          bounds=[_loss_range([cp[sp]]), _loss_range([cr[sr]])])  # fmt: skip
                seeds = f"seed {sp} nets" if sp == sr else f"seeds {sp} and {sr}"
                row.update(evidence=ev, one_net=True, seeds=seeds,
                           method=f"Welch t over {len(cp[sp]['loss'])} and {len(cr[sr]['loss'])} random draws of one "
                                  f"trained network each ({seeds}): spread within one network")  # fmt: skip
            row.update(estimate=ev.estimate)
            row["low"], row["high"] = ev.interval(0.95)
            rows.append(row)
    k_claims = _holm(rows, [stats.sign_decided] * len(rows))
    out, floors, networks = [], {}, {}
    for r in rows:
        within = stats.verdict(r["low"], r["high"], +1)
        floor_why, stands_despite = "", ""
        if r["one_sided"]:
            stands = {+1: CONFIRMED, -1: REFUTED}[r["one_sided"]]  # the only conclusion the floor cannot have made
            if within == stands:
                stands_despite, detail = next(iter(r["floor"].items()))
                floor_why = (f"{detail} is left within {100 * NEAR_CHANCE:g} points of chance ({100 * CHANCE:g}%): "
                             f"it lost all it could, so its loss understates the damage and the difference can only be "
                             f"{'larger' if r['one_sided'] > 0 else 'smaller'}; {within} stands")  # fmt: skip
            else:
                within = CANNOT_TELL_FLOOR
        if r["floor"] and not floor_why:
            v = CANNOT_TELL_FLOOR
            why = (f"{' and '.join(r['floor'].values())}: within {100 * NEAR_CHANCE:g} points of chance "
                   f"({100 * CHANCE:g}%) a net has nothing left to lose, so the losses do not compare; the accuracies "
                   "left (the lesion table) show which net still works")  # fmt: skip
            only = ""
        elif r.get("one_net"):
            v = CANNOT_TELL_ONE_NET
            only = f"{within} for these two trained networks ({r['seeds']}) only"
            why = "; ".join(filter(None, (
                "one trained network per architecture stores lesion tables: the random draws vary the deleted "
                "blocks of one network, not the training, so the interval says nothing about the architectures",
                floor_why)))  # fmt: skip
        else:
            v, only, why = within, "", floor_why
        level = _level(r)
        claim = f"deleting {r['k']} random block(s) costs {r['plain']} more accuracy than {r['residual']}"
        floors[claim] = {"detail": r["floor"], "stands_despite": stands_despite}
        networks[claim] = None if r.get("one_net") else r["nets"]
        out.append({"claim": claim,
                    "difference (points)": _fmt(r, unit=""),
                    "interval from": r["method"] + (f"; {level}" if level else ""), "verdict": v,
                    THESE_NETWORKS: only, "why": why})  # fmt: skip
    table = pd.DataFrame(out, columns=["claim", "difference (points)", "interval from", "verdict", THESE_NETWORKS,
                                       "why"])  # fmt: skip
    table.attrs.update(note=stats.holm_note(k_claims), claims=k_claims, floor=floors, networks=networks)
    return table


def lesion_verdict(runs: Iterable[Run], residual: str = "resnet56", plain: str = "plain56", k: int = 1) -> dict:
    """One row of ``lesion_verdicts`` as a dict (a family of one claim: no Holm adjustment), {} when
    either net lacks a lesion table with k."""
    t = lesion_verdicts(runs, ((residual, plain),), (k,))
    return t.iloc[0].to_dict() if len(t) else {}


def _fisher_z(r: np.ndarray) -> np.ndarray:
    """Fisher's z = artanh(r) of correlations; |r| = 1 (a trace that is a straight line) is kept finite, at the
    z of the largest double below 1."""
    return np.arctanh(np.clip(r, -np.nextafter(1.0, 0), np.nextafter(1.0, 0)))


def shattering(tables: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Balduzzi et al.: lag-1 autocorrelation of the input-gradient trace at initialisation, per
    depth and net, mean with a 95% interval over the initialisations (one table per
    initialisation; t on Fisher's z, transformed back, so it stays in [-1, 1]), and whether the
    residual net's exceeds the plain net's at each depth.

    The comparison is paired (each initialisation builds both nets from the same weights and probes
    them on the same line of inputs, so the pairing removes the spread between initialisations and
    input lines) and made on Fisher's z: a paired t-interval of z(residual) - z(plain), Holm-adjusted
    across the depths (``attrs['note']``). A correlation lies in [-1, 1], so a t-interval of the
    difference of correlations can reach values the data cannot (below -1 where the residual value is
    0.99); z is unbounded, and a difference of z has the sign of the difference of correlations, which
    is all the claim is about. Columns: ``plain``, ``residual`` (95% intervals), ``residual − plain``
    (the mean difference of correlations, descriptive), ``Fisher z, residual − plain`` (the interval
    the verdict rests on), ``residual higher`` (in how many initialisations), ``level``, and the
    verdict."""
    df = pd.concat(list(tables), ignore_index=True)
    rows, cells = [], []
    for depth, g in df.groupby("depth"):
        p = g[g["net"] == "plain"]["lag1_autocorrelation"].to_numpy()
        r = g[g["net"] == "residual"]["lag1_autocorrelation"].to_numpy()
        ip, ir = stats.seed_interval(p, bounds=(-1, 1)), stats.seed_interval(r, bounds=(-1, 1))
        cmp = (stats.seed_difference(_fisher_z(r), _fisher_z(p), paired=True)
               if len(p) >= 2 and len(p) == len(r) else None)  # fmt: skip
        cells.append(dict(estimate=cmp.difference if cmp else math.nan, low=cmp.low if cmp else math.nan,
                          high=cmp.high if cmp else math.nan, evidence=cmp.evidence if cmp else None,
                          confidence=0.95))  # fmt: skip
        rows.append({"depth": depth, "initialisations": len(p), "plain": stats.fmt_interval(ip, 1, 2),
                     "residual": stats.fmt_interval(ir, 1, 2),
                     "residual − plain": stats._signed(float(np.mean(r)) - float(np.mean(p)), 2),
                     "residual higher": f"{int((r > p).sum())} of {len(p)}" if len(p) == len(r) else "n/a"})
    k = _holm(cells, [stats.sign_decided] * len(cells))
    for row, c in zip(rows, cells, strict=True):
        has = np.isfinite(c["low"]) and np.isfinite(c["high"])
        row["Fisher z, residual − plain"] = (f"{stats._signed(c['estimate'], 2)} [{stats._signed(c['low'], 2)}, "
                                             f"{stats._signed(c['high'], 2)}]" if has else "n/a")  # fmt: skip
        row["level"] = f"{100 * c['confidence']:.4g}%" if has else ""
        row["verdict: residual more correlated"] = stats.verdict(c["low"], c["high"], +1) if has else CANNOT_TELL
    table = pd.DataFrame(rows).set_index("depth")
    table.attrs.update(note="Per-net columns: 95% intervals (t on Fisher's z, transformed back). The verdicts rest on "
                            "a paired t-interval of Fisher's z = artanh(r), residual − plain, over the "
                            "initialisations. " + stats.holm_note(k), claims=k)  # fmt: skip
    return table


def depth_sweep(runs: Iterable[Run]) -> pd.DataFrame:
    """He et al. Fig. 6 as a table: final clean training error and test error by depth and
    family, mean and 95% t-interval over the seeds that exist (on the logit scale, so it stays
    in [0, 1]); descriptive, no verdicts."""
    rows = []
    for seeds in by_model(runs).values():
        net = info(next(iter(seeds.values())).config.model)
        fam, depth = net.connections, net.depth
        for col, fn in (("clean training error", clean_train_error), ("test error", test_error)):
            vals = [v for v in (fn(r) for r in seeds.values()) if np.isfinite(v)]
            if vals:
                iv = stats.seed_interval(vals, bounds=UNIT)
                rows.append({"family": fam, "depth": depth, "metric": col, "seeds": len(vals), "mean": iv.estimate,
                             "low": iv.low, "high": iv.high, "text": stats.fmt_interval(iv)})  # fmt: skip
    return pd.DataFrame(rows).sort_values(["metric", "family", "depth"]).reset_index(drop=True)
