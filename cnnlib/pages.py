"""The numbers notebooks 01-05 read, and the sections notebooks 01-04 share.

Each model notebook narrates in Markdown and calls one ``ModelPage`` method per section (``origin``,
``architecture``, ``samples``, ``curves``, ``table``, ``confusion``, ``per_class``, ``versus_original``, and
``reading``: the notebook's closing text, ``templates/<nn>_reading.md``, with the runs' numbers).

The claims the texts rest on are verdict frames (``render``'s columns): ``run_claims`` (a run against the original
report's accuracy, against the study's target, and whether it fits its training images) and ``pair_claim`` (one
model's final test accuracy against another's). ``facts`` gives a run's plain numbers. Figures are saved under
``<name>_<section>`` (see ``plots.save``).
"""

from __future__ import annotations

import math
from functools import cached_property
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import analysis, plots, recipe, render, stats, verdicts
from .analysis import ORIGINAL_ACCURACY, TARGET_ACCURACY, model_costs
from .config import RECIPE_CHECKS, RECIPE_SETTINGS, make_config
from .constants import FITS_TRAINING, TIE_MARGIN
from .data import CIFAR10, load_cifar10
from .results import Run
from .runs import get_runs, provenance_groups, resolve_profile, step_times, stored

CLEAN_PAIRS = (("clean_train_loss", "test_loss"), ("clean_train_acc", "test_acc"))
RUNNING_PAIRS = (("train_loss", "test_loss"), ("train_acc", "test_acc"))


# --- numbers and claims -------------------------------------------------------------------------------------------

def _claim(cid: str, claim: str, a: str, b: str, quantity: str, iv, ref: float, method: str = "binomial") -> dict:
    """A verdict row for 'a's measured fraction (an interval ``iv``) is above ``ref``'."""
    low, high = iv.low - ref, iv.high - ref
    return dict(id=cid, claim=claim, a=a, b=b, quantity=quantity, estimate=iv.estimate - ref, low=low, high=high,
                level=iv.confidence, n=iv.n, unit="points", method=method, verdict=stats.verdict(low, high))


def _accuracy(runs: list[Run], labels: np.ndarray, column: str) -> tuple[stats.Interval, str]:
    """One model's final ``column`` ("test_acc" or "clean_train_acc") with a 95% interval and its method: the
    t-interval across seeds where there are several, else the exact binomial interval over the images one network
    scored (the test images, or the clean training images its history was measured on)."""
    if len(runs) > 1:
        values = [verdicts.final(r, column) for r in runs]
        return stats.seed_interval(values, bounds=verdicts.UNIT), "t"
    (run,) = runs
    if column == "test_acc":
        return stats.accuracy_interval(run.predictions, labels), "binomial"
    n = run.config.n_clean()
    return stats.binomial_interval(round(verdicts.final(run, column) * n), n), "binomial"


def _seeds_of(runs: list[Run]) -> list[Run]:
    runs = list(runs)
    if not runs or len({r.config.model for r in runs}) != 1:
        raise ValueError("a model's runs are needed: one or more seeds of a single model")
    return runs


def facts(runs: list[Run], labels: np.ndarray) -> SimpleNamespace:
    """One model's numbers for a text, over its seeds (``runs``: one or more): final test accuracy (the mean over
    the seeds) with its 95% interval (acc, low, high: ``_accuracy``), clean training accuracy (the mean), how many
    seeds and which, epochs, peak lr, parameters, multiply-adds per image (G), target and original accuracy."""
    runs = _seeds_of(runs)
    run, (iv, _) = runs[0], _accuracy(runs, labels, "test_acc")
    costs = model_costs(run.config.model)
    return SimpleNamespace(model=run.config.label, acc=iv.estimate, low=iv.low, high=iv.high,
                           clean=float(np.mean([verdicts.final(r, "clean_train_acc") for r in runs])),
                           seeds=len(runs), seed_numbers=sorted(r.config.seed for r in runs),
                           epochs=len(run.history), lr=run.config.lr, params=costs["params"],
                           gmacs=costs["macs"] / 1e9, target=TARGET_ACCURACY.get(run.config.model, math.nan),
                           original=ORIGINAL_ACCURACY.get(run.config.model, math.nan))  # fmt: skip


def run_claims(runs: list[Run], labels: np.ndarray) -> list[dict]:
    """One model's claims, over its seeds (``runs``: one or more; intervals by ``_accuracy``): ``original.<m>`` (ours
    ends above the original report's accuracy), ``targets.<m>`` (it reaches the accuracy the study expects of its
    architecture under the full profile; "not testable in this regime" in another profile) and ``fits.<m>`` (its
    clean training accuracy is above ``FITS_TRAINING``)."""
    runs = _seeds_of(runs)
    run = runs[0]
    m, (iv, how) = run.config.model, _accuracy(runs, labels, "test_acc")
    original, target = ORIGINAL_ACCURACY.get(m), TARGET_ACCURACY.get(m)
    rows = []
    if original is not None:
        rows.append(_claim(f"original.{m}", f"ours ends above the original report's {render.pct(original, 0)}", m,
                           "original report", "test accuracy", iv, original, how))  # fmt: skip
    if target is not None:
        row = _claim(f"targets.{m}", f"it reaches {render.pct(target)}, the accuracy the study expects of it", m,
                     "target", "test accuracy", iv, target, how)  # fmt: skip
        if run.config.profile != "full" or run.config.tag:
            row["verdict"] = verdicts.NOT_IN_REGIME
        rows.append(row)
    if all("clean_train_acc" in r.history for r in runs):  # of the clean training images scored after each epoch
        clean, how = _accuracy(runs, labels, "clean_train_acc")
        rows.append(_claim(f"fits.{m}", f"it fits its training images (clean training accuracy above "
                                        f"{render.pct(FITS_TRAINING, 0)})", m, "", "clean training accuracy", clean,
                           FITS_TRAINING, how))  # fmt: skip
    return rows


def recipe_checks() -> SimpleNamespace:
    """The recipe checks as notebook 05 shows them (``templates/05_checks.md``, ``render.check_table``): ``checks``,
    each check of ``config.RECIPE_CHECKS`` by name (its nets; its table, ``recipe.table``, a row per setting; how many
    of its runs are still to train and how many it has in all; its recorded choice, None until recorded; ``pending``:
    while the choice waits for its families' seed 0 to train again at it (``recipe.retraining``), the choice, with
    ``retrain_left`` of ``retrain_runs`` runs still to train and ``earlier``, the settings of the runs it replaces;
    else None), and the ``tune`` profile they train in (epochs, training and held-out images)."""
    checks = {}
    for check in RECIPE_CHECKS:
        df, nets = recipe.table(check=check), recipe.nets(check)
        again = recipe.retraining(check)
        pending = recipe.choice(df, check) if again else None
        earlier = sorted({recipe.variant_of(r.config) for r in recipe.earlier_runs(pending, check)}) if again else []
        checks[check] = SimpleNamespace(name=check, nets=nets, table=df, to_train=recipe.still_to_train(df, check),
                                        runs=len(df) * len(nets), chosen=recipe.recorded(check), pending=pending,
                                        retrain_left=len(recipe.to_retrain(check)), retrain_runs=len(again),
                                        earlier=[RECIPE_SETTINGS[t] for t in earlier])  # fmt: skip
    tune = make_config(recipe.nets()[0], "tune", 0)
    n_train, n_held = tune.n_images()
    return SimpleNamespace(checks=checks, epochs=tune.epochs, images=n_train, held_out=n_held)


def pair_claim(a: list[Run], b: list[Run], labels: np.ndarray, *, tie: bool = False) -> dict:
    """``comparison.<a>-<b>``: model a ends above model b in final test accuracy (``verdicts.compare``: across seeds
    where both have several, else paired over the test images); with ``tie``, the two end within ``TIE_MARGIN``."""
    c = verdicts.compare({r.config.seed: r for r in a}, {r.config.seed: r for r in b}, verdicts.final_test_acc,
                         labels=labels)  # fmt: skip
    method, n = verdicts.method_of(c, labels)
    na, nb = a[0].config.label, b[0].config.label
    claim, verdict = f"{na} ends above {nb}", stats.verdict(c["low"], c["high"])
    if tie:
        claim = f"{na} and {nb} end tied (their difference inside the tie margin)"
        verdict = stats.tie_verdict(c["low"], c["high"], TIE_MARGIN)
    return dict(id=f"comparison.{na}-{nb}", claim=claim, a=na, b=nb, quantity="test accuracy", estimate=c["estimate"],
                low=c["low"], high=c["high"], level=c["confidence"] if method != "none" else math.nan, n=n,
                unit="points", method=method, verdict=verdict)  # fmt: skip


def claims_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(render.VERDICT_COLUMNS))


# the original report's names of the three architectures it ranks, in each family (``verdicts.rankings``)
RANKED = {"original": {"SE-ResNet": "seed_senet18", "DenseNet": "seed_densenet", "ResNet": "seed_resnet18"},
          "controlled": {"SE-ResNet": "se_resnet18", "DenseNet": "densenet121", "ResNet": "resnet18"}}
# what notebook 05 compares one change at a time, (a, b, whether a tie is the claim): the shortcut and the SE module
# on one skeleton, and the original's SE-ResNet18 against its ResNet18 (whose stems also differ)
PAIRS = (("plainnet18", "resnet18", True), ("se_resnet18", "resnet18", False), ("seed_senet18", "seed_resnet18", False))


def comparison(original: list[Run], controlled: list[Run], data: CIFAR10) -> SimpleNamespace:
    """Notebook 05's numbers, from the runs of the original models and of the controlled family: ``rankings`` (a
    verdict frame per family), ``pairs`` (``pair_claim`` of each of ``PAIRS``), ``runs`` (``run_claims`` of each
    model, over its seeds) and ``f`` (``facts`` of each model, over its seeds)."""
    families = {"original": original, "controlled": controlled}
    runs = [r for rs in families.values() for r in rs]
    timed = step_times()
    by = {m: list(seeds.values()) for m, seeds in analysis.by_model(runs).items()}

    def labels(r):
        return analysis.test_labels(data, r)

    return SimpleNamespace(
        rankings=[verdicts.rankings(rs, RANKED[name], labels(rs[0]), family=name, step_times=timed and timed[0])
                  for name, rs in families.items()],  # fmt: skip
        pairs=claims_frame([pair_claim(by[a], by[b], labels(by[a][0]), tie=tie) for a, b, tie in PAIRS
                            if a in by and b in by]),
        runs=claims_frame([row for rs in by.values() for row in run_claims(rs, labels(rs[0]))]),
        f={m: facts(rs, labels(rs[0])) for m, rs in by.items()})


def accuracy_cost_panels(families: dict[str, list[Run]], data: CIFAR10) -> dict[str, pd.DataFrame]:
    """The panels of notebook 05's accuracy-against-cost figure (title -> ``analysis.accuracy_cost`` table): one for
    all families when they share a profile, else one per family, titled with its profile and data, so that no axis
    mixes runs of different profiles."""
    if len(set(analysis.family_profiles(families).values())) <= 1:
        everything = [r for runs in families.values() for r in runs]
        return {render.data_note(analysis.data_groups(everything)): analysis.accuracy_cost(everything, data)}
    return {render.note("panel_title", name, analysis.data_groups(runs)): analysis.accuracy_cost(runs, data)
            for name, runs in families.items() if runs}  # fmt: skip


# --- the model pages ----------------------------------------------------------------------------------------------

def caption(text: str) -> None:
    """A figure's one-line caption, in italics under it."""
    from IPython.display import Markdown, display

    display(Markdown(f"*{text}*"))


class ModelPage:
    """The runs of ``original`` and ``ours`` in one profile, and the sections built from them.

    ``seeds``: the first is the page's own (the original model's run of it is required; the confusion matrices and
    per-class table show it); each model adds the others it has stored (silently: the origin line lists every run
    shown), and its numbers, claims and curves are over all its seeds. The two models compare across seeds once each
    has two or more, else on the first seed (``pair_claim``)."""

    def __init__(self, original: str, ours: str, profile: str | None = None, seeds=(0,), *, name: str):
        self.original, self.ours, self.name = original, ours, name
        self.models = [original, ours]
        self.seeds = tuple(seeds)
        first, more = self.seeds[:1], self.seeds[1:]
        # Left to choose, the page shows the richest profile holding the original model's run: its full
        # run is the main result as soon as it lands, and ``ours`` joins when its own run of that profile
        # does (the plan trains the controlled family later); until then ``ours`` is listed as missing.
        self.profile = resolve_profile(profile, [original], first)
        both = resolve_profile(profile, self.models, first) == self.profile
        shown = self.models if both else [original]  # ``ours`` without its first-seed run here is missing
        self.runs: list[Run] = [r for m in shown for r in get_runs([m], self.profile, first)
                                + [stored(make_config(m, self.profile, s)) for s in more] if r is not None]
        self.by_model: dict[str, list[Run]] = {m: [r for r in self.runs if r.config.model == m] for m in self.models}
        self.missing = [m for m, rs in self.by_model.items() if not rs]
        self.final: list[Run] = [r for r in self.runs if r.config.seed == self.seeds[0]]
        plots.use_style()

    def origin(self):
        """Markdown: the profile shown, and which machine trained which runs."""
        from IPython.display import Markdown

        return Markdown(render.note("origin", self.profile, provenance_groups(self.runs), self.missing))

    @cached_property
    def data(self) -> CIFAR10:
        return load_cifar10()

    def labels(self, run: Run) -> np.ndarray:
        return analysis.test_labels(self.data, run)

    def architecture(self, max_lines: int = 50) -> None:
        """Print the torchinfo summary of the original model (output shape and parameters per layer), to
        depth 3, or to depth 2 (whole blocks) where depth 3 would run past ``max_lines`` lines."""
        kwargs = dict(col_names=("output_size", "num_params"), row_settings=("var_names",))
        table = analysis.model_summary(self.original, depth=3, **kwargs)
        if len(table.splitlines()) > max_lines:
            table = analysis.model_summary(self.original, depth=2, **kwargs)
            table += "\n" + render.note("blocks_whole", self.original)
        print(table)

    def samples(self) -> None:
        """How many images there are, and the first training images of each class."""
        data = self.data
        print(render.note("images", len(data.train_y), len(data.test_y), data.source))
        fig = plots.samples(data)
        plots.save(fig, "samples")
        plt.show()
        caption("The first training images of each class, one row per class, at their 32x32 pixels.")

    def curves(self, runs: list[Run] | None = None, *, suffix: str = "curves", title: str | None = None) -> None:
        """Loss and accuracy per epoch, test solid and training dashed. The training curves are the
        clean ones (eval mode, unaugmented images: comparable with the test curves) when every run
        recorded them, else the running averages over the augmented batches, and the title says which."""
        runs = self.runs if runs is None else runs
        clean = all("clean_train_acc" in r.history for r in runs)
        models = list(dict.fromkeys(r.config.model for r in runs))
        title = render.note("curves_title", title or " vs ".join(models), analysis.data_groups(runs), clean)
        fig = plots.curves(analysis.long_history(runs), pairs=CLEAN_PAIRS if clean else RUNNING_PAIRS, title=title)
        plots.save(fig, f"{self.name}_{suffix}")
        plt.show()
        several = len({(r.config.model, r.config.seed) for r in runs}) > len(models)
        caption(render.note("curves_caption", models, clean, several))

    def table(self) -> pd.DataFrame:
        return render.summary_table(analysis.summary_table(self.runs))

    def confusion(self) -> None:
        """Row-normalised confusion matrices of the final models on their test images."""
        fig, axes = plt.subplots(1, len(self.final), figsize=(6.5 * len(self.final), 5.5), squeeze=False)
        for ax, run in zip(axes[0], self.final, strict=True):
            cm = analysis.confusion_matrix(run.predictions, self.labels(run))
            plots.confusion(cm, title=run.config.model, ax=ax)
        fig.suptitle(render.note("confusion_title", analysis.data_groups(self.final)))
        fig.tight_layout()
        plots.save(fig, f"{self.name}_confusion")
        plt.show()

    def per_class(self) -> pd.DataFrame:
        """Per-class test accuracy (%) of the final models."""
        return analysis.per_class_table(self.final, self.data)

    def per_class_precision(self):
        """Markdown: how many test images each per-class entry rests on, and how wide its interval is
        (``templates/01_per_class.md``; notebook 01 says it, the others link to it)."""
        from IPython.display import Markdown

        n, half = analysis.per_class_precision(self.final, self.data)
        return Markdown(render.template("01_per_class", n=n, half=half))

    @cached_property
    def full_original(self) -> Run | None:
        """A full-protocol run of the original model, when the page shows another profile and one is stored."""
        if self.profile == "full":
            return None
        stored = get_runs([self.original], "full", required=False)  # only a run of today's full recipe
        return stored[0] if stored else None

    def versus_original(self):
        """Markdown: ours against the original report's accuracy with a 95% interval (``original.<m>``, over the
        page's seeds of the original model), and the same for a stored full-protocol run where the page shows
        another profile."""
        from IPython.display import Markdown

        shown = [rs for m, rs in self.by_model.items() if m in ORIGINAL_ACCURACY and rs]
        shown += [[self.full_original]] if self.full_original is not None else []
        rows = [row for rs in shown for row in run_claims(rs, self.labels(rs[0])) if row["id"].startswith("original.")]
        return Markdown(render.verdict_table(claims_frame(rows)))

    def claims(self) -> pd.DataFrame:
        """The page's verdict frame: each model's ``run_claims`` and ``comparison.<ours>-<original>``."""
        shown = [rs for rs in self.by_model.values() if rs]
        rows = [row for rs in shown for row in run_claims(rs, self.labels(rs[0]))]
        if not self.missing:
            rows.append(pair_claim(self.by_model[self.ours], self.by_model[self.original], self.labels(self.final[0])))
        return claims_frame(rows)

    def reading(self):
        """Markdown: the notebook's closing text (``templates/<nn>_reading.md``), written for its stored runs, with
        every number filled from them; under a warning where a presumed verdict has moved."""
        from IPython.display import Markdown

        if self.missing:
            return Markdown(render.note("reading_waits", self.missing, self.profile))
        f = {m: facts(rs, self.labels(rs[0])) for m, rs in self.by_model.items()}
        return Markdown(render.template(f"{self.name[:2]}_reading", render.claims(self.claims()), f=f,
                                        profile=self.profile))  # fmt: skip
