"""The study's claims as verdict frames: numbers with intervals, and a verdict from a fixed vocabulary.

Each function takes stored runs (or tables measured at initialisation) and returns a verdict frame: one row per claim,
columns ``id, claim, a, b, quantity, estimate, low, high, level, n, unit, method, verdict`` (see ``cnnlib.render``,
which alone turns them into text), then columns of its own (per-seed values, the nets at the floor). Nothing here writes
a sentence; the notebooks' text is written in ``cnnlib/templates`` over these numbers.

The rules, the same in every frame:

- The unit of replication is the trained network (or, at initialisation, the initialisation). Comparisons of two models
  use every seed both have: with two or more seeds each, a Welch t-interval across seeds, unpaired (two architectures
  trained with one seed share only the order of their data); with one seed, no interval (``method`` "none") and "cannot
  tell".
- Intervals stay in the feasible range (``cnnlib.stats``: logit / Fisher z for bounded values, clipping for their
  differences).
- One frame is one family of claims: its intervals are drawn at their Holm-adjusted levels (``level``;
  ``stats.holm_adjust``, family-wise error ``ALPHA`` = 5%).
- A comparison of accuracy losses in which one side sits near chance (within ``NEAR_CHANCE`` of ``CHANCE``) says "cannot
  tell (floor)": a net at chance has nothing left to lose.

These thresholds, like every number the study fixed before looking at its runs, live in ``cnnlib.constants``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from . import stats
from .analysis import auc, by_model, model_costs
from .constants import CHANCE, CHANCE_LOSS, EXPLOSION_FACTOR, FITS_TRAINING, GRADIENT_THRESHOLD, NEAR_CHANCE, TIE_MARGIN
from .results import Run

CONFIRMED, REFUTED, CANNOT_TELL = stats.CONFIRMED, stats.REFUTED, stats.CANNOT_TELL
NOT_IN_REGIME = "not testable in this regime"
CANNOT_TELL_FLOOR = "cannot tell (floor)"
CANNOT_TELL_ONE_NET = "cannot tell (one network per architecture)"
HE_EPOCHS = 164  # He et al. 2016's CIFAR-10 schedule (64k iterations at batch 128), the reference for "longer"
# the backward signal, read over a net's depth: "grows" (not "explodes": a run that blows up shows it in its loss,
# ``explosions``) names a tenfold rise towards the input in a net that may train well
VANISHES, GROWS, NEITHER = "vanishes", "grows", "neither"
UNIT = (0.0, 1.0)  # the feasible range of accuracies and error rates
LEFT_CHANCE = 2 * CHANCE  # a line from the initial weights has left chance where its accuracy first exceeds this


def final(run: Run, column: str) -> float:
    """The last epoch's value of a history column (NaN if the run did not record it)."""
    return float(run.history[column].iloc[-1]) if column in run.history else math.nan


def clean_train_error(run: Run) -> float:
    return 1 - final(run, "clean_train_acc")


def test_error(run: Run) -> float:
    return 1 - final(run, "test_acc")


def compare(a: dict[int, Run], b: dict[int, Run], metric: Callable[[Run], float], *,
            labels: np.ndarray | None = None, bounds: tuple[float, float] = UNIT) -> dict:  # fmt: skip
    """metric(a) - metric(b) with a 95% interval: a Welch t-interval across seeds (unpaired: different
    architectures share only the data order of a seed number) when each side has two or more, else the paired
    bootstrap over test images when the metric is test accuracy and ``labels`` are given (its verdicts hold for
    these trained networks only), else none. ``bounds``: the metric's feasible range. The dict carries the
    ``evidence`` to draw the interval at another level (None without one) and ``seeds`` (0: not recorded)."""
    va = {s: metric(r) for s, r in a.items() if np.isfinite(metric(r))}
    vb = {s: metric(r) for s, r in b.items() if np.isfinite(metric(r))}
    if not va or not vb:
        return dict(_cell(), seeds=0)
    if len(va) >= 2 and len(vb) >= 2:
        cmp = stats.seed_difference(list(va.values()), list(vb.values()), bounds=bounds)
        return dict(_cell(cmp.difference, cmp.evidence), seeds=min(len(va), len(vb)))
    seed = min(set(va) & set(vb), default=None)
    if metric is final_test_acc and labels is not None and seed is not None:
        cmp = stats.paired_difference(a[seed].predictions, b[seed].predictions, labels)
        return dict(_cell(cmp.difference, stats.bootstrap_evidence(cmp)), low=cmp.low, high=cmp.high, seeds=1)
    return dict(_cell(float(np.mean(list(va.values())) - np.mean(list(vb.values())))), seeds=1)


def _cell(estimate: float = math.nan, evidence: stats.Evidence | None = None) -> dict:
    """An estimate and its evidence as the interval dict ``_holm`` and ``_row`` read: the 95% interval, NaN
    bounds without evidence."""
    low, high = evidence.interval(0.95) if evidence is not None else (math.nan, math.nan)
    return dict(estimate=estimate, low=low, high=high, confidence=0.95, evidence=evidence)


def _holm(rows: Sequence[dict], decided: Sequence[Callable[[float, float], bool]]) -> None:
    """Draw each row's interval at its Holm level across ``rows`` (one table's claims); rows without
    ``evidence`` or marked ``untested`` (e.g. at the floor) keep theirs and do not count."""
    claims = [(None if r.get("untested") else r.get("evidence"), d) for r, d in zip(rows, decided, strict=True)]
    out = stats.holm_adjust(claims)
    for r, a in zip(rows, out, strict=True):
        if a is not None:
            r.update(low=a.low, high=a.high, confidence=a.confidence, p_holm=a.p_holm)


def _near_chance(accuracies: Iterable[float]) -> bool:
    v = [a for a in accuracies if np.isfinite(a)]
    return bool(v) and float(np.mean(v)) <= CHANCE + NEAR_CHANCE


def final_test_acc(run: Run) -> float:
    return final(run, "test_acc")


def _depth_contrast(m: dict[str, dict[int, Run]], names: Sequence[str]) -> dict:
    """(names[0] - names[1]) - (names[2] - names[3]) in clean training error, Welch across each net's seeds."""
    vals = [[v for v in (clean_train_error(r) for r in m[n].values()) if np.isfinite(v)] for n in names]
    if all(len(v) >= 2 for v in vals):
        ev = stats.welch_contrast(vals, [1, -1, -1, 1], bounds=UNIT)
        return _cell(ev.estimate, ev)
    if all(vals):
        return _cell(float(np.mean(vals[0]) - np.mean(vals[1]) - np.mean(vals[2]) + np.mean(vals[3])))
    return _cell()


def _row(cid: str, claim: str, a: str, b: str, quantity: str, c: Mapping, unit: str, method: str, n: int,
         verdict: str, **extra) -> dict:  # fmt: skip
    """One verdict-frame row from an interval dict ``c`` (estimate, low, high, confidence); ``extra``: the frame's
    own columns."""
    has = bool(np.isfinite(c.get("low", math.nan)) and np.isfinite(c.get("high", math.nan)))
    return dict(id=cid, claim=claim, a=a, b=b, quantity=quantity, estimate=float(c.get("estimate", math.nan)),
                low=float(c["low"]) if has else math.nan, high=float(c["high"]) if has else math.nan,
                level=float(c.get("confidence", 0.95)) if has else math.nan, n=int(n), unit=unit,
                method=method if has else "none", verdict=verdict, **extra)  # fmt: skip


def degradation(runs: Iterable[Run], tag: str = "") -> pd.DataFrame:
    """He et al.'s degradation test, in clean training error (eval mode, no augmentation), as a verdict frame.

    Rows ``degradation.plain`` (plain56 − plain20), ``degradation.residual`` (resnet56 − resnet20): depth's effect
    in each family; ``degradation.diff``: (plain56 − plain20) − (resnet56 − resnet20). Degradation that shortcuts
    remove shows as a confirmed first and third row. Welch intervals across seeds (unpaired), Holm-adjusted across
    the three rows. The third row compares losses of fit, so it says "cannot tell (floor)" when a net's clean
    training accuracy sits within ``NEAR_CHANCE`` of chance (column ``floor``: those nets); with one seed a side a
    row says "cannot tell (one network per architecture)". ``tag``: the recipe variant whose runs are compared (the
    ids end in "@<tag>", e.g. ``degradation.diff@lr0.4_wd0.0005``; the rows name the nets by model and the
    variant in the quantity: "clean training error at peak lr 0.4 and weight decay 0.0005")."""
    m = by_model(runs, tag=tag)
    need = p20, p56, r20, r56 = ("plain20", "plain56", "resnet20", "resnet56")
    if any(n not in m for n in need):
        return pd.DataFrame()
    plain = compare(m[p56], m[p20], clean_train_error)
    res = compare(m[r56], m[r20], clean_train_error)
    diff = _depth_contrast(m, (p56, p20, r56, r20))
    low_nets = tuple(n for n in need if _near_chance(final(r, "clean_train_acc") for r in m[n].values()))
    diff["untested"] = bool(low_nets)
    _holm([plain, res, diff], [stats.sign_decided] * 3)
    seeds = {n: len(m[n]) for n in need}
    n_plain, n_res, n_all = min(seeds[p56], seeds[p20]), min(seeds[r56], seeds[r20]), min(seeds.values())
    variant = next(iter(m[p56].values())).config.variant
    q, at = "clean training error" + (f" at {variant}" if tag else ""), f"@{tag}" if tag else ""

    def verdict(c: dict, n: int) -> str:  # one seed a side: no interval to decide with
        return stats.verdict(c["low"], c["high"], +1) if n >= 2 else CANNOT_TELL_ONE_NET

    rows = [  # the nets named by model; the quantity names the variant
        _row(f"degradation.plain{at}", "the deeper plain net fits its training data worse", "plain56", "plain20", q,
             plain, "points", "welch", n_plain, verdict(plain, n_plain), floor=()),
        _row(f"degradation.residual{at}", "the deeper residual net fits its training data worse", "resnet56",
             "resnet20", q, res, "points", "welch", n_res, verdict(res, n_res), floor=()),
        _row(f"degradation.diff{at}", "depth hurts the plain nets more than the residual nets", "(plain56 − plain20)",
             "(resnet56 − resnet20)", q, diff, "points", "welch contrast", n_all,
             CANNOT_TELL_FLOOR if low_nets else verdict(diff, n_all), floor=low_nets),
    ]  # fmt: skip
    return pd.DataFrame(rows)


def overfitting(runs: Iterable[Run], shallow: str = "plain20", deep: str = "plain56",
                fits: float = FITS_TRAINING) -> pd.DataFrame:  # fmt: skip
    """"Plain CNNs with many layers overfit" (``overfitting.plain``): overfitting means the deeper net fits its
    training data better and generalises worse, which can only show once the nets fit their training data: the
    claim is "not testable in this regime" unless the shallow net's mean clean training accuracy (column ``fit``)
    is at least ``fits`` (``FITS_TRAINING``, 90%). Then a deeper net that fits its training data *worse* refutes
    it (that is degradation), and it is confirmed when the deeper net's clean training error is lower and its test
    error higher (``test_*``: deep − shallow in test error). One claim, 95% intervals (confirming it needs both
    intervals, an intersection-union test, which needs no adjustment)."""
    m = by_model(runs)
    if shallow not in m or deep not in m:
        return pd.DataFrame()
    accs = [a for a in (final(r, "clean_train_acc") for r in m[shallow].values()) if np.isfinite(a)]
    fit = float(np.mean(accs)) if accs else math.nan
    train = compare(m[deep], m[shallow], clean_train_error)
    test = compare(m[deep], m[shallow], test_error)
    if not (np.isfinite(fit) and fit >= fits):
        v = NOT_IN_REGIME
    elif stats.verdict(train["low"], train["high"], +1) == CONFIRMED:
        v = REFUTED  # the deeper net fits its training data worse: degradation, not overfitting
    elif (stats.verdict(train["low"], train["high"], -1) == CONFIRMED
          and stats.verdict(test["low"], test["high"], +1) == CONFIRMED):  # fmt: skip
        v = CONFIRMED
    else:
        v = CANNOT_TELL
    row = _row("overfitting.plain", "plain CNNs with many layers overfit", deep, shallow, "clean training error",
               train, "points", "welch", min(len(m[deep]), len(m[shallow])), v, test_estimate=test["estimate"],
               test_low=test["low"], test_high=test["high"], fit=fit, fits=fits)  # fmt: skip
    return pd.DataFrame([row])


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
             family: str, step_times: pd.DataFrame | None = None) -> pd.DataFrame:
    """The original's three rankings on one family (``family``: "original" or "controlled"; ``names`` maps
    'SE-ResNet', 'DenseNet', 'ResNet' to model names), as a verdict frame with ids ``ranking.<family>.<n>``.

    Accuracy is the final test accuracy; convergence the mean test accuracy over the run (a model that plateaus
    early at a low level is not rewarded). Their pairwise intervals are one family, Holm-adjusted; a claimed tie
    is tested against ``TIE_MARGIN``. A row shows the pair that decides it (the first refuted, else the first
    undecided, else the first); list column ``pairs``: every pair. Training time: ``training_time``, from
    ``step_times``."""
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
                              n=size, unit="points", method=method, verdict=p.verdict))  # fmt: skip
        decisive = next((p for p in pairs if p["verdict"] == REFUTED), None) or next(
            (p for p in pairs if p["verdict"] != CONFIRMED), pairs[0])  # fmt: skip
        rows.append(dict(id=f"ranking.{family}.{n}", claim=f"{claim}: " + " > ".join(" ≈ ".join(t) for t in
                                                                                      RANKINGS[claim]),
                         a=decisive["a"], b=decisive["b"], quantity=_RANKED_BY[claim][0],
                         **{k: decisive[k] for k in ("estimate", "low", "high", "level", "n", "method")},
                         unit="points", verdict=rv.verdict, pairs=pairs, cost=None))  # fmt: skip
    rows.append(training_time(step_times, names, family))
    return pd.DataFrame(rows)


def step_seconds(step_times: pd.DataFrame) -> dict[str, np.ndarray]:
    """model -> the seconds of its timed training steps (``runs.step_times``) under the engine setting that trains
    it fastest there (the lowest median: what the engine's check would choose)."""
    medians = step_times.groupby(["model", "setting"])["seconds"].median()
    best = medians.groupby(level="model").idxmin()
    return {model: step_times.loc[(step_times["model"] == model) & (step_times["setting"] == setting), "seconds"]
            .to_numpy() for model, (_, setting) in best.items()}  # fmt: skip


def training_time(step_times: pd.DataFrame | None, names: dict[str, str], family: str) -> dict:
    """The original's training-time ranking on one family, from every model's training step timed in one run on
    one machine (``step_times``, ``runs.step_times``; None: not timed, "cannot tell"): each pair's ratio of
    seconds per step (geometric means), with a Welch t-interval on the log seconds over the timed steps, Holm-
    adjusted over the ranking's pairs. It holds for that machine, batch and engine. List column ``cost``: each
    model's multiply-adds per image (G), the machine-independent cost."""
    claim = "training time: " + " > ".join(" ≈ ".join(t) for t in RANKINGS["training time"])
    row = dict(id=f"ranking.{family}.3", claim=claim, a=names["DenseNet"], b=names["ResNet"],
               quantity="seconds per training step", estimate=math.nan, low=math.nan, high=math.nan, level=math.nan,
               n=0, unit="ratio", method="untimed", verdict=CANNOT_TELL, pairs=[],
               cost={v: model_costs(v)["macs"] / 1e9 for v in names.values()})  # fmt: skip
    seconds = step_seconds(step_times) if step_times is not None else {}
    if not all(v in seconds for v in names.values()):
        return row
    ranked = [names[x] for t in RANKINGS["training time"] for x in t]
    pairs = [dict(a=a, b=b, evidence=stats.welch_contrast([np.log(seconds[a]), np.log(seconds[b])], [1, -1]))
             for i, a in enumerate(ranked) for b in ranked[i + 1:]]  # fmt: skip
    _holm(pairs, [stats.sign_decided] * len(pairs))
    for p in pairs:
        ev = p.pop("evidence")
        p.update(claimed=">", estimate=math.exp(ev.estimate), level=p.pop("confidence"), n=len(seconds[p["a"]]),
                 unit="ratio", method="steps", verdict=stats.verdict(p["low"], p["high"], +1))
        p.pop("p_holm")
        p["low"], p["high"] = math.exp(p["low"]), math.exp(p["high"])
    decisive = next((p for p in pairs if p["verdict"] == REFUTED), None) or next(
        (p for p in pairs if p["verdict"] != CONFIRMED), pairs[0])  # fmt: skip
    verdict = (REFUTED if any(p["verdict"] == REFUTED for p in pairs) else
               CONFIRMED if all(p["verdict"] == CONFIRMED for p in pairs) else CANNOT_TELL)  # fmt: skip
    row.update({k: decisive[k] for k in ("a", "b", "estimate", "low", "high", "level", "n", "method")},
               verdict=verdict, pairs=pairs)
    return row


def shortcut_tie(runs: Iterable[Run], labels: np.ndarray | None, plain: str = "plainnet18",
                 residual: str = "resnet18") -> pd.DataFrame:  # fmt: skip
    """At 18 layers with BatchNorm, "the shortcuts do not change where training ends" (``controlled.shortcuts``;
    He et al. saw plain-18 and ResNet-18 end close on ImageNet): plain − residual in final test accuracy, a tie
    tested against ±``TIE_MARGIN`` (``compare``: across seeds, or with one seed the paired bootstrap over the test
    images, whose verdict holds for these trained networks only)."""
    m = by_model(runs)
    if plain not in m or residual not in m:
        return pd.DataFrame()
    c = compare(m[plain], m[residual], final_test_acc, labels=labels)
    boot = c["seeds"] == 1 and labels is not None
    row = _row("controlled.shortcuts", "the shortcuts do not change where an 18-layer net's training ends", plain,
               residual, "final test accuracy", c, "points", "paired bootstrap" if boot else "welch",
               len(labels) if boot else c["seeds"], stats.tie_verdict(c["low"], c["high"], TIE_MARGIN),
               margin=TIE_MARGIN)  # fmt: skip
    return pd.DataFrame([row])


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


def _signal_frame(groups: Sequence[tuple[str, str, str, pd.DataFrame]], method: str) -> pd.DataFrame:
    """Verdict rows on log10 first/last of the backward signal: ``groups`` of (id, model, point, per-replicate
    rows with columns 'log10', 'blocks'), a t-interval across the replicates (seeds or initialisations),
    Holm-adjusted across the rows."""
    cells = [_cell(float(g["log10"].mean()), stats.seed_evidence(g["log10"])) for *_, g in groups]
    _holm(cells, [lambda low, high: gradient_outcome(low, high) != CANNOT_TELL] * len(cells))
    rows = []
    for (cid, model, point, g), c in zip(groups, cells, strict=True):
        blocks = int(g["blocks"].iloc[0])
        rows.append(_row(cid, "the backward signal vanishes towards the input", model, "",
                         f"log10 of the backward signal, first block / last block, {point}", c, "log10", method, len(g),
                         gradient_outcome(c["low"], c["high"]), point=point, per_seed=[float(x) for x in g["log10"]],
                         per_block=10 ** (c["estimate"] / (blocks - 1)), blocks=blocks))
    return pd.DataFrame(rows)


def _id(name: str) -> str:
    """A run label as a claim id's part: 'plain56 (lr0.1x)' -> 'plain56-lr0.1x'."""
    return name.replace(" (", "-").replace(")", "").replace(" ", "")


def vanishing_gradients(runs: Iterable[Run], plain: str = "plain56", residual: str = "resnet56",
                        *others: str) -> pd.DataFrame:  # fmt: skip
    """"Skip connections avoid vanishing gradients", from the backward signal itself: at each probe point, log10 of
    the per-image gradient norm dL/dh at the first block's output over that at the last block before the head,
    a t-interval across seeds, Holm-adjusted across the rows, read by ``gradient_outcome``. Ids
    ``gradients.<model>.<point>`` (``step0`` at initialisation, ``last`` at the last probe point, else the point's
    label without its space, ``epoch10``). Columns of its own: ``point``, ``step``, ``per_seed``, ``per_block``
    (the growth per block towards the input that the mean amounts to), ``blocks``. ``others``: more labels."""
    m = by_model(runs)
    rows = []
    for model in (plain, residual, *others):
        for seed, r in sorted(m.get(model, {}).items()):
            b = r.table("blocks")
            if b.empty:
                continue
            for point, g in b.groupby("point", sort=False):
                body = g.sort_values("index")
                body = body[~body["block"].isin(["stem", "head"])]
                if len(body) >= 2:
                    rows.append({"model": model, "seed": seed, "point": point, "step": int(g["step"].iloc[0]),
                                 "log10": float(np.log10(body["per_image"].iloc[0] / body["per_image"].iloc[-1])),
                                 "blocks": len(body)})  # fmt: skip
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    last = df["step"].max()
    groups = []
    for (model, point), g in df.groupby(["model", "point"], sort=False):
        step = int(g["step"].iloc[0])
        name = "step0" if step == 0 else "last" if step == last else point.replace(" ", "")
        groups.append((f"gradients.{_id(model)}.{name}", model, point, g))
    out = _signal_frame(groups, "t")
    out.insert(len(out.columns) - 1, "step", [int(g["step"].iloc[0]) for *_, g in groups])
    return out.sort_values(["step", "a"], kind="stable").reset_index(drop=True)


def signal_at_init(ratios: pd.DataFrame) -> pd.DataFrame:
    """The backward signal at initialisation (``at_init.signal_ratios``: one row per model, BatchNorm setting and
    initialisation), as ``vanishing_gradients`` reads it during training: ids ``init.<model>.bn`` and
    ``init.<model>.nobn``, a t-interval across the initialisations, Holm-adjusted across the rows."""
    groups = [(f"init.{model}.{'bn' if bn == 'with BN' else 'nobn'}", model, bn,
               g.rename(columns={"log10_first_last": "log10"}))
              for (model, bn), g in ratios.groupby(["model", "batchnorm"], sort=False)]  # fmt: skip
    return _signal_frame(groups, "t inits")


# --- notebook 07: why skip connections work -------------------------------------------------------------------------


def lesions(runs: Iterable[Run]) -> pd.DataFrame:
    """Veit et al.'s lesion study, per net (seed 0): intact accuracy, the mean accuracy after deleting one deletable
    block, the worst single deletion, the mean after deleting 5 random blocks, and how many random draws each k has
    (``lesion_verdicts`` puts the interval on them). Accuracies as fractions."""
    rows = []
    for r in runs:
        single, rand = r.table("lesion_single"), r.table("lesion_random")
        if single.empty:
            continue
        five = rand[rand["k"] == 5]["accuracy"] if not rand.empty else pd.Series(dtype=float)
        rows.append({"model": r.config.model, "intact": float(single["intact"].iloc[0]),
                     "deletable blocks": int(single["accuracy"].notna().sum()), "blocks": len(single),
                     "one deleted, mean": float(single["accuracy"].mean()),
                     "one deleted, worst": float(single["accuracy"].min()),
                     "five at random, mean": float(five.mean()) if len(five) else math.nan,
                     "draws per k": int((rand["k"] == 1).sum()) if not rand.empty else 0})  # fmt: skip
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
    """"Residual nets degrade smoothly, plain nets collapse" (Veit et al.), one row per (residual, plain) pair and
    k, id ``lesions.<plain>-<residual>.k<k>``: the accuracy lost by deleting k random blocks, plain minus residual.

    The unit of replication is the trained network (its mean loss over the random draws): with two or more per
    architecture, a Welch interval across networks (``method`` "welch"). With one, the draws are the only spread,
    variation within one network: "cannot tell (one network per architecture)", ``method`` "draws", and
    ``within`` says what that interval says about these two networks. A net at the floor (within ``NEAR_CHANCE``
    of chance) intact, or both after the deletions, have nothing left to lose: "cannot tell (floor)"; one net
    there alone biases the difference one way only (see below; ``stands_despite``: that net). Holm-adjusted
    across the tested rows. Columns of its own: ``k``, ``*_left`` and ``*_intact`` (mean accuracy after the
    deletions and intact, per side), ``floor``, ``stands_despite``, ``within``, ``n_plain``, ``n_residual``."""
    m = by_model(runs)
    rows = []
    for residual, plain in pairs:
        for k in ks:
            cr, cp = _lesion_curves(m.get(residual, {}), k), _lesion_curves(m.get(plain, {}), k)
            if not cr or not cp:
                continue
            means = {n: {key: float(np.mean([v[key] for v in c.values()])) for key in ("left", "intact")}
                     for n, c in ((plain, cp), (residual, cr))}  # fmt: skip
            low = tuple(n for n, v in means.items() if _near_chance([v["left"]]) or _near_chance([v["intact"]]))
            untrained = any(_near_chance([means[n]["intact"]]) for n in low)
            # A net left at chance lost all it could: its loss understates what the deletions did to it. With only
            # the plain net there, the measured difference can only be too small, so an interval above 0 still
            # confirms the claim (Veit et al.'s collapse) and nothing can refute it; with only the residual net
            # there, the other way round. Both there, or a net at chance intact, and the losses do not compare.
            one_sided = {plain: +1, residual: -1}[low[0]] if len(low) == 1 and not untrained else 0
            row = {"residual": residual, "plain": plain, "k": k, "means": means, "floor": low,
                   "one_sided": one_sided, "untested": bool(low) and not one_sided, "nets": (len(cp), len(cr))}
            if min(len(cp), len(cr)) >= 2:
                per_net = [[v["loss"].mean() for v in c.values()] for c in (cp, cr)]
                ev = stats.welch_contrast(per_net, [1, -1], bounds=[_loss_range(cp.values()), _loss_range(cr.values())])
                row.update(method="welch", n=min(len(cp), len(cr)))
            else:
                common = sorted(set(cp) & set(cr))
                sp, sr = (common[0], common[0]) if common else (next(iter(cp)), next(iter(cr)))
                ev = stats.welch_contrast([cp[sp]["loss"], cr[sr]["loss"]], [1, -1],
                                          bounds=[_loss_range([cp[sp]]), _loss_range([cr[sr]])])  # fmt: skip
                row.update(method="draws", n=min(len(cp[sp]["loss"]), len(cr[sr]["loss"])), one_net=True)
            rows.append(row | _cell(ev.estimate, ev))
    _holm(rows, [stats.sign_decided] * len(rows))
    out = []
    for r in rows:
        within = stats.verdict(r["low"], r["high"], +1)
        stands_despite = ""
        if r["one_sided"]:
            stands = {+1: CONFIRMED, -1: REFUTED}[r["one_sided"]]  # the only conclusion the floor cannot have made
            stands_despite = r["floor"][0] if within == stands else ""
            within = within if within == stands else CANNOT_TELL_FLOOR
        if r["floor"] and not stands_despite:
            v, within = CANNOT_TELL_FLOOR, ""
        elif r.get("one_net"):
            v = CANNOT_TELL_ONE_NET
        else:
            v, within = within, ""
        p, res = r["means"][r["plain"]], r["means"][r["residual"]]
        out.append(_row(f"lesions.{r['plain']}-{r['residual']}.k{r['k']}", f"deleting random blocks (k = {r['k']}) "
                        "costs the plain net more accuracy than the residual net", r["plain"], r["residual"],
                        f"accuracy lost to random deletion (k = {r['k']})", r, "points", r["method"], r["n"], v,
                        k=r["k"], plain_left=p["left"], plain_intact=p["intact"], residual_left=res["left"],
                        residual_intact=res["intact"], floor=r["floor"], stands_despite=stands_despite, within=within,
                        n_plain=r["nets"][0], n_residual=r["nets"][1]))  # fmt: skip
    return pd.DataFrame(out)


def _fisher_z(r: np.ndarray) -> np.ndarray:
    """Fisher's z = artanh(r) of correlations; |r| = 1 (a trace that is a straight line) is kept finite, at the
    z of the largest double below 1."""
    return np.arctanh(np.clip(r, -np.nextafter(1.0, 0), np.nextafter(1.0, 0)))


def shattering(tables: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Balduzzi et al.: the lag-1 autocorrelation of the input-gradient trace at initialisation, per depth, residual
    against plain (ids ``shattering.d<depth>``).

    Paired (each initialisation builds both nets from the same weights and probes them on the same inputs) and on
    Fisher's z: a paired t-interval of z(residual) − z(plain) over the initialisations (one table each),
    Holm-adjusted across the depths. A t-interval of a difference of correlations can leave [-1, 1]; z is
    unbounded, and a difference of z has the sign of the difference of correlations, all the claim is about.
    Columns of its own: ``depth``; ``plain_r``, ``residual_r`` with 95% intervals ``*_low``, ``*_high``;
    ``r_difference`` (descriptive); ``residual_higher`` (in how many initialisations)."""
    df = pd.concat(list(tables), ignore_index=True)
    cells, extra = [], []
    for depth, g in df.groupby("depth"):
        p = g[g["net"] == "plain"]["lag1_autocorrelation"].to_numpy()
        r = g[g["net"] == "residual"]["lag1_autocorrelation"].to_numpy()
        ip, ir = stats.seed_interval(p, bounds=(-1, 1)), stats.seed_interval(r, bounds=(-1, 1))
        paired = len(p) >= 2 and len(p) == len(r)
        cmp = stats.seed_difference(_fisher_z(r), _fisher_z(p), paired=True) if paired else None
        cells.append(_cell(cmp.difference, cmp.evidence) if cmp else _cell())
        extra.append(dict(depth=int(depth), n=len(p), plain_r=ip.estimate, plain_low=ip.low, plain_high=ip.high,
                          residual_r=ir.estimate, residual_low=ir.low, residual_high=ir.high,
                          r_difference=float(np.mean(r) - np.mean(p)),
                          residual_higher=int((r > p).sum()) if paired else -1))  # fmt: skip
    _holm(cells, [stats.sign_decided] * len(cells))
    rows = []
    for c, e in zip(cells, extra, strict=True):
        n = e.pop("n")
        rows.append(_row(f"shattering.d{e['depth']}", "the residual net's input gradient is more correlated",
                         f"resnet{e['depth']}", f"plain{e['depth']}", "Fisher z of the lag-1 autocorrelation", c, "z",
                         "fisher z", n, stats.verdict(c["low"], c["high"], +1), **e))  # fmt: skip
    return pd.DataFrame(rows)


def depth_sweep(runs: Iterable[Run]) -> pd.DataFrame:
    """He et al. Fig. 6 as a table: final clean training error and test error by depth and family, mean and 95%
    t-interval over the seeds that exist (on the logit scale, so it stays in [0, 1]); descriptive, no verdicts."""
    from .models import info

    rows = []
    for seeds in by_model(runs).values():
        net = info(next(iter(seeds.values())).config.model)
        for col, fn in (("clean training error", clean_train_error), ("test error", test_error)):
            vals = [v for v in (fn(r) for r in seeds.values()) if np.isfinite(v)]
            if vals:
                iv = stats.seed_interval(vals, bounds=UNIT)
                rows.append({"family": net.connections, "depth": net.depth, "metric": col, "seeds": len(vals),
                             "mean": iv.estimate, "low": iv.low, "high": iv.high})  # fmt: skip
    return pd.DataFrame(rows).sort_values(["metric", "family", "depth"]).reset_index(drop=True)


def path_shares(paths: pd.DataFrame, n_blocks: int) -> pd.DataFrame:
    """Veit et al.'s share of the gradient carried by the paths of each measured length: the gradient through one
    path of that length (``paths``: a run's ``path_gradients`` table) times the number of such paths, C(n, k),
    normalised over the lengths measured."""
    lengths = np.arange(n_blocks + 1)
    count = pd.DataFrame({"length": lengths, "paths": [math.comb(n_blocks, int(k)) for k in lengths]})
    share = paths.merge(count, on="length").sort_values("length").reset_index(drop=True)
    weight = share["grad_norm"] * share["paths"]
    share["gradient share"] = weight / weight.sum()
    share["cumulative share"] = share["gradient share"].cumsum()
    return share


def short_lengths(n_blocks: int) -> int:
    """The longest path length shorter than the typical one (Binomial(n, 1/2)'s mode): 12 for 27 blocks, 9 for 20."""
    return n_blocks // 2 - 1


def path_readings(tables: Mapping[int, pd.DataFrame], n_blocks: int) -> pd.DataFrame:
    """``path_shares`` of each trained network (``tables``: seed -> its ``path_gradients`` table), one row per
    seed: where its gradient share peaks, the share carried by the paths up to the peak, and the share carried by
    the paths shorter than the typical one (length <= ``short_lengths(n_blocks)``), over the lengths measured."""
    short = short_lengths(n_blocks)
    rows = []
    for seed, paths in sorted(tables.items()):
        share = path_shares(paths, n_blocks)
        cum = share.set_index("length")["cumulative share"]
        peak = int(share.loc[share["gradient share"].idxmax(), "length"])
        rows.append({"seed": seed, "peak length": peak, "share up to the peak": float(cum.loc[peak]),
                     "share shorter than typical": float(cum[cum.index <= short].iloc[-1])})
    return pd.DataFrame(rows, columns=["seed", "peak length", "share up to the peak", "share shorter than typical"])


def path_verdict(readings: pd.DataFrame, n_blocks: int, model: str = "resnet56") -> pd.DataFrame:
    """Veit et al.'s claim (``paths.short``), that training's gradient flows mostly through paths shorter than the
    typical one, from ``path_readings``: the share of the gradient on those paths (unit "share"), mean across the
    trained networks with a 95% t-interval on the logit scale (it stays in [0, 1]), against one half: confirmed
    when the interval lies above 1/2, refuted when below; one network gives no interval ("cannot tell (one network
    per architecture)"). Columns of its own: ``short`` (the longest such length), ``n_blocks``, ``paths_short``
    (the fraction of all 2^n paths that are that short), ``per_seed``, ``peaks`` (each network's peak length)."""
    values = readings["share shorter than typical"].to_numpy()
    iv = stats.seed_interval(values, bounds=(0, 1))
    c = dict(estimate=iv.estimate, low=iv.low, high=iv.high, confidence=0.95)
    v = CANNOT_TELL_ONE_NET if len(values) < 2 else stats.verdict(iv.low - 0.5, iv.high - 0.5, +1)
    short = short_lengths(n_blocks)
    row = _row("paths.short", "training's gradient flows mostly through paths shorter than the typical one", model,
               "", "share of the gradient on paths shorter than the typical one", c, "share", "t", len(values), v,
               short=short, n_blocks=n_blocks,
               paths_short=sum(math.comb(n_blocks, k) for k in range(short + 1)) / 2**n_blocks,
               per_seed=[float(x) for x in values], peaks=[int(x) for x in readings["peak length"]])
    return pd.DataFrame([row])


def landscape_readings(one_d: pd.DataFrame) -> pd.DataFrame:
    """Per trained network of the 1-D landscape slices (``one_d``: the runs' ``surface_1d`` tables with columns
    ``model`` and ``seed`` added), the training loss at the trained weights θ, its mean at α = ±0.5 and at
    α = ±1, the rise from θ to α = ±1 and the local minima on the slice. Index (model, seed)."""

    def shape(g: pd.DataFrame) -> pd.Series:
        g = g.sort_values("alpha")
        loss, alpha = g["loss"].to_numpy(), g["alpha"].to_numpy()
        centre = float(np.interp(0.0, alpha, loss))
        far = float(np.interp([-1, 1], alpha, loss).mean())
        return pd.Series({"loss at θ": centre, "loss at α = ±0.5 (mean)": float(np.interp([-0.5, 0.5], alpha,
                                                                                            loss).mean()),
                          "loss at α = ±1 (mean)": far, "rise to α = ±1": far - centre,
                          "local minima on the slice": int(((loss[1:-1] < loss[:-2]) & (loss[1:-1] < loss[2:])).sum())})
    out = one_d.groupby(["model", "seed"])[["alpha", "loss"]].apply(shape)
    return out.astype({"local minima on the slice": int})


def line_readings(runs: Iterable[Run]) -> pd.DataFrame:
    """Per trained network whose line from the initial to the trained weights (its ``interpolation`` table) was
    measured with BatchNorm statistics recomputed at each point (column ``bn``; older tables interpolated the
    statistics too and are left out): the training loss at both ends, the trained end's accuracy, and the line's
    barrier (the largest rise of the loss above its lowest value at any earlier point: 0 where it only falls, as
    Goodfellow et al. found) with the number of steps along the line on which the loss rises, and where the loss
    has first covered half its fall ("halfway t": the first point at or below the mean of its two ends; 0.5 on a
    line that falls evenly, later where the loss stays near its start for long; NaN where it does not fall), and
    where its accuracy first exceeds twice chance ("leaves chance at t", ``LEFT_CHANCE``; NaN where it never does):
    the nets start at different losses (the residual nets' untrained loss is the higher), but all at chance accuracy.
    ``depth``: the net's layers. Index (model, seed), the model as its label (``plain56 (lr0.4_wd0.0005)``)."""
    from .models import info

    def shape(t: pd.DataFrame) -> dict:
        t = t.sort_values("t")
        loss, ts, acc = t["loss"].to_numpy(), t["t"].to_numpy(), t["accuracy"].to_numpy()
        return {"loss at the initial weights": float(loss[0]), "loss at the trained weights": float(loss[-1]),
                "accuracy at the trained weights": float(t["accuracy"].iloc[-1]),
                "barrier": float(max(0.0, (loss[1:] - np.minimum.accumulate(loss)[:-1]).max())),
                "rising steps": int((np.diff(loss) > 0).sum()),
                "halfway t": float(ts[np.argmax(loss <= (loss[0] + loss[-1]) / 2)])
                if loss[-1] < loss[0] else math.nan,  # no fall to cover
                "leaves chance at t": float(ts[np.argmax(acc > LEFT_CHANCE)]) if (acc > LEFT_CHANCE).any()
                else math.nan,
                "points": len(loss)}  # fmt: skip

    rows = [{"model": r.config.label, "seed": r.config.seed, "depth": info(r.config.model).depth, **shape(t)}
            for r in runs if "bn" in (t := r.table("interpolation"))]  # fmt: skip
    columns = ["model", "seed", "depth", "loss at the initial weights", "loss at the trained weights",
               "accuracy at the trained weights", "barrier", "rising steps", "halfway t", "leaves chance at t",
               "points"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns).set_index(["model", "seed"])


def line_sides(readings: pd.DataFrame, runs: Iterable[Run]) -> dict[str, pd.DataFrame]:
    """``line_readings`` of ``runs`` split by their nets' connections, each side from the shallowest net to the
    deepest: {"plain": ..., "residual": ...}, what the text on the lines (``templates/07_line.md``) reads."""
    from .models import info

    kind = readings.index.get_level_values("model").map({r.config.label: info(r.config.model).connections
                                                          for r in runs})  # fmt: skip
    return {side: readings[kind == side].sort_values("depth", kind="stable") for side in ("plain", "residual")}


def landscape_verdicts(readings: pd.DataFrame, residual: str = "resnet56", plain: str = "plain56") -> pd.DataFrame:
    """Two claims from ``landscape_readings``, residual − plain across the trained networks (Welch t, each network
    one replicate), Holm-adjusted across the two: ``landscape.loss``, the residual net ends at a lower training
    loss; ``landscape.rise``, its loss rises less from θ to α = ±1 along a random filter-normalised direction (a
    flatter slice: Li et al.'s smoother landscape, read on one slice per network). One network per architecture:
    no interval, "cannot tell (one network per architecture)". Unit "loss" (nats of cross-entropy)."""
    a, b = readings.loc[residual], readings.loc[plain]
    claims = (("landscape.loss", "loss at θ", "the residual net ends at a lower training loss", "training loss at θ"),
              ("landscape.rise", "rise to α = ±1", "the residual net's loss surface is flatter (Li et al.)",
               "rise of the training loss from θ to α = ±1"))  # fmt: skip
    cells = []
    for _, col, _, _ in claims:
        cmp = stats.seed_difference(a[col], b[col]) if len(a) >= 2 and len(b) >= 2 else None
        cells.append(_cell(float(a[col].mean() - b[col].mean()), cmp.evidence if cmp else None))
    _holm(cells, [stats.sign_decided] * len(cells))
    one = len(a) < 2 or len(b) < 2
    return pd.DataFrame([_row(cid, claim, residual, plain, quantity, c, "loss", "welch", min(len(a), len(b)),
                              CANNOT_TELL_ONE_NET if one else stats.verdict(c["low"], c["high"], -1))
                         for (cid, _, claim, quantity), c in zip(claims, cells, strict=True)])  # fmt: skip


def explosions(runs: Iterable[Run], factor: float = EXPLOSION_FACTOR, column: str = "test_loss") -> pd.DataFrame:
    """The runs whose eval-mode test loss after epoch 1 exceeds ``factor`` x ln 10 (``CHANCE_LOSS``, the loss of a
    uniform guess over the 10 classes): their first epoch blew up. One row per such run: run id, model label,
    seed, the loss after epoch 1, after epoch 2 and at the end. ``attrs``: ``threshold``, ``factor`` and
    ``checked`` (how many runs record ``column``)."""
    threshold = factor * CHANCE_LOSS
    rows, checked = [], 0
    for r in runs:
        h = r.history
        if column not in h or h.empty:
            continue
        checked += 1
        if float(h[column].iloc[0]) > threshold:
            rows.append({"run": r.config.run_id, "model": r.config.label, "seed": r.config.seed,
                         "epoch 1": float(h[column].iloc[0]),
                         "epoch 2": float(h[column].iloc[1]) if len(h) > 1 else math.nan,
                         "final": float(h[column].iloc[-1])})  # fmt: skip
    table = pd.DataFrame(rows, columns=["run", "model", "seed", "epoch 1", "epoch 2", "final"])
    table.attrs.update(threshold=threshold, factor=factor, checked=checked)
    return table


def controlled_training(runs: Iterable[Run], epoch: int = 3, reference: str = "resnet18") -> pd.DataFrame:
    """What the controlled family's connections change in how fast a net fits its (augmented) training batches, against
    ``reference``: the running training accuracy after ``epoch`` epochs (``controlled.early.<model>``) and at the end of
    the schedule (``controlled.end.<model>``), as a − reference. Welch intervals across seeds, Holm-adjusted across the
    rows, once each net has two or more seeds; with one seed each the difference has no interval and the verdict is
    "cannot tell (one network per architecture)": one run per net cannot tell an architecture's pace from a seed's."""
    m = by_model(runs)
    if reference not in m:
        return pd.DataFrame()

    def after(r: Run) -> float:
        return float(r.history["train_acc"].iloc[epoch - 1]) if len(r.history) >= epoch else math.nan

    cells = [(name, when, compare(m[name], m[reference], metric))
             for name in m if name != reference
             for when, metric in (("early", after), ("end", lambda r: final(r, "train_acc")))]  # fmt: skip
    _holm([c for *_, c in cells], [stats.sign_decided] * len(cells))
    rows = []
    for name, when, c in cells:
        seeds = min(len(m[name]), len(m[reference]))
        quantity = (f"running training accuracy after epoch {epoch}" if when == "early"
                    else "final running training accuracy")  # fmt: skip
        claim = (f"{name} fits its training batches faster than {reference}" if when == "early"
                 else f"{name} ends fitting more of its training batches than {reference}")  # fmt: skip
        v = stats.verdict(c["low"], c["high"], +1) if seeds >= 2 else CANNOT_TELL_ONE_NET
        rows.append(_row(f"controlled.{when}.{name}", claim, name, reference, quantity, c, "points", "welch", seeds,
                         v))  # fmt: skip
    return pd.DataFrame(rows)
