"""What notebooks 06 and 07 conclude, computed from the tables they show.

Notebook 06 (degradation, overfitting, gradient flow) and notebook 07 (lesions, path lengths,
loss landscapes, shattered gradients, the depth sweep) end with a table of claims, each with the
verdict of the table that tested it and a short piece of evidence (the number and its interval),
followed by a few sentences that summarise it. The functions here build that Markdown from the
DataFrames of ``cnnlib.verdicts`` (and the path-length shares), so the closing cells say what the
stored runs say, for whatever profile is shown; nothing in the prose is fixed in advance.

They also name the runs that blew up in their first epoch (``epoch1_explosions``): an eval-mode
test loss far above the loss of a uniform guess over the 10 classes (ln 10) after epoch 1, so
that the conclusions resting on those runs carry that caveat, and they read the depth sweep
against He et al. (``depth_trend``, ``depth_reading``).

Verdict words are those of ``cnnlib.verdicts`` ("confirmed", "refuted", "cannot tell ...");
nothing here turns a "cannot tell" into a finding.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from . import mechanisms, stats, verdicts
from .analysis import label, profile_groups
from .constants import CHANCE, CHANCE_LOSS, EXPLOSION_FACTOR, GRADIENT_THRESHOLD, NEAR_CHANCE
from .results import Run

HE_ET_AL = {"plain": "rises", "residual": "falls"}  # clean training error with depth, He et al. 2016, Fig. 6
_GERUND = {"rises": "rising", "falls": "falling"}
DAGGER = "†"


# --- small helpers ----------------------------------------------------------------------------------------------


def seed_list(seeds: Iterable[int]) -> str:
    """'seed 0' or 'seeds 0, 1, 2'."""
    s = sorted(set(seeds))
    return f"seed{'s' if len(s) > 1 else ''} {', '.join(map(str, s))}"


def seeds_phrase(runs: Iterable[Run]) -> str:
    """The seeds of ``runs`` exactly: 'seeds 0, 1, 2' when every model (label) has the same seeds, else
    per group of models, e.g. 'seeds 0, 1, 2 of plain20, resnet20; seed 0 of plain32, resnet32'."""
    by: dict[str, set[int]] = {}
    for r in runs:
        by.setdefault(label(r), set()).add(r.config.seed)
    groups: dict[tuple[int, ...], list[str]] = {}
    for name, seeds in by.items():
        groups.setdefault(tuple(sorted(seeds)), []).append(name)
    if len(groups) <= 1:
        return seed_list(next(iter(groups), ()))
    return "; ".join(f"{seed_list(s)} of {', '.join(names)}" for s, names in groups.items())


def figure_note(runs: Iterable[Run], seeds: bool = True) -> str:
    """For a figure's caption: profile, images and epochs of ``runs`` (and their seeds, exactly, with ``seeds``),
    e.g. "profile 'cpu' (3,000 training / 1,000 test images, 12 epochs), seeds 0, 1, 2"."""
    runs = list(runs)
    parts = []
    for profile, sizes, group in profile_groups(runs):
        epochs = sorted({len(r.history) for r in group})
        ep = f"{epochs[0]}" if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}"
        parts.append(f"profile '{profile}' ({sizes}, {ep} epoch{'s' if epochs != [1] else ''})")
    return "; ".join(parts) + (f", {seeds_phrase(runs)}" if seeds and runs else "")


def _mentions(text: str, name: str) -> bool:
    """Whether ``text`` names the model label ``name`` ('plain56' is not named by 'plain56 (lr0.1x)')."""
    if " (" in name:
        return name in text
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])(?! \()", text) is not None


def _level(interval_from: str) -> str:
    """'98.33% level' out of a verdict table's 'interval from' cell ('' if it has none)."""
    m = re.search(r"(\d+(?:\.\d+)?% level)", str(interval_from))
    return m.group(1) if m else ""


def _method(interval_from: str) -> str:
    """The method part of an 'interval from' cell, without its level."""
    return str(interval_from).split("; ")[0]


def _table(rows: Sequence[dict]) -> str:
    df = pd.DataFrame(rows, columns=["claim", "verdict", "evidence"])
    return verdicts.markdown(df, note=False)


def _sentence(text: str) -> str:
    text = text.strip()
    return (text[0].upper() + text[1:]) if text else text


def _counts(words: Iterable[str]) -> str:
    """'3 cannot tell (floor) and 1 confirmed', in order of first appearance."""
    c = Counter(words)
    parts = [f"{n} {w}" for w, n in c.items()]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


# --- runs that blew up in their first epoch -------------------------------------------------------------------


def epoch1_explosions(runs: Iterable[Run], factor: float = EXPLOSION_FACTOR, column: str = "test_loss") -> pd.DataFrame:
    """The runs whose eval-mode test loss after epoch 1 exceeds ``factor`` x ln 10 (``CHANCE_LOSS``, the loss of
    a uniform guess over the 10 classes): their first epoch blew up. One row per such run (in the order given):
    run id, model label, seed, the loss after epoch 1 and its multiple of ln 10, after epoch 2 and at the end.
    ``attrs``: the threshold, the factor and how many runs were checked (those that record ``column``)."""
    threshold = factor * CHANCE_LOSS
    rows, checked = [], 0
    for r in runs:
        h = r.history
        if column not in h or h.empty:
            continue
        checked += 1
        first = float(h[column].iloc[0])
        if first > threshold:
            rows.append({"run": r.config.run_id, "model": label(r), "seed": r.config.seed,
                         "epoch-1 test loss": first, "× ln 10": first / CHANCE_LOSS,
                         "epoch-2 test loss": float(h[column].iloc[1]) if len(h) > 1 else math.nan,
                         "final test loss": float(h[column].iloc[-1])})  # fmt: skip
    table = pd.DataFrame(rows, columns=["run", "model", "seed", "epoch-1 test loss", "× ln 10", "epoch-2 test loss",
                                        "final test loss"])  # fmt: skip
    order = {m: i for i, m in enumerate(dict.fromkeys(table["model"]))}
    table = table.sort_values(["model", "seed"], key=lambda c: c.map(order) if c.name == "model" else c,
                              kind="stable").reset_index(drop=True)
    table.attrs.update(threshold=threshold, factor=factor, checked=checked)
    return table


def _threshold_text(table: pd.DataFrame) -> str:
    f = table.attrs.get("factor", EXPLOSION_FACTOR)
    return f"{table.attrs.get('threshold', f * CHANCE_LOSS):.1f} ({f:g} × ln 10, ln 10 = {CHANCE_LOSS:.2f} being " \
           "the loss of a uniform guess over the 10 classes)"


def exploded_models(table: pd.DataFrame) -> str:
    """'plain56 seeds 0, 1, 2; resnet56 seeds 0, 2' from an ``epoch1_explosions`` table."""
    return "; ".join(f"{m} {seed_list(g['seed'])}" for m, g in table.groupby("model", sort=False))


def explosions_markdown(table: pd.DataFrame) -> str:
    """A sentence naming the runs of an ``epoch1_explosions`` table, the table itself, and the caveat."""
    checked = table.attrs.get("checked", len(table))
    if table.empty:
        return (f"No run's eval-mode test loss after epoch 1 exceeds {_threshold_text(table)}: none of the "
                f"{checked} runs blew up in its first epoch.")  # fmt: skip
    shown = table.assign(**{"epoch-1 test loss": table["epoch-1 test loss"].map(lambda v: f"{v:.3g}"),
                            "× ln 10": table["× ln 10"].map(lambda v: f"{v:,.0f}"),
                            "epoch-2 test loss": table["epoch-2 test loss"].map(lambda v: f"{v:.3g}"),
                            "final test loss": table["final test loss"].map(lambda v: f"{v:.3g}")})  # fmt: skip
    shown = shown.drop(columns=["model", "seed"])
    final = table["final test loss"]
    ends = (f"by the last epoch their test loss is {final.min():.2f}-{final.max():.2f}"
            if len(table) > 1 else f"by the last epoch its test loss is {final.iloc[0]:.2f}")  # fmt: skip
    n = len(table)
    return (f"The eval-mode test loss after epoch 1 exceeds {_threshold_text(table)} in {n} of the {checked} runs: "
            f"{exploded_models(table)} blew up in their first epoch ({ends}).\n\n" + verdicts.markdown(shown)
            + f"\nEvery conclusion built on these runs carries that caveat: the conclusions on "
              f"{', '.join(dict.fromkeys(table['model']))} pool runs that started from a blow-up, and the closing "
              "table says which of its rows rest on them.\n")  # fmt: skip


def _caveat(text: str, explosions: pd.DataFrame | None) -> bool:
    return explosions is not None and any(_mentions(text, m) for m in dict.fromkeys(explosions["model"]))


def _mark(rows: list[dict], marked: Sequence[bool], explosions: pd.DataFrame | None, where: str = "") -> str:
    """Mark the rows that rest partly on blown-up runs with a dagger and return the note that explains it (when
    every row does, no dagger: the note says so)."""
    if explosions is None or explosions.empty or not any(marked):
        return ""
    which = f"runs that blew up in their first epoch ({exploded_models(explosions)}{where})"
    if all(marked):
        return f"Every row rests partly on {which}."
    for r, m in zip(rows, marked, strict=True):
        if m:
            r["evidence"] += f" {DAGGER}"
    return f"{DAGGER}: rests partly on {which}."


# --- notebook 06: degradation, overfitting, gradient flow -----------------------------------------------------


def _degradation_rows(deg: pd.DataFrame) -> list[dict]:
    rows = []
    for _, r in deg.iterrows():
        level = _level(r["interval from"])
        rows.append({"claim": f"{r['claim']} ({r['comparison (clean training error)']})", "verdict": r["verdict"],
                     "evidence": f"clean training error {r['difference']} ({_method(r['interval from'])}"
                                 + (f", {level}" if level else "") + ")"})  # fmt: skip
    return rows


def _overfitting_row(ovf: pd.DataFrame) -> list[dict]:
    if ovf.empty:
        return []
    r = ovf.iloc[0]
    evidence = (f"deep − shallow: clean training error {r['clean training error, deep − shallow']}, "
                f"test error {r['test error, deep − shallow']} (95%)")  # fmt: skip
    if r["verdict"] == verdicts.NOT_IN_REGIME:
        evidence += f"; {r['why'].split(';')[0]}"
    return [{"claim": r["claim"], "verdict": r["verdict"], "evidence": evidence}]


def _gradient_rows(vg: pd.DataFrame) -> list[dict]:
    """The backward-signal readings at the first and the last probe point, per net."""
    if vg.empty:
        return []
    points = list(dict.fromkeys(vg.sort_values("step", kind="stable")["point"]))
    keep = vg[vg["point"].isin([points[0], points[-1]])]
    rows = []
    models = list(dict.fromkeys(vg["model"]))
    for model in [m for m in models if " (" not in m] + [m for m in models if " (" in m]:
        for _, r in keep[keep["model"] == model].iterrows():
            one = r["seeds"] <= 1 or "one seed" in r["log10 [interval]"]
            est = r["log10 [interval]"].split(" [")[0]
            ev = (f"log10 first/last block {est} (one seed, no interval)" if one else
                  f"log10 first/last block {r['log10 [interval]']} ({r['seeds']} seeds, {r['level']} level; per seed "
                  f"{r['log10 per seed']})") + f"; {r['per block']} per block"
            rows.append({"claim": f"the backward signal towards the input (vanishes / neither / grows): {model}, "
                                  f"{r['point']}", "verdict": r["signal towards the input"], "evidence": ev})
    return rows


def gradient_counts(vg: pd.DataFrame) -> str:
    """A sentence on the backward-signal readings that have an interval: how many vanish, grow, neither,
    cannot tell (with the readings that settle named)."""
    has = vg[~vg["log10 [interval]"].str.contains("one seed")] if not vg.empty else vg
    if has.empty:
        return "No backward-signal reading has an interval across seeds (one seed per net)."
    outcome = has["signal towards the input"]
    n = len(has)

    def named(word: str) -> str:
        g = has[outcome == word]
        by = {m: [p for p in gg["point"]] for m, gg in g.groupby("model", sort=False)}
        return "; ".join(f"{m} at {', '.join(ps)}" for m, ps in by.items())

    plural = {verdicts.VANISHES: "vanish", verdicts.GROWS: "grow", verdicts.NEITHER: "read neither"}
    singular = {verdicts.NEITHER: "reads neither"}
    parts = []
    for word in (verdicts.VANISHES, verdicts.GROWS, verdicts.NEITHER):
        k = int((outcome == word).sum())
        if k:
            parts.append(f"{k} {plural[word] if k > 1 else singular.get(word, word)} ({named(word)})")
    rest = int((outcome == verdicts.CANNOT_TELL).sum())
    if rest:
        parts.append(f"{rest} cannot tell")
    listing = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    none_vanish = ("none vanishes towards the input (the whole interval of log10 first/last below "
                   f"−{GRADIENT_THRESHOLD:g}), so the vanishing signal that \"skip connections avoid "
                   "vanishing gradients\" presupposes does not show; " if not (outcome == verdicts.VANISHES).any()
                   else "")  # fmt: skip
    return (f"Of the {n} readings of the backward signal with an interval across seeds (Holm-adjusted), "
            f"{none_vanish}{listing}.")


def degradation_summary(deg: pd.DataFrame, ovf: pd.DataFrame, vg: pd.DataFrame,
                        explosions: pd.DataFrame | None = None) -> str:  # fmt: skip
    """Notebook 06's closing cell: a table of claims | verdict | evidence (the overfitting claim, the three
    degradation rows, the backward-signal readings at the first and last probe points) and four or five
    sentences that summarise it. ``deg``, ``ovf``, ``vg``: ``verdicts.degradation``, ``verdicts.overfitting``,
    ``verdicts.vanishing_gradients``; ``explosions``: ``epoch1_explosions`` of the runs they rest on (rows on
    models with a blown-up run are marked and the caveat stated)."""
    rows = _overfitting_row(ovf) + _degradation_rows(deg) + _gradient_rows(vg)
    mark = _mark(rows, [_caveat(r["claim"], explosions) for r in rows], explosions, "; section 1")
    out = [_table(rows)]
    notes = ["Each verdict is that of the table above that tested the claim (with its multiplicity adjustment).", mark]
    out.append(" ".join(n for n in notes if n) + "\n")
    sentences = []
    if not ovf.empty:
        r = ovf.iloc[0]
        sentences.append(f"\"{_sentence(r['claim'])}\": {r['verdict']}, as {r['why'].split(';')[0]}.")
    if not deg.empty:
        d = deg.set_index("comparison (clean training error)")
        parts = [f"{name} = {row['difference']} ({row['verdict']})" for name, row in d.iterrows()]
        sentences.append("In clean training error, " + "; ".join(parts) + ".")
        if deg.attrs.get("reading"):
            sentences.append(deg.attrs["reading"])
    if not vg.empty:
        sentences.append(gradient_counts(vg))
    if explosions is not None:
        sentences.append(explosions_sentence(explosions))
    out.append(" ".join(s for s in sentences if s))
    return "\n".join(out) + "\n"


def explosions_sentence(explosions: pd.DataFrame) -> str:
    """One sentence for a closing summary: which runs blew up in their first epoch, and the caveat."""
    if explosions.empty:
        return (f"No run blew up in its first epoch (eval-mode test loss above "
                f"{explosions.attrs.get('threshold', EXPLOSION_FACTOR * CHANCE_LOSS):.1f}).")  # fmt: skip
    return (f"Of the {explosions.attrs.get('checked', len(explosions))} runs, {len(explosions)} blew up in their "
            f"first epoch (eval-mode test loss above {explosions.attrs['threshold']:.1f} = "
            f"{explosions.attrs['factor']:g} × ln 10): {exploded_models(explosions)}; the conclusions on these "
            "models carry that caveat.")


# --- notebook 07: lesions, paths, landscapes, shattering, depth -----------------------------------------------


def path_shares(paths: pd.DataFrame, n_blocks: int) -> pd.DataFrame:
    """Veit et al.'s share of the gradient carried by the paths of each measured length: the gradient through
    one path of that length (``paths``: the run's ``path_gradients`` table) times the number of such paths,
    C(n, k), normalised over the lengths measured. ``attrs``: the lengths measured, their step (e.g. every
    third length) and ``n_blocks``."""
    dist = mechanisms.path_length_distribution(n_blocks)
    share = paths.merge(dist, on="length").sort_values("length").reset_index(drop=True)
    weight = share["grad_norm"] * share["paths"]
    share["gradient share"] = weight / weight.sum()
    share["cumulative share"] = share["gradient share"].cumsum()
    lengths = share["length"].tolist()
    steps = sorted(set(np.diff(lengths).tolist()))
    share.attrs.update(lengths=lengths, step=steps[0] if len(steps) == 1 else None, n_blocks=n_blocks)
    return share


def _ordinal(k: int) -> str:
    return {2: "second", 3: "third", 4: "fourth", 5: "fifth"}.get(k, f"{k}th")


def sampled_lengths(share: pd.DataFrame) -> str:
    """'every third length (0, 3, ..., 27)', 'every length (0-27)' or the measured lengths listed."""
    lengths, step, n = share.attrs["lengths"], share.attrs["step"], share.attrs["n_blocks"]
    if len(lengths) == n + 1:
        return f"every length (0-{n})"
    if step and len(lengths) > 3:
        return f"every {_ordinal(step)} length ({lengths[0]}, {lengths[1]}, ..., {lengths[-1]})"
    return "the lengths " + ", ".join(map(str, lengths))


def typical_length(n_blocks: int) -> str:
    """The most common path length of Binomial(n, 1/2): '13-14' for 27 blocks, '10' for 20."""
    return f"{n_blocks // 2}-{n_blocks // 2 + 1}" if n_blocks % 2 else f"{n_blocks // 2}"


def path_reading(share: pd.DataFrame, what: str = "the trained net") -> str:
    """Prose from ``path_shares``: where the share peaks, against the typical path length, and how much of the
    gradient the paths up to the peak (and up to the typical length) carry, over the lengths measured."""
    n = share.attrs["n_blocks"]
    peak = int(share.loc[share["gradient share"].idxmax(), "length"])
    cum = share.set_index("length")["cumulative share"]
    upto_peak = 100 * float(cum.loc[peak])
    below_typ = cum[cum.index <= n / 2]
    typ = typical_length(n)
    shorter = peak < n / 2
    text = (f"In {what} the gradient share peaks at paths of length {peak} of {n}, "
            + (f"shorter than the typical path ({typ} residual branches), as Veit et al. found"
               if shorter else f"not shorter than the typical path ({typ} residual branches): Veit et al.'s "
                               "finding does not show here")
            + f"; paths of length ≤ {peak} carry {upto_peak:.0f}% of the gradient")  # fmt: skip
    if len(below_typ) and int(below_typ.index[-1]) != peak:
        text += f", those of length ≤ {int(below_typ.index[-1])} {100 * float(below_typ.iloc[-1]):.0f}%"
    measured = sampled_lengths(share)
    if measured.startswith("every length"):
        return text + " (every length measured)."
    return text + f" (only {measured} was measured; the shares are of their sum)."


def short_lengths(n_blocks: int) -> int:
    """The longest path length shorter than the typical one (Binomial(n, 1/2)'s mode): 12 for 27 blocks, 9 for 20."""
    return n_blocks // 2 - 1


def path_readings(tables: Mapping[int, pd.DataFrame], n_blocks: int) -> pd.DataFrame:
    """``path_shares`` of each trained network (``tables``: seed -> its ``path_gradients`` table), one row per
    seed: where its gradient share peaks, the share carried by the paths up to the peak, and the share carried
    by the paths shorter than the typical one (length <= ``short_lengths(n_blocks)``), over the lengths
    measured. ``attrs``: ``n_blocks``, ``short`` (that length), the fraction of all 2^n paths that are that
    short, and the lengths measured (``sampled_lengths`` of the first network)."""
    short = short_lengths(n_blocks)
    rows, measured = [], ""
    for seed, paths in sorted(tables.items()):
        share = path_shares(paths, n_blocks)
        measured = measured or sampled_lengths(share)
        cum = share.set_index("length")["cumulative share"]
        peak = int(share.loc[share["gradient share"].idxmax(), "length"])
        rows.append({"seed": seed, "peak length": peak, "share up to the peak": float(cum.loc[peak]),
                     "share shorter than typical": float(cum[cum.index <= short].iloc[-1])})
    table = pd.DataFrame(rows, columns=["seed", "peak length", "share up to the peak", "share shorter than typical"])
    dist = mechanisms.path_length_distribution(n_blocks)
    table.attrs.update(n_blocks=n_blocks, short=short, measured=measured,
                       paths_short=float(dist.loc[dist["length"] <= short, "fraction"].sum()))
    return table


def path_verdict(readings: pd.DataFrame) -> dict:
    """Veit et al.'s claim, that training's gradient flows mostly through paths shorter than the typical one,
    from ``path_readings``: the share of the gradient on those paths, mean across the trained networks with a
    95% t-interval on the logit scale (it stays in [0, 1]), against one half. Confirmed when the interval lies
    above 1/2, refuted when below; one network gives no interval ("cannot tell (one network per architecture)").
    Keys: ``estimate``, ``low``, ``high``, ``nets``, ``verdict``, ``text`` (for prose)."""
    values = readings["share shorter than typical"].to_numpy()
    iv = stats.seed_interval(values, bounds=(0, 1))
    if len(values) < 2:
        verdict = verdicts.CANNOT_TELL_ONE_NET
        text = f"{100 * iv.estimate:.0f}% (one network, no interval)"
    else:
        verdict = stats.verdict(iv.low - 0.5, iv.high - 0.5, +1)
        text = f"{100 * iv.estimate:.1f}% [{100 * iv.low:.1f}, {100 * iv.high:.1f}]"
    return dict(estimate=iv.estimate, low=iv.low, high=iv.high, nets=len(values), verdict=verdict, text=text)


def paths_reading(readings: pd.DataFrame, what: str = "the trained resnet56") -> str:
    """Prose from ``path_readings`` and ``path_verdict``, with the per-network values."""
    n, short = readings.attrs["n_blocks"], readings.attrs["short"]
    v = path_verdict(readings)
    peaks = sorted(set(readings["peak length"]))
    peak = (f"at length {peaks[0]} of {n} in every network" if len(peaks) == 1 else
            "at lengths " + ", ".join(str(p) for p in readings["peak length"]) + f" of {n}")  # fmt: skip
    per = ", ".join(f"{100 * x:.0f}" for x in readings["share up to the peak"])
    shorter = ", ".join(f"{100 * x:.1f}" for x in readings["share shorter than typical"])
    interval = ("one network, no interval" if v["nets"] < 2 else
                f"mean {v['text']}, 95% t-interval on the logit scale across the {v['nets']} networks")
    return (f"In {what} the gradient share peaks {peak} (the typical "
            f"path has {typical_length(n)} residual branches); the paths up to the peak carry {per}% of the gradient "
            f"(per network, in seed order), and the paths shorter than the typical one (length ≤ {short}, "
            f"{100 * readings.attrs['paths_short']:.0f}% of all 2^{n} paths) carry {shorter}% ({interval}). On "
            f"\"training's gradient flows mostly through paths shorter than the typical one\" (Veit et al.), against "
            f"one half, the verdict is {v['verdict']}. Only {readings.attrs['measured']} was measured, so the peak "
            "is known to within the step between measured lengths, and the shares are of their sum.")


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


def landscape_verdicts(readings: pd.DataFrame, residual: str = "resnet56", plain: str = "plain56") -> pd.DataFrame:
    """Two claims from ``landscape_readings``, residual − plain across the trained networks (Welch t, each
    network one replicate), Holm-adjusted across the two: the residual net ends at a lower training loss, and
    its loss rises less from θ to α = ±1 along a random filter-normalised direction (a flatter slice: Li et
    al.'s smoother landscape, read on one slice per network). One network per architecture: no interval,
    "cannot tell (one network per architecture)". Columns: claim, residual − plain, interval from, verdict, and
    what would settle it (where the verdict is "cannot tell")."""
    claims = (("loss at θ", f"{residual} ends at a lower training loss than {plain}"),
              ("rise to α = ±1", f"{residual}'s training loss rises less from θ to α = ±1 than {plain}'s "
                                 "(a flatter slice; Li et al.)"))
    a, b = readings.loc[residual], readings.loc[plain]
    cmps = [stats.seed_difference(a[col], b[col]) if len(a) >= 2 and len(b) >= 2 else None for col, _ in claims]
    adjusted = stats.holm_adjust([(c.evidence if c else None, stats.sign_decided) for c in cmps])
    rows = []
    for (col, claim), c, adj in zip(claims, cmps, adjusted, strict=True):
        est = float(a[col].mean() - b[col].mean())
        if c is None or adj is None:
            rows.append({"claim": claim, "residual − plain": f"{est:+.3f}", "interval from": "one network: none",
                         "verdict": verdicts.CANNOT_TELL_ONE_NET})
            continue
        rows.append({"claim": claim, "residual − plain": f"{est:+.3f} [{adj.low:+.3f}, {adj.high:+.3f}]",
                     "interval from": f"Welch t over {len(a)} and {len(b)} networks; {100 * adj.confidence:.4g}% level",
                     "verdict": stats.verdict(adj.low, adj.high, -1)})
    for r in rows:
        r["what would settle it"] = (
            "" if not r["verdict"].startswith(verdicts.CANNOT_TELL) else
            "more trained networks per architecture (the spread across networks sets the interval), and several "
            "random directions per network, whose mean would leave less to the one direction drawn")  # fmt: skip
    table = pd.DataFrame(rows, columns=["claim", "residual − plain", "interval from", "verdict",
                                        "what would settle it"])
    k = sum(x is not None for x in adjusted)
    table.attrs.update(note=stats.holm_note(k), nets={residual: len(a), plain: len(b)})
    return table


def landscape_sentence(landscape: pd.DataFrame) -> str:
    """``landscape_verdicts`` in one sentence."""
    if landscape.empty:
        return ""
    nets = landscape.attrs.get("nets", {})
    over = " and ".join(f"{n} {m}" for m, n in nets.items())
    parts = [f"\"{r['claim']}\": {r['verdict']} (residual − plain {r['residual − plain']})"
             for _, r in landscape.iterrows()]
    return f"On the 1-D loss slices of {over} trained networks, " + "; ".join(parts) + "."


def depth_trend(sweep: pd.DataFrame, metric: str = "clean training error") -> pd.DataFrame:
    """Per family (index), from ``verdicts.depth_sweep``: the shallowest and deepest depth, the mean error and its
    interval at each, whether the error 'rises', 'falls' or 'does not change' from the one to the other, whether
    it does so at every step of the sweep, the seeds at each end, and what He et al. found."""
    rows = {}
    for fam, g in sweep[sweep["metric"] == metric].groupby("family", sort=False):
        g = g.sort_values("depth")
        first, last = g.iloc[0], g.iloc[-1]
        delta = float(last["mean"] - first["mean"])
        direction = "rises" if delta > 0 else "falls" if delta < 0 else "does not change"
        steps = np.diff(g["mean"].to_numpy())
        rows[fam] = {"shallow": int(first["depth"]), "deep": int(last["depth"]), "at shallow": first["text"],
                     "at deep": last["text"], "change": delta, "direction": direction,
                     "every step": bool(len(steps) > 1 and (np.all(steps > 0) or np.all(steps < 0))),
                     "seeds at shallow": int(first["seeds"]), "seeds at deep": int(last["seeds"]),
                     "He et al.": HE_ET_AL.get(fam, "")}  # fmt: skip
    return pd.DataFrame.from_dict(rows, orient="index")


def _pct(text: str) -> str:
    """A depth-sweep cell ('50.0 [47.2, 52.8]'; one seed: '58.6 [n/a]') for prose."""
    head, _, rest = str(text).partition(" ")
    return f"{head}% " + rest.replace("[n/a]", "(one seed, no interval)") if rest else f"{head}%"


def _deg_row(deg: pd.DataFrame | None, fam: str) -> pd.Series | None:
    """The row of ``verdicts.degradation`` on one family's change with depth ('plain56 − plain20'), or None.
    ``fam``: the nets' connections ('plain', 'residual'), as ``verdicts.depth_sweep`` groups them."""
    if deg is None or deg.empty or fam not in deg.attrs.get("within", {}):
        return None
    hit = deg[deg["comparison (clean training error)"] == deg.attrs["within"][fam]]
    return hit.iloc[0] if len(hit) else None


def _agrees(fam: str, direction: str) -> bool:
    return HE_ET_AL.get(fam) == direction


def depth_reading(sweep: pd.DataFrame, deg: pd.DataFrame | None = None, metric: str = "clean training error") -> str:
    """One sentence per family: whether its error (``metric``) rises or falls from the shallowest to the deepest
    depth of the sweep, and whether that agrees with or contradicts He et al. (plain nets' training error rising
    with depth, residual nets' falling). With ``deg`` (``verdicts.degradation``) it adds the interval-backed
    verdict on the deep − shallow difference, so a contradiction or agreement of the means is not taken for more."""
    trend = depth_trend(sweep, metric)
    diff_rows = {fam: r for fam in trend.index if (r := _deg_row(deg, fam)) is not None}
    out = []
    for fam, t in trend.iterrows():
        nets = f"{fam} nets"
        how = t["direction"] + (" at every step of the sweep" if t["every step"] else "")
        text = (f"From {t['shallow']} to {t['deep']} layers the {nets}' mean {metric} {how} ({_pct(t['at shallow'])} "
                f"→ {_pct(t['at deep'])})")
        if t["direction"] == "does not change":
            text += f", where He et al. found it {_GERUND.get(HE_ET_AL.get(fam, ''), '')}"
        elif _agrees(fam, t["direction"]):
            text += ", as He et al. found"
        else:
            text += f", which contradicts He et al., who found it {_GERUND.get(HE_ET_AL.get(fam, ''), '')} with depth"
        if fam in diff_rows:
            r = diff_rows[fam]
            level = _level(r["interval from"])
            v = r["verdict"]
            # the verdict is on the degradation table's claim ("the deeper ... fits worse"), which it names: a
            # falling residual error refutes it, and a bare "refuted" after "as He et al. found" would misread
            text += (f"; {r['comparison (clean training error)']}: {r['difference']}"
                     + (f" ({level})" if level else "") + f", verdict on \"{r['claim']}\": {v}")  # fmt: skip
            if v.startswith(verdicts.CANNOT_TELL) and t["direction"] != "does not change":
                what = "agreement" if _agrees(fam, t["direction"]) else "contradiction"
                text += f", so the {what} rests on the means"
        out.append(text + ".")
    return " ".join(out)


def _he_rows(sweep: pd.DataFrame, deg: pd.DataFrame | None) -> list[dict]:
    """He et al.'s two depth claims, with the degradation table's verdicts (the residual claim is the opposite
    direction of its second row: 'falls' is confirmed where 'the deeper residual net fits worse' is refuted)."""
    trend = depth_trend(sweep)
    flip = {verdicts.CONFIRMED: verdicts.REFUTED, verdicts.REFUTED: verdicts.CONFIRMED}
    rows = []
    for fam, claim in (("plain", "the deeper plain nets fit their training data worse (He et al.)"),
                       ("residual", "the deeper residual nets fit their training data better (He et al.)")):
        if fam not in trend.index:
            continue
        t = trend.loc[fam]
        evidence = (f"clean training error {_pct(t['at shallow'])} at {t['shallow']} → {_pct(t['at deep'])} at "
                    f"{t['deep']} layers")
        verdict = verdicts.CANNOT_TELL
        if (r := _deg_row(deg, fam)) is not None:
            level = _level(r["interval from"])
            verdict = r["verdict"] if fam == "plain" else flip.get(r["verdict"], r["verdict"])
            evidence += (f"; {r['comparison (clean training error)']} {r['difference']}"
                         + (f" ({level})" if level else ""))  # fmt: skip
        rows.append({"claim": claim, "verdict": verdict, "evidence": evidence})
    return rows


def _lesion_rows(lesion_table: pd.DataFrame) -> list[dict]:
    rows = []
    floors = lesion_table.attrs.get("floor", {})
    for _, r in lesion_table.iterrows():
        level = _level(r["interval from"])
        evidence = f"{r['difference (points)']} points" + (f" ({level})" if level else "")
        floor = floors.get(r["claim"], {})
        if r["verdict"] == verdicts.CANNOT_TELL_FLOOR:
            evidence += f"; at the floor: {' and '.join(floor.get('detail', {}).values())}"
        elif r["verdict"] == verdicts.CANNOT_TELL_ONE_NET:
            evidence += f"; {r[verdicts.THESE_NETWORKS]}"
        if net := floor.get("stands_despite"):  # one net at chance: the verdict stands in the one direction it can
            evidence += f"; {floor['detail'][net]} is left at chance, which only understates its loss"
        rows.append({"claim": r["claim"], "verdict": r["verdict"], "evidence": evidence})
    return rows


def _shattering_rows(sh: pd.DataFrame, inits: int | None = None) -> list[dict]:
    """One row per depth of ``verdicts.shattering`` (``inits``: the number of initialisations, when the table
    does not say)."""
    rows = []
    col = "verdict: residual more correlated"
    for depth, r in sh.iterrows():
        n = int(r["initialisations"]) if "initialisations" in r else inits
        over = f"paired over {n} initialisations, " if n else "paired, "
        z = r.get("Fisher z, residual − plain", r["residual − plain"])
        higher = f"; residual higher in {r['residual higher']}" if "residual higher" in r else ""
        rows.append({"claim": f"at initialisation the residual net's input gradient is more correlated than the plain "
                              f"net's (depth {depth}; Balduzzi et al.)", "verdict": r[col],
                     "evidence": f"lag-1 autocorrelation, Fisher z residual − plain {z} ({over}{r['level']} level); "
                                 f"plain {r['plain']}, residual {r['residual']}{higher}"})  # fmt: skip
    return rows


def _landscape_row(one_d: pd.DataFrame | None, what: str) -> list[dict]:
    """Li et al.'s claim from the 1-D slices (index: model; columns as notebook 07's slice table)."""
    if one_d is None or one_d.empty:
        return []
    far = [c for c in one_d.columns if "±1" in c]
    at = [c for c in one_d.columns if "at θ" in c]
    if not far or not at:
        return []
    parts = ", ".join(f"{m} {r[at[0]]:.3g} → {r[far[0]]:.3g}" for m, r in one_d.iterrows())
    return [{"claim": "the residual net's loss surface around its trained weights is smoother (Li et al.)",
             "verdict": verdicts.CANNOT_TELL_ONE_NET,
             "evidence": f"training loss at θ → mean at α = ±1 on one random 1-D slice: {parts}; {what}, one pair of "
                         "directions, no interval"}]  # fmt: skip


def lesion_sentence(lz: pd.DataFrame, lesion_table: pd.DataFrame) -> str:
    """The lesion study in one sentence: what one deletion leaves of the deepest pair, and the verdicts."""
    if lesion_table.empty:
        return ""
    first = lesion_table.iloc[0]["claim"]
    m = re.search(r"costs (\S+) more accuracy than (\S+)", first)
    text = ""
    if m and not lz.empty and {m.group(1), m.group(2)} <= set(lz.index):
        def left(n: str) -> str:
            row = lz.loc[n]
            near = row["one block deleted, mean (%)"] <= 100 * (CHANCE + NEAR_CHANCE)
            return (f"{n} at {row['one block deleted, mean (%)']}% (intact {row['intact accuracy (%)']}%"
                    + (f", within {100 * NEAR_CHANCE:g} points of chance" if near else "") + ")")
        text = f"Deleting one block at a time leaves {left(m.group(2))} and {left(m.group(1))} on average; "
    only = [r[verdicts.THESE_NETWORKS] for _, r in lesion_table.iterrows() if r[verdicts.THESE_NETWORKS]]
    text += f"of the {len(lesion_table)} lesion comparisons, {_counts(lesion_table['verdict'])}"
    if len(only) == 1:
        text += f"; the comparison of one trained network per architecture is {only[0]}"
    elif len(set(only)) == 1:
        text += f"; the {len(only)} comparisons of one trained network per architecture are each {only[0]}"
    elif only:
        text += f"; the comparisons of one trained network per architecture are, in order, {'; '.join(only)}"
    text += "."
    return _sentence(text)


def shattering_sentence(sh: pd.DataFrame) -> str:
    """The shattering table in one sentence: the mean lag-1 autocorrelation of each net, the paired difference
    on Fisher's z with its interval, and the verdict at each depth."""
    col = "verdict: residual more correlated"
    if sh.empty:
        return ""
    z = "Fisher z, residual − plain" if "Fisher z, residual − plain" in sh else "residual − plain"
    parts = [f"plain {r['plain'].split(' ')[0]} against residual {r['residual'].split(' ')[0]} at depth {d} "
             f"(z difference {r[z]})" for d, r in sh.iterrows()]
    words = list(dict.fromkeys(sh[col]))
    which = (f"{words[0]} at every depth" if len(words) == 1 else
             "; ".join(f"{w} at depth {', '.join(str(d) for d in sh.index[sh[col] == w])}" for w in words))
    n = f" over {int(sh['initialisations'].iloc[0])} initialisations" if "initialisations" in sh else ""
    return (f"At initialisation the mean lag-1 autocorrelation of the input gradient{n} is "
            f"{'; '.join(parts)}: on whether the residual net's gradient is the more correlated, the verdict is "
            f"{which}.")


def mechanisms_summary(lesion_table: pd.DataFrame, lz: pd.DataFrame, sh: pd.DataFrame, share: pd.DataFrame | None,
                       sweep: pd.DataFrame, deg: pd.DataFrame | None = None, *, one_d: pd.DataFrame | None = None,
                       inits: int | None = None, path_what: str = "the trained resnet56",
                       landscape_what: str = "one seed", explosions: pd.DataFrame | None = None,
                       paths: pd.DataFrame | None = None, landscape: pd.DataFrame | None = None) -> str:  # fmt: skip
    """Notebook 07's closing cell: a table of claims | verdict | evidence (the lesion comparisons, the path
    lengths, the landscapes, shattering at each depth, He et al.'s two depth claims) and up to five sentences:
    lesions, paths, shattering and the depth sweep (saying when it contradicts He et al.); the runs that blew
    up in their first epoch (``explosions``) mark the rows that rest on them. ``lesion_table``:
    ``verdicts.lesion_verdicts``; ``lz``: ``verdicts.lesions``; ``sh``: ``verdicts.shattering`` (``inits``: its
    number of initialisations); ``share``: ``path_shares``;
    ``sweep``: ``verdicts.depth_sweep``; ``deg``: ``verdicts.degradation`` of the 20- and 56-layer nets;
    ``one_d``: the 1-D landscape slices (index model). Over every trained network, where they are given:
    ``paths`` (``path_readings``) replaces the path-length row read from ``share`` by one with an interval
    across networks, and ``landscape`` (``landscape_verdicts``) the landscape row read from ``one_d``."""
    rows = _lesion_rows(lesion_table)
    if paths is not None and not paths.empty:
        v = path_verdict(paths)
        rows.append({"claim": "training's gradient flows mostly through paths shorter than the typical one "
                              "(Veit et al.)", "verdict": v["verdict"],
                     "evidence": f"share of the gradient on paths of length ≤ {paths.attrs['short']} of "
                                 f"{paths.attrs['n_blocks']}: {v['text']} against 50% (95%, logit scale; per network "
                                 + ", ".join(f"{100 * x:.1f}%" for x in paths["share shorter than typical"])
                                 + f"); peak at length {', '.join(str(k) for k in paths['peak length'])}; "
                                 f"measured: {paths.attrs['measured']}; {path_what}"})  # fmt: skip
    elif share is not None and not share.empty:
        n = share.attrs["n_blocks"]
        peak = int(share.loc[share["gradient share"].idxmax(), "length"])
        cum = 100 * float(share.set_index("length")["cumulative share"].loc[peak])
        rows.append({"claim": "training's gradient flows mostly through paths shorter than the typical one "
                              "(Veit et al.)", "verdict": verdicts.CANNOT_TELL_ONE_NET,
                     "evidence": f"the share peaks at length {peak} of {n} (typical: {typical_length(n)}); lengths ≤ "
                                 f"{peak} carry {cum:.0f}% of it (measured: {sampled_lengths(share)}); {path_what}, "
                                 "no interval"})
    if landscape is not None and not landscape.empty:
        rows += [{"claim": r["claim"], "verdict": r["verdict"],
                  "evidence": f"residual − plain {r['residual − plain']} ({r['interval from']}); one random slice "
                              f"per network; {landscape_what}"} for _, r in landscape.iterrows()]  # fmt: skip
    else:
        rows += _landscape_row(one_d, landscape_what)
    rows += _shattering_rows(sh, inits)
    marked = [_caveat(r["claim"] + " " + r["evidence"], explosions) for r in rows]
    he = _he_rows(sweep, deg)
    rows += he
    marked += [explosions is not None and not explosions.empty] * len(he)  # they rest on every net of the sweep
    mark = _mark(rows, marked, explosions)
    notes = ["Each verdict is that of the table above that tested the claim (with its multiplicity adjustment); "
             f"\"{verdicts.CANNOT_TELL_ONE_NET}\" where one trained network per architecture was measured, without an "
             "interval across trained networks.", mark]
    notes = [n for n in notes if n]
    sentences = [lesion_sentence(lz, lesion_table)]
    if paths is not None and not paths.empty:
        sentences.append(paths_reading(paths, path_what))
    elif share is not None and not share.empty:
        sentences.append(path_reading(share, path_what))
    if landscape is not None:
        sentences.append(landscape_sentence(landscape))
    sentences.append(shattering_sentence(sh))
    sentences.append(depth_reading(sweep, deg))
    return _table(rows) + "\n" + " ".join(notes) + "\n\n" + " ".join(s for s in sentences if s) + "\n"
