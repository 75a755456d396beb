"""Intervals and verdicts for the study's comparisons.

Every number the notebooks compare carries an interval, and a claim is "confirmed" or "refuted" only when the interval
separates the compared numbers; otherwise the verdict is "cannot tell".

- One run's test accuracy: exact (Clopper-Pearson) binomial interval.
- Two runs on the same test images: paired bootstrap of the accuracy difference over images (Efron & Tibshirani 1993).
  It measures the test set's noise only: seed-to-seed variance is left out, so a verdict from it holds for those
  trained networks, not for the architectures.
- Several seeds: t-interval of the mean; Welch t-interval of a difference of means (``welch_contrast`` for any weighted
  sum of means). The trained network is the unit of replication, and two architectures trained with the same seed share
  only the order of the data, so comparisons across architectures are unpaired (Welch); ``paired=True`` is for values
  that share more than a seed number (two nets built from the same weights and probed on the same inputs).

Bounded quantities. No interval leaves the feasible range, by one rule: the mean of a quantity bounded to [lo, hi]
(``bounds``; an accuracy or error rate in [0, 1], a correlation in [-1, 1]) gets its t-interval on the logit scale of
its position in the range, log(u / (1 - u)) with u = (x - lo) / (hi - lo), and the bounds are transformed back (for
[-1, 1] this is Fisher's z = atanh(r), up to a factor 2 that cancels); the estimate stays the arithmetic mean. Where a
value lies on a bound the logit is infinite, and the interval is the t-interval clipped to the range. A difference of
bounded values has no fixed range of its own to transform, so its interval is clipped to the feasible range of the
difference ([lo - hi, hi - lo] for two values).

Many claims. A table of verdicts is one family of claims, and its family-wise error is held at ``ALPHA`` by Holm's
step-down method (``holm``, ``holm_adjust``): each claim's interval is drawn at the level its Holm step tests it at, so
the interval decides the claim exactly when its Holm-adjusted p-value is below ``ALPHA``; the verdicts read the
intervals as everywhere else.

Ties. A claimed tie A ≈ B is tested against a margin fixed before looking at any run (``TIE_MARGIN``, 1 point of
accuracy), in both directions (as in two one-sided tests): confirmed when the whole interval lies inside ±margin,
refuted when it lies wholly outside, cannot tell otherwise.

Statistics come from ``scipy.stats``; every resampling takes a seed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats
from scipy.special import expit

from .constants import ALPHA, TIE_MARGIN

CONFIRMED, REFUTED, CANNOT_TELL = "confirmed", "refuted", "cannot tell"
_MINUS = "\u2212"  # typographic minus for "A − B" in tables and text


@dataclass(frozen=True)
class Evidence:
    """An estimate whose interval can be drawn at any confidence level (``interval``), so that a
    table of claims can draw each claim's interval at its Holm-adjusted level."""

    estimate: float
    interval_at: Callable[[float], tuple[float, float]] = field(repr=False, compare=False)
    n: int  # seeds, networks or test images behind the interval

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        _check_confidence(confidence)
        return self.interval_at(confidence)


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided interval (bounds NaN when undefined)."""

    estimate: float
    low: float
    high: float
    n: int  # test images (accuracy) or seeds (seed_interval)
    confidence: float  # e.g. 0.95


@dataclass(frozen=True)
class PairedComparison:
    """accuracy(a) - accuracy(b) on the same test images, with a paired interval."""

    difference: float
    low: float
    high: float
    n: int  # test images
    confidence: float
    draws: np.ndarray | None = field(default=None, repr=False, compare=False)  # the bootstrap distribution


@dataclass(frozen=True)
class SeedComparison:
    """mean(a) - mean(b) across seeds, with a Welch or paired t-interval."""

    difference: float
    low: float
    high: float
    confidence: float
    evidence: Evidence | None = field(default=None, repr=False, compare=False)  # the interval at any level


@dataclass(frozen=True)
class RankingVerdict:
    """A claimed ranking checked pair by pair."""

    verdict: str  # "confirmed", "refuted" or "cannot tell"
    table: pd.DataFrame  # one row per pair: pair, claimed, estimate, low, high, verdict


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
    """Test accuracy with an exact Clopper-Pearson interval (``binomial_interval``)."""
    correct = _correct(pred, labels)
    return binomial_interval(int(correct.sum()), len(correct), confidence=confidence)


def binomial_interval(k: int, n: int, *, confidence: float = 0.95) -> Interval:
    """k of n images, as a fraction, with an exact Clopper-Pearson interval (conservative: covers at least
    ``confidence``)."""
    _check_confidence(confidence)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return Interval(k / n, float(ci.low), float(ci.high), n, confidence)


def paired_difference(pred_a: ArrayLike, pred_b: ArrayLike, labels: ArrayLike, *, confidence: float = 0.95,
                      resamples: int = 2000, seed: int = 0) -> PairedComparison:  # fmt: skip
    """accuracy(a) - accuracy(b) on the same test images, in the same order.

    A percentile bootstrap over test images of the per-image difference in correctness (+1, 0 or -1):
    resampling that one array resamples images in pairs, so what both runs get right or wrong together
    cancels. The statistic is a mean of bounded values over hundreds to thousands of images, so its
    bootstrap distribution is close to symmetric and percentile is accurate; it needs no jackknife (BCa's
    n^2 work on 10,000 images) and stays defined on degenerate data (identical predictions give [0, 0]).
    """
    _check_confidence(confidence)
    ca, cb = _correct(pred_a, labels, "pred_a"), _correct(pred_b, labels, "pred_b")
    n = len(ca)
    if n < 2:
        raise ValueError("need at least 2 test images to bootstrap a difference")
    d = ca.astype(float) - cb.astype(float)  # (n,) in {-1, 0, +1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DegenerateDataWarning (identical predictions): the interval is [0, 0]
        # batch: at most 200 x n resampled values in memory at once
        res = stats.bootstrap((d,), np.mean, n_resamples=resamples, batch=200, vectorized=True,
                              confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    ci, draws = res.confidence_interval, np.asarray(res.bootstrap_distribution, dtype=float)
    return PairedComparison(float(d.mean()), float(ci.low), float(ci.high), n, confidence, draws)


def bootstrap_evidence(cmp: PairedComparison) -> Evidence:
    """A paired comparison's percentile bootstrap interval at any level, from its stored bootstrap
    distribution (at ``cmp.confidence`` it is ``cmp``'s own interval when that was a percentile one)."""
    draws = np.asarray(cmp.draws, dtype=float)

    def at(confidence: float) -> tuple[float, float]:
        a = (1 - confidence) / 2
        low, high = np.quantile(draws, [a, 1 - a])  # linear interpolation, as scipy's percentile interval
        return float(low), float(high)

    return Evidence(cmp.difference, at, cmp.n)


# --- across seeds -----------------------------------------------------------------------------------------------------


def _check_bounds(v: np.ndarray, bounds: tuple[float, float] | None, name: str) -> None:
    if bounds is None:
        return
    lo, hi = bounds
    if np.any(v < lo) or np.any(v > hi):
        raise ValueError(f"{name} has values outside their feasible range [{lo:g}, {hi:g}]")


def _t_evidence(estimate: float, centre: float, se: float, df: float, n: int, *,
                back: Callable[[float], float] | None = None,
                clip: tuple[float, float] | None = None) -> Evidence:  # fmt: skip
    """centre ± t(df) * se on the analysis scale, transformed back by ``back`` and clipped to ``clip``."""

    def at(confidence: float) -> tuple[float, float]:
        half = float(stats.t.ppf((1 + confidence) / 2, df)) * se if se > 0 else 0.0
        low, high = centre - half, centre + half
        if back is not None:
            low, high = back(low), back(high)
        if clip is not None:
            low, high = max(low, clip[0]), min(high, clip[1])
        return float(low), float(high)

    return Evidence(estimate, at, n)


def seed_evidence(values: ArrayLike, *, bounds: tuple[float, float] | None = None) -> Evidence | None:
    """The mean across seeds with its t-interval at any level (None for one seed: no spread to go on).

    With ``bounds`` (the feasible range of each value) the interval is a t-interval of the logit
    of the values' position in the range, transformed back (see the module's rule on bounded
    quantities), so it never leaves the range; a value on a bound gives the clipped t-interval."""
    v = _values(values, "values")
    _check_bounds(v, bounds, "values")
    n, mean = len(v), float(v.mean())
    if n == 1:
        return None
    lo, hi = bounds or (-math.inf, math.inf)
    if bounds is None or np.any(v == lo) or np.any(v == hi):  # on a bound the logit is infinite: clipped instead
        return _t_evidence(mean, mean, float(v.std(ddof=1)) / math.sqrt(n), n - 1, n, clip=bounds)
    u = (v - lo) / (hi - lo)
    z = np.log(u / (1 - u))
    return _t_evidence(mean, float(z.mean()), float(z.std(ddof=1)) / math.sqrt(n), n - 1, n,
                       back=lambda y: lo + (hi - lo) * float(expit(y)))  # fmt: skip


def seed_interval(values: ArrayLike, *, confidence: float = 0.95,
                  bounds: tuple[float, float] | None = None) -> Interval:  # fmt: skip
    """Mean across seeds with a t-interval; with one seed the bounds are NaN (no spread to go on).
    ``bounds``: the values' feasible range, which the interval then never leaves (``seed_evidence``)."""
    _check_confidence(confidence)
    v = _values(values, "values")
    ev = seed_evidence(v, bounds=bounds)
    if ev is None:
        return Interval(float(v.mean()), math.nan, math.nan, 1, confidence)
    low, high = ev.interval(confidence)
    return Interval(ev.estimate, low, high, len(v), confidence)


def _difference_range(weights: Sequence[float], bounds: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """The feasible range of sum_i w_i x_i where x_i lies in bounds[i]."""
    pairs = list(zip(weights, bounds, strict=True))
    return (float(sum(min(w * lo, w * hi) for w, (lo, hi) in pairs)),
            float(sum(max(w * lo, w * hi) for w, (lo, hi) in pairs)))  # fmt: skip


def welch_contrast(samples: Sequence[ArrayLike], weights: Sequence[float], *,
                   bounds: tuple[float, float] | Sequence[tuple[float, float]] | None = None) -> Evidence:  # fmt: skip
    """sum_i w_i mean(sample_i) over independent samples (e.g. different architectures, each over its own seeds), with a
    Welch t-interval: se^2 = sum w_i^2 s_i^2 / n_i and Welch-Satterthwaite degrees of freedom. ``bounds``: the values'
    feasible range, one (low, high) for every sample or one per sample; the interval is clipped to the contrast's
    feasible range. Each sample needs two or more values."""
    vs = [_values(x, f"sample {i}", 2) for i, x in enumerate(samples)]
    per_sample = None
    if bounds is not None:
        per_sample = [tuple(bounds)] * len(vs) if np.ndim(bounds) == 1 else [tuple(b) for b in bounds]
        if len(per_sample) != len(vs):
            raise ValueError(f"need one (low, high) per sample, got {len(per_sample)} for {len(vs)} samples")
    for i, v in enumerate(vs):
        _check_bounds(v, per_sample[i] if per_sample else None, f"sample {i}")
    terms = [w * w * v.var(ddof=1) / len(v) for w, v in zip(weights, vs, strict=True)]
    est = float(sum(w * v.mean() for w, v in zip(weights, vs, strict=True)))
    se = math.sqrt(sum(terms))
    clip = _difference_range(weights, per_sample) if per_sample else None
    n = sum(len(v) for v in vs)
    if se == 0:  # no spread in any sample: the contrast is what it is
        return _t_evidence(est, est, 0.0, math.nan, n, clip=clip)
    df = sum(terms) ** 2 / sum(t * t / (len(v) - 1) for t, v in zip(terms, vs, strict=True) if t > 0)
    return _t_evidence(est, est, se, float(df), n, clip=clip)


def seed_difference(values_a: ArrayLike, values_b: ArrayLike, *, paired: bool = False, confidence: float = 0.95,
                    bounds: tuple[float, float] | None = None) -> SeedComparison:  # fmt: skip
    """mean(a) - mean(b) across seeds: Welch t-interval, or a paired t-interval when the i-th value
    of a and of b share more than a seed number (``paired=True``: e.g. two nets built from the same
    weights and probed on the same inputs; two architectures trained with one seed share only the
    order of their data, which is no reason to pair them). ``bounds``: each value's feasible range;
    the interval is clipped to the difference's ([lo - hi, hi - lo])."""
    _check_confidence(confidence)
    a, b = _values(values_a, "values_a", 2), _values(values_b, "values_b", 2)
    _check_bounds(a, bounds, "values_a")
    _check_bounds(b, bounds, "values_b")
    clip = _difference_range((1, -1), [bounds, bounds]) if bounds is not None else None
    if paired:
        if len(a) != len(b):
            raise ValueError(f"paired=True needs one value per seed on each side, got {len(a)} and {len(b)}")
        d = a - b
        mean, se = float(d.mean()), float(d.std(ddof=1)) / math.sqrt(len(d))
        ev = _t_evidence(mean, mean, se, len(d) - 1, len(d), clip=clip)
    else:
        ev = welch_contrast([a, b], [1, -1], bounds=bounds)
    low, high = ev.interval(confidence)
    return SeedComparison(ev.estimate, low, high, confidence, ev)


# --- many claims: Holm ------------------------------------------------------------------------------------------------


def holm(p_values: ArrayLike) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values: with the k p-values sorted ascending, the i-th
    (from 1) is multiplied by k - i + 1, then made non-decreasing in that order (running maximum)
    and capped at 1. A claim is rejected at family-wise error rate alpha when its adjusted p-value
    is below alpha. NaN entries (claims without a test) stay NaN and do not count in k."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    k = len(order)
    out[order] = np.minimum(np.maximum.accumulate(p[order] * (k - np.arange(k))), 1.0)
    return out


def decision_p(evidence: Evidence, decided: Callable[[float, float], bool]) -> float:
    """The smallest 1 - confidence at which ``decided(low, high)`` holds for the evidence's interval:
    the p-value of the claim's test by the interval (1 when no level decides it; 0 when every level
    does, e.g. no spread). Found by bisection: intervals widen with the level."""
    lo_g, hi_g = 1e-15, 1 - 1e-6  # 1 - confidence
    if decided(*evidence.interval(1 - lo_g)):
        return 0.0
    if not decided(*evidence.interval(1 - hi_g)):
        return 1.0
    for _ in range(80):
        mid = (lo_g + hi_g) / 2
        if decided(*evidence.interval(1 - mid)):
            hi_g = mid
        else:
            lo_g = mid
    return hi_g


@dataclass(frozen=True)
class Adjusted:
    """One claim's interval at its Holm level."""

    low: float
    high: float
    confidence: float  # the level the interval is drawn at
    p: float  # the claim's p-value (``decision_p``)
    p_holm: float  # Holm-adjusted across the family


def holm_adjust(claims: Sequence[tuple[Evidence | None, Callable[[float, float], bool]]],
                alpha: float = ALPHA) -> list[Adjusted | None]:  # fmt: skip
    """Each claim's interval at its Holm level, for a family of claims given as (evidence, decided) pairs;
    ``decided(low, high)`` says whether an interval settles the claim (either way).

    The r-th smallest p-value's Holm step tests at alpha / (k - r + 1); drawing that claim's interval at confidence 1 -
    alpha * p / p_holm (that step's level, or a higher one where an earlier step failed and carried its larger adjusted
    p-value on) makes the interval decide the claim exactly when its Holm-adjusted p-value is below alpha. Claims
    without evidence (None) are not tested, do not count in k, and give None."""
    p = np.array([decision_p(ev, d) if ev is not None else np.nan for ev, d in claims], dtype=float)
    adj = holm(p)
    tested = np.flatnonzero(np.isfinite(p))
    rank = np.empty(len(p), dtype=int)
    rank[tested[np.argsort(p[tested], kind="stable")]] = np.arange(len(tested))
    out: list[Adjusted | None] = []
    for i, (ev, _) in enumerate(claims):
        if ev is None:
            out.append(None)
            continue
        gamma = alpha * p[i] / adj[i] if adj[i] > 0 else alpha / (len(tested) - rank[i])
        conf = min(1 - gamma, 1 - 1e-15)
        low, high = ev.interval(conf)
        out.append(Adjusted(low, high, conf, float(p[i]), float(adj[i])))
    return out


def sign_decided(low: float, high: float) -> bool:
    """A claim A > B (or A < B) is settled, either way, by an interval of A - B that excludes 0."""
    return bool(low > 0 or high < 0)


def tie_verdict(low: float, high: float, margin: float = TIE_MARGIN) -> str:
    """A claimed tie A ≈ B from an interval of A - B, against ±``margin``: confirmed when the whole
    interval lies inside it, refuted when the whole interval lies outside it (beyond +margin or below
    -margin), cannot tell otherwise (and for NaN bounds)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return CANNOT_TELL
    if low > high:
        raise ValueError(f"interval bounds out of order: [{low}, {high}]")
    if -margin <= low and high <= margin:
        return CONFIRMED
    if low > margin or high < -margin:
        return REFUTED
    return CANNOT_TELL


# --- verdicts ---------------------------------------------------------------------------------------------------------


def verdict(low: float, high: float, claimed_sign: int = 1) -> str:
    """Verdict on a claim about A - B from its interval: ``claimed_sign`` +1 claims A > B, -1 claims A < B;
    confirmed when the whole interval lies on the claimed side of 0, refuted when it lies wholly on the other,
    else cannot tell (and for NaN bounds). A claimed tie needs a margin: ``tie_verdict``."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return CANNOT_TELL
    if low > high:
        raise ValueError(f"interval bounds out of order: [{low}, {high}]")
    if low > 0:
        return CONFIRMED if claimed_sign > 0 else REFUTED
    if high < 0:
        return CONFIRMED if claimed_sign < 0 else REFUTED
    return CANNOT_TELL


def ranking_verdict(claimed_tiers: Sequence[Sequence[str]], pairwise: Mapping[tuple[str, str], Mapping[str, float]],
                    *, tie_margin: float = TIE_MARGIN) -> RankingVerdict:  # fmt: skip
    """Check a claimed ranking such as [["SE-ResNet"], ["ResNet", "DenseNet"]] (tiers in decreasing order, names
    in a tier claimed to tie) pair by pair. ``pairwise`` maps (A, B) to a comparison of A - B (a mapping with
    ``estimate``, ``low`` and ``high``, as ``verdicts.compare`` gives), or (B, A) to one of B - A.

    A strict pair must be confirmed (``verdict``); a tie is tested against ``tie_margin`` (``tie_verdict``:
    without a margin no interval can show two numbers equal). One refuted pair refutes the ranking."""
    tiers = [list(t) for t in claimed_tiers]
    names = [m for t in tiers for m in t]
    tier_of = {m: i for i, t in enumerate(tiers) for m in t}
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    missing = [f"{a} vs {b}" for a, b in pairs if (a, b) not in pairwise and (b, a) not in pairwise]
    if missing:
        raise ValueError(f"pairwise lacks a comparison for: {', '.join(missing)}")

    rows = []
    for a, b in pairs:
        flip = (a, b) not in pairwise
        est, low, high = (float(pairwise[(b, a) if flip else (a, b)][k]) for k in ("estimate", "low", "high"))
        if flip:
            est, low, high = -est, -high, -low
        tie = tier_of[a] == tier_of[b]
        pair_verdict = tie_verdict(low, high, tie_margin) if tie else verdict(low, high, +1)
        rows.append({"pair": f"{a} {_MINUS} {b}", "claimed": "≈" if tie else ">", "estimate": est, "low": low,
                     "high": high, "verdict": pair_verdict})  # fmt: skip
    table = pd.DataFrame(rows, columns=["pair", "claimed", "estimate", "low", "high", "verdict"])

    if (table["verdict"] == REFUTED).any():
        return RankingVerdict(REFUTED, table)
    return RankingVerdict(CONFIRMED if (table["verdict"] == CONFIRMED).all() else CANNOT_TELL, table)
