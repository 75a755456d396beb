"""Intervals and verdicts for the study's comparisons.

Every number the notebooks compare carries an interval, and a claim is
"confirmed" or "refuted" only when the interval separates the compared numbers;
otherwise the verdict is "cannot tell", with a line saying what would settle it.

- One run's test accuracy: exact (Clopper-Pearson) binomial interval.
- Two runs on the same test images: paired bootstrap of the accuracy difference
  over images (Efron & Tibshirani 1993) and the exact McNemar test on the
  discordant images (Dietterich 1998, "Approximate statistical tests for
  comparing supervised classification learning algorithms").
- Several seeds: t-interval of the mean; Welch (or paired) t-interval of a
  difference of means.
- Convergence speed: mean test accuracy over the run (the area under the
  test-accuracy curve), so that a weak model that plateaus early is not called
  "fast"; ``epochs_to_target`` gives the epochs to an absolute accuracy for
  reading a curve.

Statistics come from ``scipy.stats``; every resampling takes a seed.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

CONFIRMED, REFUTED, CANNOT_TELL = "confirmed", "refuted", "cannot tell"
CONSISTENT_WITH_TIE = "consistent with a tie"
_MINUS = "\u2212"  # typographic minus for "A − B" in tables and text


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided interval (bounds NaN when undefined)."""

    estimate: float
    low: float
    high: float
    n: int  # test images (accuracy) or seeds (seed_interval)
    confidence: float  # e.g. 0.95
    method: str  # how the interval was computed, in words
    std: float = float("nan")  # sample std (ddof=1) of the values; seed intervals only


@dataclass(frozen=True)
class PairedComparison:
    """accuracy(a) - accuracy(b) on the same test images, with a paired interval and McNemar's test."""

    difference: float
    low: float
    high: float
    n01: int  # images a gets wrong and b gets right
    n10: int  # images a gets right and b gets wrong
    p_mcnemar: float  # exact (binomial) McNemar test, two-sided
    n: int  # test images
    confidence: float
    method: str


@dataclass(frozen=True)
class SeedComparison:
    """mean(a) - mean(b) across seeds, with a Welch or paired t-interval."""

    difference: float
    low: float
    high: float
    n_a: int  # seeds of a
    n_b: int  # seeds of b
    df: float  # degrees of freedom of the t distribution
    confidence: float
    method: str


@dataclass(frozen=True)
class RankingVerdict:
    """A claimed ranking checked pair by pair."""

    verdict: str  # "confirmed", "refuted" or "cannot tell"
    table: pd.DataFrame  # one row per pair: pair, claimed, estimate, low, high, p_mcnemar, verdict
    settle: str | None  # what would settle it, when the verdict is "cannot tell"


# --- input checks -----------------------------------------------------------------------------------------------------


def _classes(x: ArrayLike, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class indices, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty: need at least one test image")
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {a.dtype}; convert with .astype(int)")
    return a


def _correct(pred: ArrayLike, labels: ArrayLike, name: str = "pred") -> np.ndarray:
    p, y = _classes(pred, name), _classes(labels, "labels")
    if len(p) != len(y):
        raise ValueError(f"{name} has {len(p)} entries but labels has {len(y)}: both must cover the same test images")
    return p == y


def _values(x: ArrayLike, name: str, at_least: int = 1) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array (one value per seed), got shape {a.shape}")
    if len(a) < at_least:
        raise ValueError(f"{name} has {len(a)} value(s); need at least {at_least}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")


# --- one run, two runs on the same images -----------------------------------------------------------------------------


def accuracy_interval(pred: ArrayLike, labels: ArrayLike, *, confidence: float = 0.95) -> Interval:
    """Test accuracy with an exact Clopper-Pearson interval (conservative: covers at least ``confidence``)."""
    _check_confidence(confidence)
    correct = _correct(pred, labels)
    k, n = int(correct.sum()), len(correct)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return Interval(k / n, float(ci.low), float(ci.high), n, confidence, "Clopper-Pearson (exact binomial)")


def paired_difference(
    pred_a: ArrayLike,
    pred_b: ArrayLike,
    labels: ArrayLike,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    method: str = "percentile",
) -> PairedComparison:
    """accuracy(a) - accuracy(b) on the same test images, in the same order.

    The interval is a bootstrap over test images of the per-image difference in
    correctness (+1, 0 or -1); resampling that one array resamples images in
    pairs, so what both runs get right or wrong together cancels. ``method`` is
    'percentile' by default: the statistic is a mean of bounded values over
    hundreds to thousands of images, so its bootstrap distribution is close to
    symmetric and percentile is accurate; it needs no jackknife (n^2 work on
    10,000 images) and stays defined on degenerate data (identical predictions
    give [0, 0]). 'BCa' is available; where it is undefined (all resamples
    equal) it falls back to percentile and says so in ``method``.

    McNemar's exact test uses only the discordant images: p = binomtest(n10,
    n01 + n10, 0.5), and p = 1 when there are none.
    """
    _check_confidence(confidence)
    if method not in ("percentile", "BCa"):
        raise ValueError(f"method must be 'percentile' or 'BCa', got {method!r}")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    ca, cb = _correct(pred_a, labels, "pred_a"), _correct(pred_b, labels, "pred_b")
    n = len(ca)
    if n < 2:
        raise ValueError("need at least 2 test images to bootstrap a difference")
    d = ca.astype(float) - cb.astype(float)  # (n,) in {-1, 0, +1}
    n10, n01 = int((ca & ~cb).sum()), int((~ca & cb).sum())
    p = float(stats.binomtest(n10, n01 + n10, 0.5).pvalue) if n01 + n10 else 1.0

    low, high = _bootstrap_mean(d, confidence, resamples, seed, method)
    used = method
    if method == "BCa" and not (np.isfinite(low) and np.isfinite(high)):
        low, high = _bootstrap_mean(d, confidence, resamples, seed, "percentile")
        used = "percentile (BCa undefined on these data)"
    label = f"paired bootstrap over images ({used}, {resamples} resamples, seed {seed}); exact McNemar"
    return PairedComparison(float(d.mean()), low, high, n01, n10, p, n, confidence, label)


def _bootstrap_mean(d: np.ndarray, confidence: float, resamples: int, seed: int, method: str) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    # scipy >= 1.15 calls the generator `rng`; older versions `random_state`.
    key = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DegenerateDataWarning: handled by the caller through NaN bounds
        res = stats.bootstrap(
            (d,),
            np.mean,
            n_resamples=resamples,
            batch=200,  # caps memory at 200 x n resampled values
            vectorized=True,
            confidence_level=confidence,
            method=method,
            **{key: rng},
        )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


# --- across seeds -----------------------------------------------------------------------------------------------------


def seed_interval(values: ArrayLike, *, confidence: float = 0.95) -> Interval:
    """Mean across seeds with a t-interval; with one seed the bounds are NaN (no spread to go on)."""
    _check_confidence(confidence)
    v = _values(values, "values")
    n, mean = len(v), float(v.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, confidence, "t-interval undefined: one seed")
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, confidence, f"t-interval of the mean, {n - 1} df", std)


def seed_difference(
    values_a: ArrayLike, values_b: ArrayLike, *, paired: bool = False, confidence: float = 0.95
) -> SeedComparison:
    """mean(a) - mean(b) across seeds: Welch t-interval, or a paired t-interval when the
    i-th value of a and of b come from the same seed (``paired=True``)."""
    _check_confidence(confidence)
    a, b = _values(values_a, "values_a", 2), _values(values_b, "values_b", 2)
    q = (1 + confidence) / 2
    if paired:
        if len(a) != len(b):
            raise ValueError(f"paired=True needs one value per seed on each side, got {len(a)} and {len(b)}")
        iv = seed_interval(a - b, confidence=confidence)
        return SeedComparison(iv.estimate, iv.low, iv.high, len(a), len(b), len(a) - 1, confidence, "paired t")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff, se = float(a.mean() - b.mean()), math.sqrt(va + vb)
    if se == 0:  # no spread on either side: the difference is what it is
        return SeedComparison(diff, diff, diff, len(a), len(b), math.nan, confidence, "Welch t (no spread)")
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    half = float(stats.t.ppf(q, df)) * se
    return SeedComparison(diff, diff - half, diff + half, len(a), len(b), float(df), confidence, "Welch t")


# --- verdicts ---------------------------------------------------------------------------------------------------------


def verdict(low: float, high: float, claimed_sign: int = 1) -> str:
    """Verdict on a claim about a difference A - B with interval [low, high].

    ``claimed_sign`` +1 claims A > B, -1 claims A < B: confirmed when the whole
    interval lies on the claimed side of 0, refuted when it lies wholly on the
    other side, else cannot tell. 0 claims A ≈ B: refuted when the interval
    excludes 0, else cannot tell (an interval alone cannot prove a tie; see
    ``ranking_verdict``'s ``tie_margin``). NaN bounds give cannot tell.
    """
    if claimed_sign not in (-1, 0, 1):
        raise ValueError(f"claimed_sign must be +1 (A > B), -1 (A < B) or 0 (A ≈ B), got {claimed_sign}")
    if not (np.isfinite(low) and np.isfinite(high)):
        return CANNOT_TELL
    if low > high:
        raise ValueError(f"interval bounds out of order: [{low}, {high}]")
    if claimed_sign == 0:
        return REFUTED if low > 0 or high < 0 else CANNOT_TELL
    if low > 0:
        return CONFIRMED if claimed_sign > 0 else REFUTED
    if high < 0:
        return CONFIRMED if claimed_sign < 0 else REFUTED
    return CANNOT_TELL


def _oriented(cmp: Any, flip: bool) -> tuple[float, float, float, float, float | None]:
    """(estimate, low, high, p_mcnemar, confidence) of A - B from a comparison of A - B or, flipped, of B - A."""
    if isinstance(cmp, Mapping):
        est, low, high = cmp.get("estimate", cmp.get("difference")), cmp["low"], cmp["high"]
        p, conf = cmp.get("p_mcnemar", math.nan), cmp.get("confidence")
    elif hasattr(cmp, "low") and hasattr(cmp, "high"):
        est = getattr(cmp, "difference", getattr(cmp, "estimate", None))
        low, high = cmp.low, cmp.high
        p, conf = getattr(cmp, "p_mcnemar", math.nan), getattr(cmp, "confidence", None)
    else:
        est, low, high = cmp
        p, conf = math.nan, None
    est, low, high = float(est), float(low), float(high)
    if flip:
        est, low, high = -est, -high, -low
    return est, low, high, float(p), conf


def ranking_verdict(
    claimed_tiers: Sequence[Sequence[str]],
    pairwise: Mapping[tuple[str, str], Any],
    *,
    tie_margin: float | None = None,
    scale: float = 100,
    unit: str = "points",
    remedy: str = "more seeds or a larger test set",
) -> RankingVerdict:
    """Check a claimed ranking such as [["SE-ResNet"], ["ResNet", "DenseNet"]] pair by pair.

    Tiers are in strictly decreasing order; names inside a tier are claimed to
    tie. ``pairwise`` maps (A, B) to a comparison of A - B (a PairedComparison,
    SeedComparison, a mapping with estimate/low/high or an (estimate, low, high)
    tuple); (B, A) is used, negated, when (A, B) is absent. Every pair of names
    must be present in one orientation.

    Each strict pair A > B must be confirmed (interval of A - B above 0). A
    claimed tie is refuted when its interval excludes 0; otherwise it is
    "consistent with a tie", which is not a confirmation: without an
    equivalence margin no interval can show two numbers equal. With
    ``tie_margin`` (same units as the comparisons) a tie whose whole interval
    lies inside ±tie_margin is confirmed. The ranking is refuted if any pair is
    refuted, confirmed if every pair is confirmed, and cannot tell otherwise.
    ``scale`` and ``unit`` format the 'what would settle it' line.
    """
    tiers = [list(t) for t in claimed_tiers]
    names = [m for t in tiers for m in t]
    if not tiers or any(not t for t in tiers):
        raise ValueError(f"claimed_tiers must be non-empty lists of names, got {claimed_tiers!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"a name appears twice in the claimed ranking {claimed_tiers!r}")
    if tie_margin is not None and tie_margin <= 0:
        raise ValueError(f"tie_margin must be positive, got {tie_margin}")
    tier_of = {m: i for i, t in enumerate(tiers) for m in t}
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    missing = [f"{a} vs {b}" for a, b in pairs if (a, b) not in pairwise and (b, a) not in pairwise]
    if missing:
        raise ValueError(f"pairwise lacks a comparison for: {', '.join(missing)}")

    rows, undecided = [], []
    for a, b in pairs:
        flip = (a, b) not in pairwise
        est, low, high, p, conf = _oriented(pairwise[(b, a) if flip else (a, b)], flip)
        tie = tier_of[a] == tier_of[b]
        if not tie:
            pair_verdict = verdict(low, high, +1)
        elif verdict(low, high, 0) == REFUTED:
            pair_verdict = REFUTED
        elif tie_margin is not None and -tie_margin <= low and high <= tie_margin:
            pair_verdict = CONFIRMED
        else:
            pair_verdict = CONSISTENT_WITH_TIE
        if pair_verdict not in (CONFIRMED, REFUTED):
            undecided.append((f"{a} {_MINUS} {b}", tie, low, high, conf))
        rows.append({
            "pair": f"{a} {_MINUS} {b}", "claimed": "≈" if tie else ">", "estimate": est, "low": low, "high": high,
            "p_mcnemar": p, "verdict": pair_verdict,
        })  # fmt: skip
    table = pd.DataFrame(rows, columns=["pair", "claimed", "estimate", "low", "high", "p_mcnemar", "verdict"])

    if (table["verdict"] == REFUTED).any():
        return RankingVerdict(REFUTED, table, None)
    if not undecided:
        return RankingVerdict(CONFIRMED, table, None)
    return RankingVerdict(CANNOT_TELL, table, _settle_text(undecided, tie_margin, scale, unit, remedy))


def _settle_text(undecided: list, tie_margin: float | None, scale: float, unit: str, remedy: str) -> str:
    parts, no_interval = [], []
    for pair, tie, low, high, conf in undecided:
        if not np.isfinite(low):
            no_interval.append(pair)
            continue
        level = f"{100 * conf:g}% " if conf is not None else ""
        text = f"the {level}interval of {pair} is [{_signed(low * scale, 1)}, {_signed(high * scale, 1)}] {unit}"
        if tie and tie_margin is None:
            text += " (and two models count as equal only inside an agreed margin, which this claim does not state)"
        elif tie:
            text += f" (a tie needs it inside ±{tie_margin * scale:g})"
        parts.append(text)
    if no_interval:
        parts.append(f"{', '.join(no_interval)} {'has' if len(no_interval) == 1 else 'have'} no interval: one seed, "
                     "and this measure is not paired over test images; 3 seeds of each model give one")
    return f"{remedy}: " + "; ".join(parts)


# --- convergence speed ------------------------------------------------------------------------------------------------


def _curve(epochs: ArrayLike, acc: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    e, a = np.asarray(epochs, dtype=float), np.asarray(acc, dtype=float)
    if e.ndim != 1 or a.shape != e.shape:
        raise ValueError(f"epochs and acc must be 1-D of one length, got shapes {e.shape} and {a.shape}")
    if e.size == 0:
        raise ValueError("the curve is empty: need at least one epoch")
    if np.any(np.diff(e) <= 0):
        raise ValueError("epochs must be strictly increasing")
    return e, a


def area_under_curve(epochs: ArrayLike, acc: ArrayLike) -> float:
    """Mean test accuracy over the run: each logged epoch weighs the same (histories log every epoch).

    Unlike 'epochs to 90% of the final accuracy', a model that plateaus early
    at a low accuracy scores low. Compare runs of the same length only (see
    ``areas_under_curves``): a longer run averages in more late, high epochs.
    """
    _, a = _curve(epochs, acc)
    return float(a.mean())


def areas_under_curves(*runs: tuple[ArrayLike, ArrayLike]) -> np.ndarray:
    """``area_under_curve`` of each (epochs, acc) run; ValueError unless all runs log the same epochs."""
    curves = [_curve(e, a) for e, a in runs]
    if not curves:
        raise ValueError("no runs given")
    first = curves[0][0]
    for e, _ in curves[1:]:
        if len(e) != len(first) or not np.array_equal(e, first):
            raise ValueError(
                f"runs must cover the same epochs to compare their mean accuracy: got {len(first)} epochs "
                f"({first[0]:g}-{first[-1]:g}) and {len(e)} ({e[0]:g}-{e[-1]:g})"
            )
    return np.array([float(a.mean()) for _, a in curves])


def epochs_to_target(epochs: ArrayLike, acc: ArrayLike, target: float) -> float:
    """First epoch whose accuracy reaches the absolute ``target`` (NaN if never)."""
    e, a = _curve(epochs, acc)
    hit = np.flatnonzero(a >= target)
    return float(e[hit[0]]) if hit.size else math.nan


# --- formatting -------------------------------------------------------------------------------------------------------


def _signed(x: float, digits: int) -> str:
    return f"{round(x, digits) + 0.0:+.{digits}f}"  # + 0.0 turns -0.0 into 0.0


def fmt_interval(iv: Interval | PairedComparison | SeedComparison, scale: float = 100, digits: int = 1,
                 signed: bool | None = None) -> str:  # fmt: skip
    """'93.4 [92.9, 93.9]'; differences (or ``signed=True``) as '+1.2 [+0.4, +2.0]'; undefined bounds as '[n/a]'."""
    est = iv.estimate if isinstance(iv, Interval) else iv.difference
    if signed is None:
        signed = not isinstance(iv, Interval)

    def num(x: float) -> str:
        return _signed(x * scale, digits) if signed else f"{x * scale:.{digits}f}"

    if not (np.isfinite(iv.low) and np.isfinite(iv.high)):
        return f"{num(est)} [n/a]"
    return f"{num(est)} [{num(iv.low)}, {num(iv.high)}]"
