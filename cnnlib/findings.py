"""Findings in sentences, built from the stored runs: what notebooks 01-05 say about their curves.

Every number in the text comes from the runs passed in (their histories, predictions and
configs); nothing is written for a particular outcome. A sentence that compares two models
carries the interval of ``verdicts.compare`` and says whether it excludes zero; it never
strengthens that into a verdict on a claim (the verdict tables do that, with Holm's
adjustment).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from . import stats, verdicts
from .analysis import ORIGINAL_ACCURACY, TARGET_ACCURACY, family_titles, label, model_costs
from .constants import CHANCE, CHANCE_LOSS, EXPLOSION_FACTOR, FITS_TRAINING, NEAR_CHANCE
from .results import Run


def and_list(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c' (goes with the sentences built here)."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


EXPLODED = EXPLOSION_FACTOR * CHANCE_LOSS
LATE = 0.2  # "the last epochs": this fraction of the run (at least one epoch)
PEAK_MARGIN = 0.01  # a best epoch this far above the final one is worth a sentence
# A run that misses its target with a clean training accuracy below this has not yet fit nearly all its
# training images, as the published CIFAR-10 schedules do (He et al.: 164 epochs): a longer schedule comes first.
FITS_ALL = 0.99
HE_EPOCHS = verdicts.HE_EPOCHS


def pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}%"


def points(x: float, digits: int = 1) -> str:
    """A signed difference in percentage points: '+3.2 points'."""
    return f"{100 * x:+.{digits}f} points"


def _times(x: float) -> str:
    """A ratio for prose: '15', '1.4', '826'."""
    return f"{x:,.0f}" if x >= 10 else f"{x:.1f}"


def first_epoch_loss(run: Run) -> float:
    """The eval-mode test loss after the first epoch (NaN if the run has no epoch)."""
    h = run.history
    return float(h["test_loss"].iloc[0]) if len(h) and "test_loss" in h else math.nan


def _final_train(run: Run) -> tuple[float, str]:
    """(accuracy, what it is): the run's training accuracy at its last epoch, clean (eval mode, unaugmented)
    where recorded, else the running accuracy over its augmented batches."""
    if "clean_train_acc" in run.history:
        return verdicts.final(run, "clean_train_acc"), "clean training accuracy"
    return verdicts.final(run, "train_acc"), "running training accuracy (augmented batches)"


def late_change(run: Run, fraction: float = LATE) -> tuple[int, float]:
    """(k, change): the test accuracy's change over the run's last k epochs, k = ``fraction`` of
    the run rounded, at least 1 (a run of one epoch has no change: (0, NaN))."""
    acc = run.history["test_acc"].to_numpy()
    if len(acc) < 2:
        return 0, math.nan
    k = min(len(acc) - 1, max(1, round(fraction * len(acc))))
    return k, float(acc[-1] - acc[-1 - k])


def run_sentences(run: Run, test_labels: np.ndarray) -> list[str]:
    """What one run's curves show: where it ends (with the exact interval over its test images), whether
    it fitted its training data, how it ended, its best epoch where that was not the last, a blow-up."""
    h, name = run.history, f"`{label(run)}`"
    iv = stats.accuracy_interval(run.predictions, test_labels)
    epochs = len(h)
    train, what = _final_train(run)
    out = [f"{name} ends at {pct(iv.estimate)} test accuracy (95% interval {pct(iv.low)} to {pct(iv.high)} over "
           f"{len(test_labels):,} test images) after {epochs} epoch{'s' if epochs != 1 else ''}; its mean test "
           f"accuracy over the run is {pct(verdicts.auc(run))}."]  # fmt: skip
    gap = train - iv.estimate
    if train >= FITS_ALL:
        out.append(f"Its final {what} is {pct(train)}, {points(gap)} above the test accuracy: it fits its training "
                   f"images, and the gap is its generalisation gap.")  # fmt: skip
    elif train >= FITS_TRAINING:
        out.append(f"Its final {what} is {pct(train)}, {points(gap)} above the test accuracy: it passes the "
                   f"{pct(FITS_TRAINING, 0)} at which a net counts as fitting its training images but still "
                   f"gets {pct(1 - train)} of them wrong, so the gap is its generalisation gap so far.")  # fmt: skip
    else:
        out.append(f"Its final {what} is {pct(train)} ({points(gap)} against the test accuracy), short of the "
                   f"{pct(FITS_TRAINING, 0)} at which a net counts as fitting its training images: the "
                   f"budget ends before the model has learnt what it can.")  # fmt: skip
    k, change = late_change(run)
    if k:
        trend = ("was still rising" if change >= PEAK_MARGIN else "fell" if change <= -PEAK_MARGIN
                 else "had levelled off")  # fmt: skip
        last = f"its last {k} epochs" if k != 1 else "its last epoch"
        out.append(f"Over {last} the test accuracy changed by {points(change)} "
                   f"(it {trend}).")  # fmt: skip
    best = int(h["test_acc"].to_numpy().argmax())
    if h["test_acc"].iloc[best] - h["test_acc"].iloc[-1] >= PEAK_MARGIN:
        out.append(f"Its best epoch was epoch {int(h['epoch'].iloc[best])} at {pct(h['test_acc'].iloc[best])}; the "
                   f"final epoch is what is reported, for every run alike.")  # fmt: skip
    loss1 = first_epoch_loss(run)
    if loss1 > EXPLODED:
        out.append(f"Its eval-mode test loss after epoch 1 was {loss1:,.1f} (a uniform guess scores "
                   f"{CHANCE_LOSS:.2f}): the first epoch blew up and the rest of the curve is a recovery from it.")
    return out


def _same_protocol(a: Run, b: Run) -> bool:
    return a.config.profile == b.config.profile and a.config.n_images() == b.config.n_images()


def _epochs_note(a: Run, b: Run) -> str:
    ea, eb = len(a.history), len(b.history)
    return "" if ea == eb else f" The two trained for {ea} and {eb} epochs: the profile gives them different schedules."


def comparison_sentence(a: Sequence[Run], b: Sequence[Run], test_labels: np.ndarray) -> str | None:
    """The final test accuracy of model a minus model b, with its interval (across seeds, else paired
    over the test images), and whether the interval excludes zero. None if the two were trained on
    different data."""
    if not a or not b or not _same_protocol(a[0], b[0]):
        return None
    row = verdicts.compare({r.config.seed: r for r in a}, {r.config.seed: r for r in b}, verdicts.final_test_acc,
                           labels=test_labels)  # fmt: skip
    na, nb = f"`{label(a[0])}`", f"`{label(b[0])}`"
    est = row["estimate"]
    side = "above" if est >= 0 else "below"
    text, epochs = f"{na} ends {abs(100 * est):.1f} points {side} {nb}", _epochs_note(a[0], b[0])
    if not (np.isfinite(row["low"]) and np.isfinite(row["high"])):
        return text + f" ({row['method']})." + epochs
    where = ("it excludes zero: more than the test set's noise" if row["low"] > 0 or row["high"] < 0
             else "it includes zero: within the noise")  # fmt: skip
    return text + f" (95% interval {points(row['low'])} to {points(row['high'])}, {row['method']}); {where}." + epochs


def cost_sentence(a: Run, b: Run) -> str:
    """How much more one model costs than the other: multiply-adds per image, and seconds per epoch when
    both were trained on one machine in one way (else the machines differ and times do not compare)."""
    ca, cb = model_costs(a.config.model)["macs"], model_costs(b.config.model)["macs"]
    big, small = (a, b) if ca >= cb else (b, a)
    ratio = max(ca, cb) / min(ca, cb)
    if ratio < 1.05:
        text = (f"`{label(big)}` and `{label(small)}` need about the same multiply-adds per image "
                f"(ratio {ratio:.2f})")
    else:
        text = f"`{label(big)}` needs {_times(ratio)} times the multiply-adds per image of `{label(small)}`"
    same = (a.meta.get("device") == b.meta.get("device") and a.meta.get("engine") == b.meta.get("engine"))
    sa, sb = big.final["seconds_per_epoch"], small.final["seconds_per_epoch"]
    if same and sa and sb:
        text += (f" and took {_times(sa / sb)} times its seconds per epoch on the same machine "
                 "(wall time, which also counts the data pipeline and the load of other jobs)")
    return text + "."


def original_sentence(run: Run, test_labels: np.ndarray) -> str | None:
    """Ours against the original report's final accuracy (read off its curves, no interval of its own)."""
    if run.config.model not in ORIGINAL_ACCURACY:
        return None
    ours, theirs = stats.accuracy_interval(run.predictions, test_labels), ORIGINAL_ACCURACY[run.config.model]
    where = ("lies wholly above it" if ours.low > theirs else "lies wholly below it" if ours.high < theirs
             else "contains it")  # fmt: skip
    n_train = run.config.n_images()[0]
    return (f"The original report's `{run.config.model}` ended at about {pct(theirs, 0)}; ours ({run.config.profile} "
            f"profile, {n_train:,} training images) is {points(ours.estimate - theirs)} from it, and our 95% interval "
            f"{where}.")  # fmt: skip


def _against_target(run: Run, test_labels: np.ndarray) -> tuple[float, float, str] | None:
    """(our test accuracy, the target, "met" / "missed" / "unclear" by its 95% binomial interval) of a
    full-profile run whose model has a target (``analysis.TARGET_ACCURACY``); None otherwise."""
    if run.config.profile != "full" or run.config.tag or run.config.model not in TARGET_ACCURACY:
        return None
    ours, target = stats.accuracy_interval(run.predictions, test_labels), TARGET_ACCURACY[run.config.model]
    return ours.estimate, target, "met" if ours.low >= target else "missed" if ours.high < target else "unclear"


def _short_of_all(run: Run) -> bool:
    """Whether a run still gets more than 1 - ``FITS_ALL`` of its training images wrong at its last epoch
    (clean, eval mode, where recorded)."""
    return _final_train(run)[0] < FITS_ALL


def _what_would_close(run: Run) -> str:
    """What the first fix for a missed target would be, read off how well the run fits its training images.
    Either fix is a change to the shared recipe of the run's whole family, chosen on held-out training images."""
    (train, what), epochs = _final_train(run), len(run.history)
    family = "a change for its whole family, chosen on held-out training images as the recipe was"
    if _short_of_all(run):
        return (f"After {epochs} epochs it still gets {pct(1 - train)} of its training images wrong ({what} "
                f"{pct(train)}), where the published schedules fit nearly all of them, so a longer schedule (He et "
                f"al. trained {HE_EPOCHS} epochs) is the first thing that could close the gap: {family}.")
    return (f"It fits nearly all its training images ({what} {pct(train)}), so the gap is in how it generalises, "
            f"and more augmentation or regularisation is the first thing that could close it: {family}.")


def target_sentence(run: Run, test_labels: np.ndarray) -> str | None:
    """A full-profile run against the accuracy the study expects of its architecture: met, missed (by how
    much, and what would close the gap), or too close to tell."""
    if (checked := _against_target(run, test_labels)) is None:
        return None
    ours, target, outcome = checked
    verdict = {"met": f"meets it, {points(ours - target)} above, with its 95% interval above it",
               "missed": f"misses it by {100 * (target - ours):.1f} points, with its 95% interval below it",
               "unclear": "is within its 95% interval of it: too close to tell"}[outcome]  # fmt: skip
    text = (f"The study expects at least {pct(target)} of `{run.config.model}` under the full profile (a number set "
            f"before training, which nothing is tuned toward); this run ({pct(ours)}) {verdict}.")
    return f"{text} {_what_would_close(run)}" if outcome == "missed" else text


def targets_sentence(runs: Sequence[Run], labels_of) -> str | None:
    """The full-profile runs (first seed of each model) against their targets, in one sentence, and what
    would close the gaps of those that miss; None if none of them has a target."""
    first: dict[str, Run] = {}
    for r in sorted((r for r in runs if r.config.profile == "full" and not r.config.tag), key=lambda r: r.config.seed):
        first.setdefault(r.config.model, r)
    parts, under, fitted = [], [], []
    for model, run in first.items():
        if (checked := _against_target(run, labels_of(run))) is None:
            continue
        ours, target, outcome = checked
        verdict = {"met": "meets it", "missed": f"misses it by {100 * (target - ours):.1f} points",
                   "unclear": "is too close to tell"}[outcome]  # fmt: skip
        detail = f"{pct(ours)} against {pct(target)}"
        if outcome == "missed":
            train, what = _final_train(run)
            detail += f"; {pct(train)} {what}"
            (under if _short_of_all(run) else fitted).append(f"`{model}`")
        parts.append(f"`{model}` {verdict} ({detail})")
    if not parts:
        return None
    text = ("Against the accuracy the study expects of each architecture under the full profile (set before "
            "training; first seed, 95% interval over the test images): " + "; ".join(parts) + ".")
    if under:
        text += (f" {and_list(under)} still get{'s' if len(under) == 1 else ''} more than {pct(1 - FITS_ALL, 0)} of "
                 f"{'its' if len(under) == 1 else 'their'} training images wrong (the published schedules fit nearly "
                 f"all of them), so a longer schedule (He et al. trained {HE_EPOCHS} epochs) is the first thing that "
                 "could close the gap.")  # fmt: skip
    if fitted:
        text += (f" {and_list(fitted)} fit{'s' if len(fitted) == 1 else ''} nearly all "
                 f"{'its' if len(fitted) == 1 else 'their'} training images: there more augmentation or "
                 "regularisation is the first thing to try.")
    if under or fitted:
        text += (f" {'Either' if under and fitted else 'It'} is a change for a whole family, chosen on held-out "
                 "training images as the recipe was.")
    return text


def near_chance_note(runs: Iterable[Run]) -> str | None:
    low = [label(r) for r in runs if verdicts.final_test_acc(r) <= CHANCE + NEAR_CHANCE]
    if not low:
        return None
    return (f"{', '.join(f'`{m}`' for m in low)} ended within {100 * NEAR_CHANCE:g} points of chance "
            f"({pct(CHANCE, 0)}): {'it' if len(low) == 1 else 'they'} did not learn in this budget.")


def page_reading(original: Sequence[Run], ours: Sequence[Run], labels_of, *, full_original: Run | None = None) -> str:
    """The "Reading the curves" text of a model notebook (01-04): each model's run of the first seed, then
    the two compared (accuracy with its interval, cost), the original report's number, and a full-protocol
    run of the original model where the page shows another profile. ``labels_of(run)`` gives a run's
    test labels in the order of its predictions."""
    paragraphs = []
    for group in (original, ours):
        if group:
            target = target_sentence(group[0], labels_of(group[0]))
            paragraphs.append(" ".join([*run_sentences(group[0], labels_of(group[0])), *([target] if target else [])]))
    if original and ours:
        both = [comparison_sentence(ours, original, labels_of(ours[0])), cost_sentence(ours[0], original[0])]
        paragraphs.append(" ".join(s for s in both if s))
    if original:
        s = original_sentence(original[0], labels_of(original[0]))
        if full_original is not None:
            s = " ".join(x for x in (s, "Trained on the full protocol:",
                                     " ".join(run_sentences(full_original, labels_of(full_original))),
                                     original_sentence(full_original, labels_of(full_original)),
                                     target_sentence(full_original, labels_of(full_original))) if x)
        if s:
            paragraphs.append(s)
    note = near_chance_note([*original[:1], *ours[:1]])
    if note:
        paragraphs.append(note)
    return "\n\n".join(paragraphs)


def _ranked(runs: Sequence[Run]) -> list[tuple[str, float, int]]:
    """(model label, mean final test accuracy over its seeds, seeds), best first."""
    groups: dict[str, list[float]] = {}
    for r in runs:
        groups.setdefault(label(r), []).append(verdicts.final_test_acc(r))
    return sorted(((m, float(np.mean(v)), len(v)) for m, v in groups.items()), key=lambda t: -t[1])


def ranking_sentence(runs: Sequence[Run], family: str) -> str:
    """'Among the original models, `a` ends highest (41.0%), then `b` (36.2%), ...' (means over seeds)."""
    ranked = _ranked(runs)
    seeds = sorted({n for _, _, n in ranked})
    over = f"mean over {seeds[0]} seeds" if seeds == [seeds[0]] and seeds[0] > 1 else (
        "one seed each" if seeds == [1] else "mean over the seeds each has")  # fmt: skip
    (top, acc, _), rest = ranked[0], ranked[1:]
    return (f"{family[0].upper()}{family[1:]}: `{top}` ends highest ({pct(acc)}), then "
            + ", ".join(f"`{m}` ({pct(a)})" for m, a, _ in rest) + f" (final test accuracy, {over}).")


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def fitting_sentence(runs: Sequence[Run]) -> str:
    """Which models fit their training data (clean training accuracy at least ``FITS_TRAINING``)."""
    best: dict[str, float] = {}
    for r in runs:
        best[label(r)] = max(best.get(label(r), 0.0), _final_train(r)[0])
    fit = [m for m, v in best.items() if v >= FITS_TRAINING]
    top = max(best, key=best.get)
    if not fit:
        return (f"No model fits its training images (the highest final clean training accuracy is {pct(best[top])}, "
                f"`{top}`'s; fitting counts from {pct(FITS_TRAINING, 0)}): every comparison here is between "
                "models stopped before they learnt what they can, and says how fast they learn, not how far.")
    if len(fit) == len(best):
        return (f"Every model fits its training images (final clean training accuracy of at least "
                f"{pct(FITS_TRAINING, 0)}): the accuracy differences are differences in generalisation.")
    verb = "fits its" if len(fit) == 1 else "fit their"
    return (f"{', '.join(f'`{m}`' for m in fit)} {verb} training images (clean training "
            f"accuracy of at least {pct(FITS_TRAINING, 0)}) and the others do not, so part of each gap "
            "between the two groups is training still under way.")


def verdict_overview(tables: dict[str, pd.DataFrame]) -> str:
    """One Markdown table, a row per claim and a verdict column per family (``tables``: family -> the
    ``verdicts.rankings`` table of that family), with the evidence behind each verdict."""
    tables = {k: t for k, t in tables.items() if len(t)}
    if not tables:
        return ""
    claims = list(dict.fromkeys(c for t in tables.values() for c in t["claim"]))
    head = ["claim", *(f"verdict, {f}" for f in tables), "evidence"]
    rows = []
    for claim in claims:
        cells, evidence = [claim], []
        for family, t in tables.items():
            row = t[t["claim"] == claim]
            cells.append(f"**{row['verdict'].iloc[0]}**" if len(row) else "n/a")
            if len(row):
                short = re.sub(r" \([0-9.]+% level\)| points", "", row["evidence (Holm-adjusted intervals)"].iloc[0])
                evidence.append(f"{family}: {short}")
        rows.append(cells + ["; ".join(evidence)])
    return verdicts.markdown(pd.DataFrame(rows, columns=head), note=False)


def comparison_reading(original: Sequence[Run], controlled: Sequence[Run], labels_of,
                       tables: dict[str, pd.DataFrame] | None = None) -> str:  # fmt: skip
    """The closing section of notebook 05: the verdicts on the original's rankings in one table, then a
    few sentences computed from the runs: the order in each family, what the shortcut and the SE module
    change in the controlled family (and the SE gain of the original models, whose stems differ), and
    whether any model fitted its training data."""
    by = {}
    for r in [*original, *controlled]:
        by.setdefault(label(r), []).append(r)
    families = {name: runs for name, runs in (("the original models", original), ("the controlled family", controlled))
                if runs}  # fmt: skip
    titles = family_titles(families)  # with their profiles where the two differ
    sentences = [ranking_sentence(runs, titles[name]) for name, runs in families.items()]

    def versus(a, b, what):
        if a in by and b in by:
            s = comparison_sentence(by[a], by[b], labels_of(by[a][0]))
            if s:
                sentences.append(f"{what}: {s}")

    versus("plainnet18", "resnet18", "Removing the shortcuts (same skeleton)")
    versus("se_resnet18", "resnet18", "Adding the SE module (same skeleton)")
    versus("seed_senet18", "seed_resnet18", "In the original models, whose SE-ResNet18 also has the CIFAR stem and "
                                            "whose ResNet18 the ImageNet one")  # fmt: skip
    if all(titles[name] == name for name in families):  # one profile: one sentence for all
        sentences.append(fitting_sentence([*original, *controlled]))
    else:  # training images fitted in one profile say nothing of the other's
        sentences += [f"Of {titles[name]}: {_lower_first(fitting_sentence(runs))}" for name, runs in families.items()]
    if targets := targets_sentence([*original, *controlled], labels_of):
        sentences.append(targets)
    table = verdict_overview(tables or {})
    return (table + "\n" if table else "") + "\n".join(f"- {s}" for s in sentences)
