"""The palette: one fixed colour per model, the same in every panel of every figure."""

import itertools
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import to_hex, to_rgb  # noqa: E402

from cnnlib import plots  # noqa: E402
from cnnlib.models import FAMILIES  # noqa: E402

# notebooks 01-04: each original model next to its controlled twin
PAGES = (("seed_cnn", "plainnet18"), ("seed_resnet18", "resnet18"), ("seed_densenet", "densenet121"),
         ("seed_senet18", "se_resnet18"))  # fmt: skip


def lab(color: str) -> np.ndarray:
    """CIELAB (D65) of an sRGB colour, for perceptual distances."""
    c = np.asarray(to_rgb(color))
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ c
    t = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_every_registered_model_has_its_own_colour():
    # the study's models (tests may register models of their own; they get the neutral colours)
    assert set(plots.MODEL_COLORS) == {m for family in FAMILIES.values() for m in family}
    assert len({c.upper() for c in plots.MODEL_COLORS.values()}) == len(plots.MODEL_COLORS)
    for color in plots.MODEL_COLORS.values():
        to_rgb(color)  # a valid matplotlib colour


def distance(a: str, b: str) -> float:
    return float(np.linalg.norm(lab(plots.MODEL_COLORS[a]) - lab(plots.MODEL_COLORS[b])))


def hue(color: str) -> float:
    return float(np.degrees(np.arctan2(lab(color)[2], lab(color)[1])) % 360)


def test_models_shown_together_are_far_apart():
    """Each family shares figures: every two of their colours differ clearly (CIELAB distance), and each is
    visible on a white background; notebook 05 shows the original models and the controlled family together."""
    for names in (*FAMILIES.values(), FAMILIES["seed"] + FAMILIES["controlled"]):
        for a, b in itertools.combinations(names, 2):
            assert distance(a, b) > 15, (a, b, distance(a, b))
    assert all(lab(c)[0] < 85 for c in plots.MODEL_COLORS.values())


def test_each_original_model_and_its_counterpart_differ_in_hue_not_only_in_shade():
    """Notebooks 01-04 draw each original model beside its controlled counterpart: two shades of one hue (sky
    blue and blue) read as one model in the solid lines; the pair differs in hue and far in CIELAB."""
    for a, b in PAGES:
        apart = abs(hue(plots.MODEL_COLORS[a]) - hue(plots.MODEL_COLORS[b]))
        assert distance(a, b) > 50 and min(apart, 360 - apart) > 30, (a, b, distance(a, b), apart)


def test_palette_of_a_list_is_a_dict_in_the_order_given():
    names = ["resnet56", "plain20", "resnet56", "densenet121"]
    pal = plots.palette(names)
    assert list(pal) == ["resnet56", "plain20", "densenet121"]
    assert pal == {n: plots.MODEL_COLORS[n] for n in pal}
    assert plots.palette(pd.Series(names)) == pal == plots.palette(n for n in names)
    assert plots.palette(["plain20", "resnet56"])["resnet56"] == pal["resnet56"]  # fixed, whatever else is shown


def test_tagged_labels_get_a_fixed_colour_of_their_own():
    tagged = plots.palette(["plain56", "plain56 (lr0.1x)", "plain56 (lr0.4_wd0.0005)", "se_resnet18 (lr0.1x)"])
    assert len(set(tagged.values())) == 4 and tagged["plain56 (lr0.1x)"] != tagged["plain56"]
    assert tagged == plots.palette(reversed(tagged))  # fixed, whatever else is shown
    assert tagged["plain56 (lr0.1x)"] not in {c.upper() for c in plots.MODEL_COLORS.values()}
    degradation = [plots.MODEL_COLORS[m] for m in FAMILIES["degradation"]]  # the figures it is shown in
    assert min(np.linalg.norm(lab(tagged["plain56 (lr0.1x)"]) - lab(c)) for c in degradation) > 15


def test_other_names_get_neutral_colours_apart_from_the_models():
    pal = plots.palette(["resnet20", "tiny", "other"])
    assert pal["resnet20"] == plots.MODEL_COLORS["resnet20"]
    assert pal["tiny"] != pal["other"]
    assert not {pal["tiny"], pal["other"]} & set(plots.MODEL_COLORS.values())


def history(models, epochs=3) -> pd.DataFrame:
    rows = [{"epoch": e, "model": m, "seed": 0, "train_loss": 1 / e, "test_loss": 1.2 / e, "train_acc": 0.1 * e,
             "test_acc": 0.08 * e} for m in models for e in range(1, epochs + 1)]  # fmt: skip
    return pd.DataFrame(rows)


def legend_colors(ax) -> dict[str, str]:
    legend = ax.get_legend()
    pairs = zip(legend.texts, legend.legend_handles, strict=True)
    return {text.get_text(): to_hex(handle.get_color()).upper() for text, handle in pairs}


def test_a_model_has_the_same_colour_in_every_panel():
    fig = plots.overlay_grid({"left": history(["seed_densenet", "resnet18", "densenet121"]),
                              "right": history(["densenet121", "plain20"])}, ["train_acc", "test_loss"])  # fmt: skip
    left, right = (legend_colors(ax) for ax in fig.axes[:2])
    assert left["densenet121"] == right["densenet121"] == plots.MODEL_COLORS["densenet121"]
    assert left == {m: plots.MODEL_COLORS[m] for m in ("seed_densenet", "resnet18", "densenet121")}
    plt.close(fig)

    fig = plots.curves(history(["plain56", "resnet56"]))
    colors = legend_colors(fig.axes[-1])
    assert colors["plain56"] == plots.MODEL_COLORS["plain56"] and colors["resnet56"] == plots.MODEL_COLORS["resnet56"]
    plt.close(fig)


def _history(first_test_loss: float) -> pd.DataFrame:
    rows = [{"epoch": e, "model": m, "seed": 0, "train_loss": 2.0 / e, "train_acc": 0.2 * e, "test_acc": 0.2 * e,
             "test_loss": first_test_loss if e == 1 else 2.2 / e} for m in ("plain20", "resnet20")
            for e in (1, 2, 3, 4)]
    return pd.DataFrame(rows)


def test_a_first_epoch_blow_up_does_not_flatten_the_loss_panel():
    fig = plots.curves(_history(460.0))
    loss_ax = fig.axes[0]
    bottom, top = loss_ax.get_ylim()
    assert (bottom, top) == (0.5 / 1.5, 1.1 * 1.5)  # scaled to epochs 2-4 (losses 0.5-1.1), widened by 1.5
    notes = [t.get_text() for t in loss_ax.texts if t.get_text()]
    assert len(notes) == 1 and notes[0].startswith("off the axis at epoch 1:")
    assert "plain20 test: 460" in notes[0] and "resnet20 training: 2" in notes[0]  # 2.0 lies above 1.65 too
    plt.close(fig)
    calm = plots.curves(_history(2.3))  # no first epoch far above the rest: matplotlib's limits, no note
    assert calm.axes[0].get_ylim()[1] > 2.2 and not [t for t in calm.axes[0].texts if t.get_text()]
    plt.close(calm)


def test_loss_rows_of_a_grid_clip_together():
    h = _history(460.0)
    fig = plots.overlay_grid({"a": h[h["model"] == "plain20"], "b": h[h["model"] == "resnet20"]}, ["test_loss"])
    (ax_a, ax_b) = fig.axes
    assert ax_a.get_ylim() == ax_b.get_ylim() and ax_a.get_ylim()[1] < 10
    assert all(any("off the axis" in t.get_text() for t in ax.texts) for ax in (ax_a, ax_b))
    plt.close(fig)


def test_accuracy_against_cost_gives_each_panel_its_title_and_names_the_models_in_a_legend():
    table = pd.DataFrame({"model": ["plainnet18", "resnet18", "densenet121"], "GMACs": [0.549, 0.555, 0.888],
                          "acc": [0.30, 0.31, 0.5], "low": [0.25, 0.26, 0.45], "high": [0.35, 0.36, 0.55]})
    fig = plots.accuracy_cost({"left (profile 'full')": table, "right (profile 'cpu')": table.iloc[:1]})
    left, right = fig.axes
    assert [left.get_title(), right.get_title()] == ["left (profile 'full')", "right (profile 'cpu')"]
    assert left.get_xscale() == "log" and left.get_ylabel() == "final test accuracy" and right.get_ylabel() == ""
    # named in a legend, not beside the points (labels of nets of one cost overlapped, and sat by the wrong point)
    assert not left.texts and [t.get_text() for t in left.get_legend().get_texts()] == list(table["model"])
    points = [c.lines[0] for c in left.containers]  # each errorbar's data line
    assert [c.get_label() for c in left.containers] == list(table["model"])
    assert [to_hex(p.get_color()).upper() for p in points] == [plots.MODEL_COLORS[m] for m in table["model"]]
    assert len({p.get_marker() for p in points}) == 3  # a marker of its own, besides the colour
    fig.canvas.draw()  # the legend sits under the panel, clear of the points and of the other panel
    legend, frame = left.get_legend().get_window_extent(), left.get_window_extent()
    assert legend.y1 < frame.y0 and legend.x1 < right.get_window_extent().x0
    plt.close(fig)


def test_clip_outliers_scales_the_axis_on_the_rest_and_marks_the_clipped_point():
    fig, ax = plt.subplots()
    x, y = [1, 2, 3, 1, 2, 3], [4.6e5, 55.0, 2.1, 2.5, 2.0, 1.6]
    labels = ["plain56 s0"] * 3 + ["plain20 s0"] * 3
    ax.plot(x[:3], y[:3])
    ax.set_yscale("log")
    colors = {"plain56 s0": plots.MODEL_COLORS["plain56"], "plain20 s0": plots.MODEL_COLORS["plain20"]}
    clipped = plots.clip_outliers(ax, x, y, labels, colors, keep=np.array(x) >= 2, margin=1.5)
    assert clipped == [0]
    low, high = ax.get_ylim()
    assert math.isclose(high, 55.0 * 1.5) and math.isclose(low, 1.6 / 1.5)
    notes = [t.get_text() for t in ax.texts if t.get_text()]
    assert notes == ["off the axis at epoch 1:\n  plain56 s0: 4.6e+05"]
    plt.close(fig)


def test_plain_log_labels_keep_tiny_numbers_short():
    f = plots.PlainLogFormatter()
    assert f._num_to_string(0.5, 0.1, 1) == "0.5" and f._num_to_string(20, 1, 100) == "20"
    assert f._num_to_string(1e-12, 1e-13, 1e-2) == "1e-12" and f._num_to_string(1e-3, 1e-4, 1) == "0.001"
