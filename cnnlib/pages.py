"""The sections notebooks 01-04 share: one of the original models next to its controlled counterpart.

Each notebook narrates in Markdown and calls one method per section::

    page = ModelPage("seed_resnet18", "resnet18", PROFILE, SEEDS, name="02_resnet")
    page.origin()         # the profile, and where the runs come from
    page.architecture()   # torchinfo table of the original model
    page.samples()        # the data, with a figure
    page.curves()         # loss and accuracy against epochs
    page.table()          # costs and final numbers
    page.confusion()      # confusion matrices
    page.per_class()      # per-class accuracy, one compact table, with its precision
    page.versus_original()
    page.reading()        # what the curves show, in sentences computed from the runs (Markdown)

Figures are saved under ``<name>_<section>`` (see ``plots.save``).
"""

from __future__ import annotations

from functools import cached_property

import matplotlib.pyplot as plt
import pandas as pd

from . import analysis, findings, plots
from .data import CIFAR10, load_cifar10
from .results import Run
from .runs import get_runs, provenance, resolve_profile

CLEAN_PAIRS = (("clean_train_loss", "test_loss"), ("clean_train_acc", "test_acc"))
RUNNING_PAIRS = (("train_loss", "test_loss"), ("train_acc", "test_acc"))


def caption(text: str) -> None:
    """A figure's one-line caption, in italics under it."""
    from IPython.display import Markdown, display

    display(Markdown(f"*{text}*"))


class ModelPage:
    """The runs of ``original`` and ``ours`` in one profile, and the sections built from them."""

    def __init__(self, original: str, ours: str, profile: str | None = None, seeds=(0,), *, name: str):
        self.original, self.ours, self.name = original, ours, name
        self.models = [original, ours]
        self.seeds = tuple(seeds)
        # Left to choose, the page shows the richest profile holding the original model's runs: its full
        # run is the main result as soon as it lands, and ``ours`` joins when its own run of that profile
        # does (the plan trains the controlled family later); until then ``ours`` is listed as missing.
        self.profile = resolve_profile(profile, [original], self.seeds)
        both = resolve_profile(profile, self.models, self.seeds) == self.profile
        self.runs: list[Run] = (get_runs(self.models, self.profile, self.seeds) if both else
                                get_runs([original], self.profile, self.seeds)
                                + get_runs([ours], self.profile, self.seeds, required=False))  # fmt: skip
        self.missing = [m for m in self.models if not any(r.config.model == m for r in self.runs)]
        self.final: list[Run] = [r for r in self.runs if r.config.seed == self.seeds[0]]
        plots.use_style()

    def origin(self):
        """Markdown: the profile shown, and which machine trained which runs."""
        from IPython.display import Markdown

        text = f"Results shown: profile **{self.profile}**.\n\n" + provenance(self.runs)
        if self.missing:
            names = ", ".join(f"`{m}`" for m in self.missing)
            text += (f"\n\n{names} has no run of this profile yet (the training plan reaches it later: "
                     f"`python -m cnnlib status --profile {self.profile}`); this page shows `{self.original}` "
                     "alone until it lands, and the two are compared then.")
        return Markdown(text)

    @cached_property
    def data(self) -> CIFAR10:
        return load_cifar10()

    def architecture(self, max_lines: int = 50) -> None:
        """Print the torchinfo summary of the original model (output shape and parameters per layer), to
        depth 3, or to depth 2 (whole blocks) where depth 3 would run past ``max_lines`` lines."""
        kwargs = dict(col_names=("output_size", "num_params"), row_settings=("var_names",))
        table = analysis.model_summary(self.original, depth=3, **kwargs)
        if len(table.splitlines()) > max_lines:
            rows = len(table.splitlines())
            table = analysis.model_summary(self.original, depth=2, **kwargs)
            table += (f"\n(blocks shown whole; the layer-by-layer table has {rows} lines: "
                      f"cnnlib.analysis.model_summary({self.original!r}, depth=3))")
        print(table)

    def samples(self) -> None:
        """How many images there are, and the first training images of each class."""
        data = self.data
        print(f"{len(data.train_y):,} training and {len(data.test_y):,} test images, from the {data.source}")
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
        pairs = CLEAN_PAIRS if clean else RUNNING_PAIRS
        what = "training on clean images in eval mode" if clean else "training as running average of augmented batches"
        head = title or " vs ".join(dict.fromkeys(r.config.model for r in runs))
        fig = plots.curves(analysis.long_history(runs), pairs=pairs,
                           title=f"{head} ({analysis.data_note(runs)};\n{what})")  # fmt: skip
        plots.save(fig, f"{self.name}_{suffix}")
        plt.show()
        # the two models of a page come from different families, whose recipes may differ: say so under the curves
        models = dict.fromkeys(r.config.model for r in runs)
        by_model = {m: [r.config for r in runs if r.config.model == m] for m in models}
        caption("Recipe, from the runs' configs. " + analysis.recipe_note(by_model))
        models = " and ".join(f"`{m}`" for m in dict.fromkeys(r.config.model for r in runs))
        caption(f"Loss (log scale) and accuracy after each epoch of {models}: "
                f"test solid, training dashed ({what}); {analysis.data_note(runs)}. A first-epoch loss far above "
                "the rest lies off the axis, marked at its top edge with its value.")

    def table(self) -> pd.DataFrame:
        return analysis.summary_table(self.runs)

    def confusion(self) -> None:
        """Row-normalised confusion matrices of the final models on their test images."""
        fig, axes = plt.subplots(1, len(self.final), figsize=(6.5 * len(self.final), 5.5), squeeze=False)
        for ax, run in zip(axes[0], self.final, strict=True):
            cm = analysis.confusion_matrix(run.predictions, analysis.test_labels(self.data, run))
            plots.confusion(cm, title=run.config.model, ax=ax)
        fig.suptitle(f"Confusion on the test images ({analysis.data_note(self.final)})")
        fig.tight_layout()
        plots.save(fig, f"{self.name}_confusion")
        plt.show()
        n = len(analysis.test_labels(self.data, self.final[0]))
        caption(f"For each true class (row), the share of its test images ({n:,} in all) given each predicted class "
                "(column) by the final model; the diagonal is the per-class accuracy.")

    def per_class(self) -> pd.DataFrame:
        """Per-class test accuracy (%) of the final models, after a line on how precise each entry is."""
        from IPython.display import Markdown, display

        display(Markdown(analysis.per_class_note(self.final, self.data)))
        return analysis.per_class_table(self.final, self.data)

    @cached_property
    def full_original(self) -> Run | None:
        """A full-protocol run of the original model, when the page shows another profile and one is stored."""
        if self.profile == "full":
            return None
        stored = get_runs([self.original], "full", required=False)  # only a run of today's full recipe
        return stored[0] if stored else None

    def versus_original(self) -> pd.DataFrame:
        """The original report's accuracy next to ours (and next to a stored full-protocol run)."""
        shown = list(self.final) + ([self.full_original] if self.full_original is not None else [])
        return analysis.versus_original(shown)

    def reading(self):
        """Markdown: what the curves show, computed from the runs (``findings.page_reading``)."""
        from IPython.display import Markdown

        def group(model):
            return [r for r in self.runs if r.config.model == model]

        return Markdown(findings.page_reading(group(self.original), group(self.ours),
                                              lambda r: analysis.test_labels(self.data, r),
                                              full_original=self.full_original))  # fmt: skip
