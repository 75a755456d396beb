"""The report's figures: one seaborn style, one colour per model, readable labels, every figure saved as PNG.

Figures go to ``$CNNLIB_FIGURES`` (default ``figures/``) under stable names,
so the README and the HTML report can link them.

This module owns the palette: ``MODEL_COLORS`` gives each registered model a fixed colour, and
``palette(names)`` the colours of the models (or model labels such as 'plain56 (lr0.1x)') a figure shows,
so a model has the same colour in every panel of every notebook.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import to_hex, to_rgb
from matplotlib.ticker import LogFormatter, MaxNLocator
from matplotlib.transforms import offset_copy

from .config import TAGS, label
from .data import CIFAR10, CLASSES
from .paths import figures_root

_DATA = tomllib.loads(Path(__file__).with_name("plots.toml").read_text())
METRICS: dict[str, str] = _DATA["metrics"]  # each history column's axis label
MODEL_COLORS: dict[str, str] = _DATA["models"]  # one colour per registered model (plots.toml: how they were chosen)

# Groups of models (plain against residual nets, as in He et al.'s depth sweep), in the hue of their models.
FAMILY_COLORS: dict[str, str] = {"plain": "#B2182B", "residual": "#2166AC"}

# Names that are neither a registered model nor a label of one: neutral colours, in order of appearance.
OTHER_COLORS = ("#000000", "#7F7F7F", "#BCBD22", "#8C564B", "#17BECF", "#BBBBBB")

# Every label a run can have (config.label: 'plain56', 'plain56 (lr0.1x)'), with its model and variant.
_LABELS: dict[str, tuple[str, str]] = {label(m, t): (m, t) for m in MODEL_COLORS for t in ("", *TAGS)}


def _variant(color: str, tag: str) -> str:
    """A tagged model's colour: its model's colour muted towards grey by 35, 50 or 65% (the share picked by the
    tag, so two variants of one model mostly differ): kin of its model's colour, yet apart from it."""
    share = (0.5, 0.35, 0.65)[sum(tag.encode()) % 3]
    rgb = np.asarray(to_rgb(color))
    return to_hex((1 - share) * rgb + share * np.asarray(to_rgb("#A0A0A0"))).upper()


def model_color(name: str) -> str | None:
    """The fixed colour of a registered model or of a label of one of its variants; None for any other name."""
    model, tag = _LABELS.get(name, (None, ""))
    if model is None:
        return None
    return MODEL_COLORS[model] if not tag else _variant(MODEL_COLORS[model], tag)


def palette(names) -> dict[str, str]:
    """name -> colour for the models (or model labels) of one figure, in the order given (duplicates once):
    pass it as seaborn's ``palette=`` with ``hue="model"``, or look up ``color=`` for matplotlib calls.
    Names of no registered model get neutral colours in their order of appearance."""
    out: dict[str, str] = {}
    others = 0
    for name in dict.fromkeys(names):
        out[name] = model_color(str(name))
        if out[name] is None:
            out[name], others = OTHER_COLORS[others % len(OTHER_COLORS)], others + 1
    return out


def _model_palette(data: pd.DataFrame, hue: str) -> dict[str, str] | None:
    """The palette for a seaborn call colouring ``data`` by ``hue``: the model colours when ``hue`` is the
    model column, else None (seaborn's default colours)."""
    return palette(data[hue].unique()) if hue == "model" and hue in data else None


class PlainLogFormatter(LogFormatter):
    """Tick labels of a log axis as plain numbers (3, 0.5, 20), not 3x10^0: which ticks get a label is
    matplotlib's choice (decades; the ticks between them too when the axis spans little). Numbers below
    ``SMALL`` or from ``LARGE`` up, whose plain form would run to many zeros, read as 1e-12 or 1e7."""

    SMALL, LARGE = 1e-4, 1e7

    def _num_to_string(self, x, vmin, vmax):
        if x != 0 and not self.SMALL <= abs(x) < self.LARGE:
            mantissa, exponent = f"{x:.2g}".split("e")
            return f"{mantissa}e{int(exponent)}"
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


def outlier_limits(y, keep, *, margin: float = 1.5) -> tuple[float, float] | None:
    """The y-limits ``clip_outliers`` sets on a log axis: the range of the points ``keep`` selects, widened by the
    factor ``margin``."""
    y, keep = np.asarray(y, dtype=float), np.asarray(keep, dtype=bool)
    kept = y[keep & np.isfinite(y)]
    return (float(kept.min()) / margin, float(kept.max()) * margin) if len(kept) else None


FIRST_EPOCH_FAR = 3.0  # a loss panel is scaled to epochs 2 on when its first epoch lies this many times above them


def _first_epoch_points(data: pd.DataFrame, hue: str, y: str, by=()) -> pd.DataFrame:
    """The plotted points of a loss panel: the mean over seeds per ``hue`` (and ``by``) and epoch, labelled."""
    keys = [hue, *by, "epoch"]
    m = data.groupby(keys, sort=False)[y].mean().reset_index()
    m["label"] = m[[hue, *by]].astype(str).agg(" ".join, axis=1)
    m["keep"] = m["epoch"] > m["epoch"].min()
    return m


def _far_first_epoch(m: pd.DataFrame, y: str) -> bool:
    rest = m.loc[m["keep"], y]
    return m["epoch"].nunique() >= 3 and bool(len(rest)) and m[y].max() > FIRST_EPOCH_FAR * rest.max()


def clip_first_epoch(axes_data: list[tuple[plt.Axes, pd.DataFrame]], hue: str, y: str, by=()) -> None:
    """Scale loss panels (log axes; several when they share their y axis) to epochs 2 on when the first epoch
    lies far above the rest (``FIRST_EPOCH_FAR``), marking the clipped first-epoch points and their values
    (``clip_outliers``): one blow-up then no longer flattens the curves."""
    points = [(ax, _first_epoch_points(d, hue, y, by)) for ax, d in axes_data if len(d)]
    if not points or not any(_far_first_epoch(m, y) for _, m in points):
        return
    every = pd.concat([m for _, m in points], ignore_index=True)
    limits = outlier_limits(every[y], every["keep"])
    colors = palette(dict.fromkeys(every[hue]))
    for ax, m in points:
        by_label = {lab: colors[h] for lab, h in zip(m["label"], m[hue], strict=True)}
        clip_outliers(ax, m["epoch"], m[y], m["label"], by_label, keep=m["keep"], limits=limits)


def clip_outliers(ax: plt.Axes, x, y, labels, colors, *, keep, margin: float = 1.5,
                  limits: tuple[float, float] | None = None) -> list[int]:  # fmt: skip
    """Scale the (log) y-axis to the points ``keep`` selects (e.g. every epoch but the first), so an outlier does
    not flatten the rest: limits from their minimum and maximum, widened by the factor ``margin``, or ``limits``
    when several axes share them. Each point above the new top is drawn as a triangle at the top edge in its
    colour (``colors[labels[i]]``), and one note in the upper right corner, with an arrow to each x that has
    clipped points, lists their values ('off the axis at epoch 1: plain56 s0: 4.6e+05'). Returns their indices."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    labels, keep = list(labels), np.asarray(keep, dtype=bool)
    if limits is None:
        limits = outlier_limits(y, keep, margin=margin)
        if limits is None:
            return []
    bottom, top = limits
    ax.set_ylim(bottom, top)
    clipped = np.flatnonzero(np.isfinite(y) & (y > top))
    lines = []
    for xv in dict.fromkeys(x[clipped]):
        idx = [i for i in clipped if x[i] == xv]
        for j, i in enumerate(idx):  # side by side at the top edge
            shift = offset_copy(ax.transData, fig=ax.figure, x=7 * (j - (len(idx) - 1) / 2), y=0, units="points")
            ax.plot([xv], [top], marker="^", ms=8, ls="none", color=colors[labels[i]], mec="black", mew=0.6,
                    transform=shift, clip_on=False, zorder=6)  # fmt: skip
        lines += [f"off the axis at epoch {xv:g}:"] + [f"  {labels[i]}: {y[i]:.3g}" for i in idx]
    for k, xv in enumerate(dict.fromkeys(x[clipped])):  # one note, an arrow to each clipped x
        ax.annotate("\n".join(lines) if k == 0 else "", xy=(xv, top), xycoords="data", xytext=(0.97, 0.95),
                    textcoords="axes fraction", ha="right", va="top", multialignment="left", fontsize="x-small",
                    zorder=7,
                    bbox=dict(boxstyle="round,pad=0.3", fc="white", ec="0.6", alpha=0.95) if k == 0 else None,
                    arrowprops=dict(arrowstyle="->", color="0.3", lw=1.0, shrinkB=6))  # fmt: skip
    return [int(i) for i in clipped]


def _finish(fig: plt.Figure, title: str | None) -> plt.Figure:
    """Plain log tick labels (after every axis' scale is set: a shared axis' scale resets its siblings'
    formatters), the title, a tight layout."""
    plain_log_labels(fig)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def use_style() -> None:
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 120, "savefig.bbox": "tight"})


def save(fig: plt.Figure, name: str) -> Path:
    """Save ``fig`` as ``<figures root>/<name>.png`` and return the path."""
    path = figures_root() / f"{name}.png"
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
        sns.lineplot(data=long, x="epoch", y="value", hue=hue, style="split", style_order=["test", "training"],
                     palette=_model_palette(long, hue), errorbar="sd", ax=ax)  # fmt: skip
        if "loss" in train_col:
            ax.set_yscale("log")
            clip_first_epoch([(ax, long)], hue, "value", by=("split",))
        ax.set_ylabel(METRICS[train_col].replace("training ", "").split(" (")[0])
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if i == len(pairs) - 1:
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))
        else:
            ax.get_legend().remove()
    return _finish(fig, title)


def overlay_grid(histories: dict[str, pd.DataFrame], metrics, *, hue: str = "model",
                 title: str | None = None) -> plt.Figure:  # fmt: skip
    """One row per metric, one column per group of models (``histories``: title -> long history), each panel
    the metric for many models (mean over seeds, band = spread); rows share their y axis, loss rows are
    logarithmic (plain tick labels), one legend per column."""
    fig, axes = plt.subplots(len(metrics), len(histories), figsize=(6.5 * len(histories), 3.3 * len(metrics)),
                             sharey="row", squeeze=False)  # fmt: skip
    for col, (group, history) in enumerate(histories.items()):
        for row, metric in enumerate(metrics):
            ax = axes[row, col]
            sns.lineplot(data=history, x="epoch", y=metric, hue=hue, palette=_model_palette(history, hue),
                         errorbar="sd", ax=ax)  # fmt: skip
            ax.set(ylabel=METRICS.get(metric, metric), title=group if row == 0 else "")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if "loss" in metric:
                ax.set_yscale("log")
                if col == len(histories) - 1:  # the row's axes share their limits: scale them once, together
                    clip_first_epoch(list(zip(axes[row], histories.values(), strict=True)), hue, metric)
            if row < len(metrics) - 1:
                ax.set_xlabel("")
            if ax.get_legend() is not None and row > 0:
                ax.get_legend().remove()
            elif ax.get_legend() is not None:
                ax.legend(fontsize="small")
    return _finish(fig, title)


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # a second cue besides the colour, where points of models meet


def accuracy_cost(panels: dict[str, pd.DataFrame], *, title: str = "Accuracy against cost", x: str = "GMACs",
                  xlabel: str = "multiply-adds per image (G)") -> plt.Figure:  # fmt: skip
    """Final test accuracy against multiply-adds per image (or column ``x``; log scale), one panel per table of
    ``pages.accuracy_cost_panels`` (title -> rows), with each run's 95% interval as an error bar, each model
    in its colour and a marker of its own, named in a legend under the panel: labels beside the points
    overlapped where models have about one cost, and read as the neighbouring point's. Panels keep their own
    accuracy axis: they hold different profiles."""
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 if len(panels) == 1 else 6 * len(panels), 4.5),
                             sharex=True, squeeze=False)  # fmt: skip
    for ax, (name, table) in zip(axes[0], panels.items(), strict=True):
        colors = palette(table["model"])
        for i, (_, r) in enumerate(table.iterrows()):
            ax.errorbar(r[x], r["acc"], yerr=[[r["acc"] - r["low"]], [r["high"] - r["acc"]]],
                        fmt=MARKERS[i % len(MARKERS)], ms=7, capsize=3, color=colors[r["model"]],
                        mec="black", mew=0.5, label=r["model"])  # fmt: skip
        ax.set(xscale="log", xlabel=xlabel, title=name)
        ax.set_ylabel("final test accuracy" if ax is axes[0, 0] else "")
        columns = 4 if len(panels) == 1 else 2  # a legend no wider than its panel, apart from its neighbour's
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=min(columns, len(table)), fontsize="small",
                  frameon=False)  # fmt: skip
    return _finish(fig, title)


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
