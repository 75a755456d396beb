"""The report's figures: one seaborn style, readable labels, every figure saved as PNG.

Figures go to ``$CNNLIB_FIGURES`` (default ``figures/``) under stable names,
so the README and the HTML report can link them.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import LogFormatter, MaxNLocator

from .data import CIFAR10, CLASSES
from .paths import figures_root

METRICS = {
    "train_loss": "training loss",
    "test_loss": "test loss",
    "train_acc": "training accuracy",
    "test_acc": "test accuracy",
    "train_err": "training error",
    "test_err": "test error",
    "clean_train_loss": "training loss (clean images, eval mode)",
    "clean_train_acc": "training accuracy (clean images, eval mode)",
    "clean_train_err": "training error (clean images, eval mode)",
}


class PlainLogFormatter(LogFormatter):
    """Tick labels of a log axis as plain numbers (3, 0.5, 20), not 3x10^0: which ticks get a label is
    matplotlib's choice (decades; the ticks between them too when the axis spans little)."""

    def _num_to_string(self, x, vmin, vmax):
        text = f"{x:.3g}"
        return np.format_float_positional(float(text), trim="-") if "e" in text else text


def plain_log_labels(fig_or_axes) -> None:
    """Plain tick labels (``PlainLogFormatter``) on every log-scaled axis of a figure or of some axes. Call it
    after the last ``set_xscale``/``set_yscale``: setting a scale resets the axis' formatters."""
    axes = fig_or_axes.axes if isinstance(fig_or_axes, plt.Figure) else np.ravel([fig_or_axes])
    for ax in axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() == "log":
                axis.set_major_formatter(PlainLogFormatter())
                axis.set_minor_formatter(PlainLogFormatter())


def use_style() -> None:
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 120, "savefig.bbox": "tight"})


def figures_dir() -> Path:
    return figures_root()


def save(fig: plt.Figure, name: str) -> Path:
    """Save ``fig`` as ``<figures_dir>/<name>.png`` and return the path."""
    path = figures_dir() / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def curves(history: pd.DataFrame, *, pairs=(("train_loss", "test_loss"), ("train_acc", "test_acc")),
           hue: str = "model", title: str | None = None) -> plt.Figure:  # fmt: skip
    """One panel per metric pair: test (solid) and training (dashed) per ``hue``, mean over seeds
    with a band for their spread; loss axes are logarithmic, with plain tick labels. The line styles are the study's
    convention in every figure (He et al. 2016, Fig. 6, draw them the same way)."""
    fig, axes = plt.subplots(1, len(pairs), figsize=(6 * len(pairs), 4), squeeze=False)
    for i, (ax, (train_col, test_col)) in enumerate(zip(axes[0], pairs, strict=True)):
        long = history.melt(id_vars=["epoch", hue, "seed"], value_vars=[train_col, test_col],
                            var_name="split", value_name="value")  # fmt: skip
        long["split"] = long["split"].map({train_col: "training", test_col: "test"})
        sns.lineplot(data=long, x="epoch", y="value", hue=hue, style="split",
                     style_order=["test", "training"], errorbar="sd", ax=ax)  # fmt: skip
        if "loss" in train_col:
            ax.set_yscale("log")
        ax.set_ylabel(METRICS[train_col].replace("training ", "").split(" (")[0])
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if i == len(pairs) - 1:
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))
        else:
            ax.get_legend().remove()
    plain_log_labels(fig)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def overlay(history: pd.DataFrame, metric: str = "test_acc", *, hue: str = "model",
            ax: plt.Axes | None = None, title: str | None = None) -> plt.Axes:  # fmt: skip
    """One metric for many models on one axis (mean over seeds, band = spread)."""
    ax = ax or plt.subplots(figsize=(7, 4))[1]
    sns.lineplot(data=history, x="epoch", y=metric, hue=hue, errorbar="sd", ax=ax)
    ax.set_ylabel(METRICS.get(metric, metric))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        ax.set_title(title)
    return ax


def overlay_grid(histories: dict[str, pd.DataFrame], metrics, *, hue: str = "model",
                 title: str | None = None) -> plt.Figure:  # fmt: skip
    """One row per metric, one column per group of models (``histories``: title -> long history);
    rows share their y axis, loss rows are logarithmic (plain tick labels), one legend per column."""
    fig, axes = plt.subplots(len(metrics), len(histories), figsize=(6.5 * len(histories), 3.3 * len(metrics)),
                             sharey="row", squeeze=False)  # fmt: skip
    for col, (group, history) in enumerate(histories.items()):
        for row, metric in enumerate(metrics):
            ax = axes[row, col]
            overlay(history, metric, hue=hue, ax=ax, title=group if row == 0 else None)
            if "loss" in metric:
                ax.set_yscale("log")
            if row < len(metrics) - 1:
                ax.set_xlabel("")
            if ax.get_legend() is not None and row > 0:
                ax.get_legend().remove()
            elif ax.get_legend() is not None:
                ax.legend(fontsize="small")
    plain_log_labels(fig)  # after every row's scale: a shared axis' scale resets its siblings' formatters
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion(cm: pd.DataFrame, *, title: str = "", ax: plt.Axes | None = None) -> plt.Axes:
    """Row-normalised confusion matrix (each row sums to 1)."""
    ax = ax or plt.subplots(figsize=(6.5, 5.5))[1]
    share = cm.div(cm.sum(axis=1), axis=0)
    sns.heatmap(share, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=1, cbar=False,
                annot_kws={"size": 7}, ax=ax)  # fmt: skip
    ax.set_title(title)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    return ax


def samples(data: CIFAR10, per_class: int = 4) -> plt.Figure:
    """The first ``per_class`` training images of each class, one column per class."""
    fig, axes = plt.subplots(per_class, len(CLASSES), figsize=(len(CLASSES) * 1.0, per_class * 1.05))
    y = data.train_y.numpy()
    for c, name in enumerate(CLASSES):
        idx = np.flatnonzero(y == c)[:per_class]
        for j in range(per_class):
            ax = axes[j, c]
            ax.imshow(data.train_x[idx[j]].permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_title(name, fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return fig
