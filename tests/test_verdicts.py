"""Interval-backed verdicts on the original report's claims, on runs whose answer is known."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cnnlib import render, verdicts
from cnnlib.config import make_config
from cnnlib.results import Run


def fake_run(model, seed, clean_acc, test_acc, tmp: Path | None = None, preds=None, epochs=3,
             device="CPU: test", blocks: pd.DataFrame | None = None,
             lesion_random: pd.DataFrame | None = None) -> Run:  # fmt: skip
    h = pd.DataFrame({"epoch": range(1, epochs + 1), "train_acc": np.linspace(0.1, clean_acc, epochs),
                      "clean_train_acc": np.linspace(0.1, clean_acc, epochs),
                      "test_acc": np.linspace(0.1, test_acc, epochs)})  # fmt: skip
    path = (tmp or Path("/nonexistent")) / f"{model}-{seed}"
    for name, table in (("gradients_blocks.csv", blocks), ("lesion_random.csv", lesion_random)):
        if table is not None:
            path.mkdir(parents=True, exist_ok=True)
            table.to_csv(path / name, index=False)
    meta = {"device_name": device, "final": {"seconds_per_epoch": 1.0}}
    preds = np.zeros(10, dtype=np.uint8) if preds is None else preds
    return Run(make_config(model, "smoke", seed), h, preds, meta, path)


def family(accs: dict[str, list[float]], test_gap: float = 0.0) -> list[Run]:
    return [fake_run(m, s, a, a - test_gap) for m, vals in accs.items() for s, a in enumerate(vals)]


def test_degradation_that_shortcuts_remove_is_confirmed():
    runs = family({"plain20": [0.80, 0.81, 0.79], "plain56": [0.60, 0.62, 0.61],
                   "resnet20": [0.82, 0.83, 0.81], "resnet56": [0.85, 0.86, 0.84]})  # fmt: skip
    t = verdicts.degradation(runs)
    assert tuple(t.columns[:13]) == render.VERDICT_COLUMNS
    assert list(t["id"]) == ["degradation.plain", "degradation.residual", "degradation.diff"]
    assert list(t["verdict"]) == ["confirmed", "refuted", "confirmed"]
    assert t["estimate"].iloc[0] == pytest.approx(0.19) and t["low"].iloc[0] < 0.19 < t["high"].iloc[0]
    assert t["estimate"].iloc[2] == pytest.approx(0.19 + 0.03)  # (plain56 − plain20) − (resnet56 − resnet20)
    assert list(t["method"]) == ["welch", "welch", "welch contrast"] and (t["n"] == 3).all()
    assert sorted(t["level"]) == pytest.approx([0.95, 0.975, 1 - 0.05 / 3])  # Holm's steps across the three


def test_degradation_in_both_families_confirms_both_rows():
    runs = family({"plain20": [0.80, 0.81, 0.79], "plain56": [0.60, 0.62, 0.61],
                   "resnet20": [0.82, 0.83, 0.81], "resnet56": [0.70, 0.71, 0.69]})  # fmt: skip
    t = verdicts.degradation(runs).set_index("id")
    assert t.loc["degradation.residual", "verdict"] == "confirmed"


def test_degradation_at_a_recipe_variant_reads_that_variants_runs_only():
    accs = {"plain20": [0.80, 0.81, 0.79], "plain56": [0.60, 0.62, 0.61],
            "resnet20": [0.82, 0.83, 0.81], "resnet56": [0.85, 0.86, 0.84]}  # fmt: skip
    low = [Run(make_config(r.config.model, "smoke", r.config.seed, tag="lr0.4_wd0.0005"), r.history, r.predictions,
               r.meta, r.path) for r in family(accs)]  # fmt: skip
    base = verdicts.degradation(family(accs))
    t = verdicts.degradation(low + family({m: [0.1] * 3 for m in accs}), tag="lr0.4_wd0.0005")
    assert list(t["id"]) == [f"{i}@lr0.4_wd0.0005" for i in base["id"]]
    assert t["estimate"].to_numpy() == pytest.approx(base["estimate"].to_numpy())  # the untagged runs pool in nowhere
    assert list(t["verdict"]) == list(base["verdict"]) and t["a"].iloc[0] == "plain56"
    assert (t["quantity"] == "clean training error at peak lr 0.4 and weight decay 0.0005").all()
    assert verdicts.degradation(low).empty  # untagged, the variant's runs are not the family's


def test_one_seed_gives_no_interval():
    runs = family({"plain20": [0.8], "plain56": [0.6], "resnet20": [0.8], "resnet56": [0.8]})
    t = verdicts.degradation(runs)
    assert (t["verdict"] == verdicts.CANNOT_TELL_ONE_NET).all() and (t["method"] == "none").all()
    assert t["low"].isna().all() and t["level"].isna().all() and (t["n"] == 1).all()
    fits = family({"plain20": [0.92], "plain56": [0.86]})
    row = verdicts.overfitting(fits).iloc[0]
    assert row["verdict"] == "cannot tell"


def test_overfitting_is_not_tested_while_no_model_fits_its_training_data():
    runs = family({"plain20": [0.50, 0.52, 0.51], "plain56": [0.40, 0.41, 0.42]}, test_gap=0.01)
    row = verdicts.overfitting(runs).iloc[0]
    assert row["verdict"] == verdicts.NOT_IN_REGIME and row["fit"] == pytest.approx(0.51)
    runs = family({"plain20": [0.90, 0.92, 0.91], "plain56": [0.70, 0.71, 0.72]}, test_gap=0.2)
    row = verdicts.overfitting(runs).iloc[0]
    assert row["id"] == "overfitting.plain" and (row["a"], row["b"]) == ("plain56", "plain20")
    assert row["verdict"] == "refuted" and row["estimate"] == pytest.approx(0.20)  # degradation, not overfitting
    assert row["test_estimate"] == pytest.approx(0.20) and row["test_low"] < 0.2 < row["test_high"]


def test_overfitting_is_not_testable_until_the_shallow_net_fits_its_training_data():
    # a wide train-test gap and a deeper net that fits worse, as in the stored pilot runs: before, "refuted"
    runs = family({"plain20": [0.50, 0.52, 0.51], "plain56": [0.25, 0.26, 0.27]}, test_gap=0.08)
    row = verdicts.overfitting(runs).iloc[0]
    assert row["verdict"] == "not testable in this regime" == verdicts.NOT_IN_REGIME
    assert row["fits"] == verdicts.FITS_TRAINING == 0.90
    assert verdicts.overfitting(runs, fits=0.5).iloc[0]["verdict"] == "refuted"  # the threshold is the only gate


def test_rankings_use_paired_test_images_for_one_seed_and_never_rank_cpu_times():
    labels = np.arange(1000) % 10
    right, wrong = labels.copy(), (labels + 1) % 10
    se = np.where(np.arange(1000) < 900, right, wrong)  # 90% right
    res = np.where(np.arange(1000) < 500, right, wrong)  # 50%
    i = np.arange(1000)
    dense = np.where((i < 495) | ((i >= 500) & (i < 505)), right, wrong)  # 50%, on other images
    runs = [fake_run("se_resnet18", 0, 0.9, 0.9, preds=se), fake_run("resnet18", 0, 0.5, 0.5, preds=res),
            fake_run("densenet121", 0, 0.5, 0.5, preds=dense)]  # fmt: skip
    names = {"SE-ResNet": "se_resnet18", "DenseNet": "densenet121", "ResNet": "resnet18"}
    t = verdicts.rankings(runs, names, labels, family="controlled").set_index("id")
    assert list(t.index) == ["ranking.controlled.1", "ranking.controlled.2", "ranking.controlled.3"]
    # SE-ResNet far ahead; ResNet vs DenseNet: equal, inside the stated ±1-point margin, so the tie is confirmed;
    # from one seed per model the interval is paired over the test images (these trained networks only)
    acc = t.loc["ranking.controlled.1"]
    assert acc["verdict"] == "confirmed" and acc["method"] == "paired bootstrap" and acc["n"] == 1000
    pairs = {(p["a"], p["b"]): p for p in acc["pairs"]}
    assert pairs["se_resnet18", "resnet18"]["estimate"] == pytest.approx(0.4)
    assert pairs["resnet18", "densenet121"]["claimed"] == "≈" and pairs["resnet18", "densenet121"]["estimate"] == 0
    # the three accuracy pairs and the three convergence pairs are one Holm family; only the first three are tested
    assert sorted(p["level"] for p in acc["pairs"]) == pytest.approx([0.95, 0.975, 1 - 0.05 / 3])
    conv = t.loc["ranking.controlled.2"]
    assert conv["verdict"] == "cannot tell" and conv["method"] == "none"  # no interval for one seed
    assert all(np.isnan(p["low"]) for p in conv["pairs"])
    time = t.loc["ranking.controlled.3"]
    assert time["verdict"] == "cannot tell" and time["method"] == "untimed"
    assert time["cost"]["densenet121"] > time["cost"]["resnet18"] > 0  # the multiply-adds, machine-independent
    assert set(t["method"]) <= set(render.METHODS)
    assert "seed_resnet18 − seed_densenet" not in render.ranking_table(t.reset_index())
    assert render.ranking_table(t.reset_index()).count("\n") == 2 + 3 + 3 + 1  # a line per pair, one for time


def test_a_reversed_ranking_is_refuted():
    labels = np.arange(1000) % 10
    wrong = (labels + 1) % 10
    good = np.where(np.arange(1000) < 900, labels, wrong)
    bad = np.where(np.arange(1000) < 300, labels, wrong)
    runs = [fake_run("se_resnet18", 0, 0.3, 0.3, preds=bad), fake_run("resnet18", 0, 0.9, 0.9, preds=good),
            fake_run("densenet121", 0, 0.9, 0.9, preds=good)]  # fmt: skip
    names = {"SE-ResNet": "se_resnet18", "DenseNet": "densenet121", "ResNet": "resnet18"}
    row = verdicts.rankings(runs, names, labels, family="controlled").iloc[0]
    assert row["verdict"] == "refuted" and (row["a"], row["b"]) == ("se_resnet18", "resnet18")  # the deciding pair
    assert row["high"] < 0 and row["estimate"] == pytest.approx(-0.6)

def blocks(ratio: float) -> pd.DataFrame:
    rows = []
    for point, step in (("step 0", 0), ("epoch 3", 60)):
        r = ratio if step else 1.0
        for i, (name, v) in enumerate([("stem", 5.0), ("layer1.0", r), ("layer3.2", 1.0), ("head", 2.0)]):
            rows.append({"point": point, "step": step, "block": name, "index": i, "per_image": v})
    return pd.DataFrame(rows)


def test_vanishing_gradients_are_read_off_the_block_signal_across_seeds(tmp_path):
    runs = [fake_run("plain56", s, 0.5, 0.5, tmp_path, blocks=blocks(10 ** (-3 + 0.1 * s))) for s in range(3)]
    runs += [fake_run("resnet56", s, 0.5, 0.5, tmp_path, blocks=blocks(0.8 + 0.05 * s)) for s in range(3)]
    runs += [fake_run("plain44", s, 0.5, 0.5, tmp_path, blocks=blocks(10 ** (3.5 + 0.1 * s))) for s in range(3)]
    runs += [fake_run("resnet44", s, 0.5, 0.5, tmp_path, blocks=blocks(10 ** (0.5 * s))) for s in range(3)]
    table = verdicts.vanishing_gradients(runs, "plain56", "resnet56", "plain44", "resnet44")
    t = table.set_index("id")
    assert len(t) == 8 and (t["unit"] == "log10").all() and (t["method"] == "t").all()
    assert t.loc["gradients.plain56.last", "verdict"] == "vanishes"
    assert t.loc["gradients.plain44.last", "verdict"] == "grows"  # ~3,000x larger at the input
    assert t.loc["gradients.resnet56.last", "verdict"] == "neither"
    assert t.loc["gradients.plain56.step0", "verdict"] == "neither"
    assert t.loc["gradients.resnet44.last", "verdict"] == "cannot tell"  # log10 0, 0.5, 1: spans +1
    assert t["level"].max() > 0.99  # Holm-adjusted across the 8 rows
    # the per-seed values, and the growth per block the mean amounts to (two body blocks: one step between them)
    assert t.loc["gradients.plain44.last", "per_seed"] == pytest.approx([3.5, 3.6, 3.7])
    assert t.loc["gradients.plain44.last", "per_block"] == pytest.approx(10 ** 3.6)
    assert t.loc["gradients.plain44.last", "point"] == "epoch 3" and t.loc["gradients.plain44.last", "step"] == 60


def test_a_variant_gets_an_id_of_its_own():
    assert verdicts._id("plain56 (lr0.1x)") == "plain56-lr0.1x" and verdicts._id("plain56") == "plain56"


def test_the_signal_at_initialisation_reads_as_during_training():
    ratios = pd.DataFrame({"model": "plain56", "batchnorm": ["with BN"] * 4 + ["without BN"] * 4,
                           "init_seed": list(range(4)) * 2, "blocks": 27,
                           "log10_first_last": [3.6, 3.7, 3.8, 3.9, -0.5, -0.6, -0.7, -0.4]})  # fmt: skip
    t = verdicts.signal_at_init(ratios).set_index("id")
    assert list(t.index) == ["init.plain56.bn", "init.plain56.nobn"]
    assert t.loc["init.plain56.bn", "verdict"] == "grows" and t.loc["init.plain56.nobn", "verdict"] == "neither"
    assert t.loc["init.plain56.bn", "estimate"] == pytest.approx(3.75) and (t["n"] == 4).all()
    assert (t["method"] == "t inits").all()


@pytest.mark.parametrize(
    "low, high, expected",
    [(-3.2, -1.5, "vanishes"), (2.8, 4.2, "grows"), (-0.6, 0.4, "neither"), (0.7, 1.5, "cannot tell"),
     (-1.2, -0.5, "cannot tell"), (3.47, 3.47, "grows"), (float("nan"), float("nan"), "cannot tell")],
)  # fmt: skip
def test_gradient_outcome_has_three_outcomes_and_stated_thresholds(low, high, expected):
    assert verdicts.GRADIENT_THRESHOLD == 1.0
    assert verdicts.gradient_outcome(low, high) == expected


@pytest.mark.parametrize("missing", ["plain20", "resnet56"])
def test_missing_models_give_an_empty_table(missing):
    accs = {m: [0.5] for m in ("plain20", "plain56", "resnet20", "resnet56") if m != missing}
    assert verdicts.degradation(family(accs)).empty


def steps(seconds: dict[str, dict[str, float]], rounds: int = 6, jitter: float = 0.02) -> pd.DataFrame:
    """Timed steps as ``runs.step_times`` reads them: model -> setting -> typical seconds, a spread around it."""
    wobble = 1 + jitter * np.linspace(-1, 1, rounds)
    return pd.DataFrame([dict(model=m, setting=s, round=r, seconds=t * wobble[r])
                         for m, by in seconds.items() for s, t in by.items() for r in range(rounds)])  # fmt: skip


NAMES = {"SE-ResNet": "se_resnet18", "DenseNet": "densenet121", "ResNet": "resnet18"}


def test_training_time_is_ranked_from_each_models_fastest_setting_with_holm_intervals():
    from cnnlib import analysis

    timed = steps({"densenet121": {"fp32": 9.0, "bf16+cl": 3.0}, "se_resnet18": {"fp32": 4.0, "bf16+cl": 1.5},
                   "resnet18": {"fp32": 1.2, "bf16+cl": 1.4}})  # resnet18 trains fastest in fp32 here
    row = verdicts.training_time(timed, NAMES, "controlled")
    assert row["id"] == "ranking.controlled.3" and row["verdict"] == "confirmed" and row["unit"] == "ratio"
    pairs = {(p["a"], p["b"]): p for p in row["pairs"]}
    assert list(pairs) == [("densenet121", "se_resnet18"), ("densenet121", "resnet18"), ("se_resnet18", "resnet18")]
    assert pairs["densenet121", "resnet18"]["estimate"] == pytest.approx(3.0 / 1.2, rel=1e-3)
    assert pairs["se_resnet18", "resnet18"]["estimate"] == pytest.approx(1.5 / 1.2, rel=1e-3)
    assert all(p["low"] > 1 and p["n"] == 6 and p["method"] == "steps" for p in row["pairs"])
    assert sorted(p["level"] for p in row["pairs"]) == pytest.approx([0.95, 0.975, 1 - 0.05 / 3])
    table = analysis.step_time_table(timed, batch=128)
    assert list(table["fastest"]) == ["bf16+cl", "bf16+cl", "fp32"]
    assert table.loc["resnet18", "images/s"] == round(128 / 1.2)
    assert "1.25 [" in render.ranking_table(pd.DataFrame([row]))  # a ratio, unsigned


def test_training_time_refuted_by_a_reversed_order_and_untold_without_timings():
    row = verdicts.training_time(steps({"densenet121": {"fp32": 1.0}, "se_resnet18": {"fp32": 2.0},
                                        "resnet18": {"fp32": 3.0}}), NAMES, "original")  # fmt: skip
    assert row["verdict"] == "refuted" and row["high"] < 1 and (row["a"], row["b"]) == ("densenet121", "se_resnet18")
    close = steps({"densenet121": {"fp32": 1.01}, "se_resnet18": {"fp32": 1.0}, "resnet18": {"fp32": 0.5}}, jitter=0.2)
    assert verdicts.training_time(close, NAMES, "original")["verdict"] == "cannot tell"
    untimed = verdicts.training_time(None, NAMES, "original")
    assert untimed["verdict"] == "cannot tell" and untimed["method"] == "untimed"
    assert untimed["cost"]["densenet121"] > untimed["cost"]["resnet18"] > 0  # the multiply-adds, machine-independent
    assert "step_rates.py --store" in render.settle(untimed)


def test_chance_and_the_thresholds_have_one_home():
    import inspect

    from cnnlib import analysis, constants, stats
    from cnnlib.data import CLASSES

    assert constants.CHANCE == 1 / len(CLASSES) and constants.CHANCE_LOSS == pytest.approx(np.log(10))
    # every module that reads a threshold reads the one in constants (the same object, not a copy)
    for name in ("CHANCE", "NEAR_CHANCE", "ALPHA", "TIE_MARGIN", "GRADIENT_THRESHOLD", "FITS_TRAINING",
                 "CHANCE_LOSS", "EXPLOSION_FACTOR"):  # fmt: skip
        for module in (analysis, stats, verdicts):
            if hasattr(module, name):
                assert getattr(module, name) is getattr(constants, name), (module.__name__, name)
    # analysis.near_chance and the verdicts' floor use the one margin
    assert inspect.signature(analysis.near_chance).parameters["within"].default is constants.NEAR_CHANCE
    stuck = fake_run("resnet18", 1, constants.CHANCE + constants.NEAR_CHANCE, 0.10)
    stuck.history["train_loss"] = [4.0, 2.5, 2.3]
    assert analysis.near_chance([stuck])["run"].tolist() == ["resnet18-smoke-s1"]
    assert verdicts._near_chance([constants.CHANCE + constants.NEAR_CHANCE])
    assert not verdicts._near_chance([constants.CHANCE + constants.NEAR_CHANCE + 0.001])


def lesion_table(intact: float, left: list[float], k: int = 1) -> pd.DataFrame:
    """A lesion_random table: the accuracy left after each random draw of k deletions."""
    return pd.DataFrame({"k": k, "draw": range(len(left)), "blocks": "layer1.0", "accuracy": left, "intact": intact})


def lesioned(tmp, model, seeds, intact, left) -> list[Run]:
    return [fake_run(model, s, 0.5, 0.5, tmp, lesion_random=lesion_table(intact + 0.01 * s, left)) for s in seeds]


def one_lesion(runs, k=1) -> dict:
    t = verdicts.lesion_verdicts(runs, (("resnet56", "plain56"),), (k,))
    return t.iloc[0].to_dict() if len(t) else {}


def test_lesions_of_one_network_per_architecture_say_so(tmp_path):
    runs = lesioned(tmp_path, "resnet56", [0], 0.60, [0.55, 0.56, 0.57, 0.54, 0.58])
    runs += lesioned(tmp_path, "plain56", [0], 0.55, [0.30, 0.32, 0.28, 0.35, 0.31])
    row = one_lesion(runs)
    assert row["id"] == "lesions.plain56-resnet56.k1" and (row["a"], row["b"]) == ("plain56", "resnet56")
    assert row["verdict"] == "cannot tell (one network per architecture)" == verdicts.CANNOT_TELL_ONE_NET
    assert row["within"] == "confirmed" and row["method"] == "draws" and row["n"] == 5
    assert (row["n_plain"], row["n_residual"]) == (1, 1)
    assert row["estimate"] == pytest.approx(0.198)  # (55 - 31.2) - (60 - 56) points


def test_lesions_replicate_over_trained_networks_when_several_store_tables(tmp_path):
    runs = lesioned(tmp_path, "resnet56", [0, 1, 2], 0.60, [0.55, 0.56, 0.57, 0.54, 0.58])
    runs += lesioned(tmp_path, "plain56", [0, 1, 2], 0.55, [0.30, 0.32, 0.28, 0.35, 0.31])
    row = one_lesion(runs)
    assert row["verdict"] == "confirmed" and row["within"] == "" and row["method"] == "welch" and row["n"] == 3
    assert row["plain_intact"] == pytest.approx(0.56) and row["plain_left"] == pytest.approx(0.312)


def test_a_lesion_interval_over_two_networks_stays_within_what_their_intact_accuracies_allow(tmp_path):
    # two networks a side: about one degree of freedom, so the raw Welch interval runs past +100 points; a
    # deletion costs a net at most its intact accuracy (86%) and gains the other at most 100% - 90%
    runs = (lesioned(tmp_path, "plain56", [0], 0.85, [0.15] * 5) + lesioned(tmp_path, "plain56", [1], 0.85, [0.25] * 5)
            + lesioned(tmp_path, "resnet56", [0, 1], 0.90, [0.88] * 5))  # fmt: skip
    row = one_lesion(runs)
    assert row["n"] == 2 and row["estimate"] == pytest.approx(0.63) and row["high"] == pytest.approx(0.96)


def test_a_lesion_comparison_with_both_sides_near_chance_cannot_tell(tmp_path):
    runs = lesioned(tmp_path, "resnet56", [0, 1, 2], 0.37, [0.13, 0.14, 0.12, 0.12, 0.14])  # left at 13.0%
    runs += lesioned(tmp_path, "plain56", [0, 1, 2], 0.22, [0.11, 0.12, 0.10, 0.13, 0.12])  # left at 11.6%
    row = one_lesion(runs)
    assert row["verdict"] == "cannot tell (floor)" == verdicts.CANNOT_TELL_FLOOR
    assert row["floor"] == ("plain56", "resnet56")
    assert row["plain_left"] == pytest.approx(0.116) and row["residual_left"] == pytest.approx(0.13)
    assert one_lesion(runs, k=5) == {}  # no table with k = 5


def test_degradation_compares_losses_of_fit_only_above_the_floor():
    runs = family({"plain20": [0.40, 0.41, 0.39], "plain56": [0.12, 0.13, 0.11],
                   "resnet20": [0.50, 0.51, 0.49], "resnet56": [0.55, 0.56, 0.54]})  # fmt: skip
    t = verdicts.degradation(runs)
    assert list(t["verdict"]) == ["confirmed", "refuted", "cannot tell (floor)"]
    assert t["floor"].iloc[2] == ("plain56",)
    assert t["level"].iloc[2] == 0.95 and t["level"].iloc[:2].max() == 0.975  # Holm over the 2 tested claims


def test_a_net_left_at_chance_alone_lets_the_verdict_stand_in_the_one_direction_the_floor_cannot_fake(tmp_path):
    # the plain net collapses to chance, the residual net keeps most of its accuracy (Veit et al.)
    runs = lesioned(tmp_path, "resnet56", [0, 1, 2], 0.80, [0.70, 0.72, 0.71, 0.69, 0.73])
    runs += lesioned(tmp_path, "plain56", [0, 1, 2], 0.78, [0.10, 0.11, 0.10, 0.12, 0.10])
    row = one_lesion(runs)
    assert row["verdict"] == "confirmed" and row["floor"] == ("plain56",) and row["stands_despite"] == "plain56"
    # one network per architecture: the architectures stay untold, these two networks are confirmed
    one = one_lesion([r for r in runs if r.config.seed == 0])
    assert one["verdict"] == verdicts.CANNOT_TELL_ONE_NET and one["within"] == "confirmed"
    # the residual net at chance and the plain one not: a refutation stands, a confirmation could be the floor's
    runs = lesioned(tmp_path, "resnet56", [0, 1, 2], 0.60, [0.11, 0.12, 0.10, 0.13, 0.12])
    refuting = runs + lesioned(tmp_path, "plain56", [0, 1, 2], 0.80, [0.40, 0.42, 0.41, 0.39, 0.43])
    assert one_lesion(refuting)["verdict"] == "refuted"
    row = one_lesion(runs + lesioned(tmp_path, "plain56", [0, 1, 2], 0.80, [0.20, 0.22, 0.21, 0.19, 0.2]))
    assert row["verdict"] == verdicts.CANNOT_TELL_FLOOR and row["floor"] == ("resnet56",)
    assert row["stands_despite"] == ""
    # a net at chance before any deletion never compares
    runs = lesioned(tmp_path, "resnet56", [0, 1, 2], 0.80, [0.70, 0.72, 0.71, 0.69, 0.73])
    runs += lesioned(tmp_path, "plain56", [0, 1, 2], 0.13, [0.10, 0.11, 0.10, 0.12, 0.10])
    assert one_lesion(runs)["verdict"] == verdicts.CANNOT_TELL_FLOOR


def test_the_depth_sweep_reads_depth_and_kind_from_the_registry_not_the_name():
    from torch import nn

    from cnnlib.models import register

    @register(depth=9, connections="residual")
    def plain_named_test_net9(*, num_classes: int = 10) -> nn.Module:  # a name that says the opposite
        return nn.Linear(3, num_classes)

    runs = family({"plain20": [0.80, 0.81], "resnet56": [0.85, 0.86], "plain_named_test_net9": [0.7, 0.71]})
    runs.append(fake_run("plain56", 0, 0.5, 0.5))
    runs[-1] = Run(make_config("plain56", "smoke", 0, tag="lr0.1x"), runs[-1].history, runs[-1].predictions,
                   runs[-1].meta, runs[-1].path)  # a variant: its label 'plain56 (lr0.1x)' holds other digits
    sweep = verdicts.depth_sweep(runs)
    kinds = set(zip(sweep["family"], sweep["depth"], strict=True))
    assert kinds == {("plain", 20), ("residual", 56), ("residual", 9), ("plain", 56)}

def _shattering_tables(plain: list[float], residual: list[float], depth: int = 56) -> list[pd.DataFrame]:
    return [pd.DataFrame({"depth": depth, "net": ["plain", "residual"], "lag1_autocorrelation": [p, r],
                          "lag4_autocorrelation": 0.0}) for p, r in zip(plain, residual, strict=True)]


def test_shattering_over_many_initialisations_stays_within_the_bounds_of_a_correlation():
    rng = np.random.default_rng(0)
    plain = np.clip(rng.normal(0.6, 0.35, 20), -0.9, 0.99).tolist()  # widely spread, as at depth 56
    residual = (0.988 + 0.004 * rng.random(20)).tolist()
    row = verdicts.shattering(_shattering_tables(plain, residual)).set_index("id").loc["shattering.d56"]
    assert row["n"] == 20 and row["method"] == "fisher z" and row["unit"] == "z"
    assert row["verdict"] == "confirmed" and row["low"] > 0  # the interval on Fisher's z separates the two nets
    assert row["residual_higher"] == sum(r > p for p, r in zip(plain, residual, strict=True))
    for net in ("plain", "residual"):  # every bound a correlation can take
        assert -1 <= row[f"{net}_low"] <= row[f"{net}_r"] <= row[f"{net}_high"] <= 1
    assert row["r_difference"] == pytest.approx(np.mean(residual) - np.mean(plain))


def test_shattering_that_goes_either_way_cannot_tell_and_a_plain_net_always_smoother_is_refuted():
    mixed = verdicts.shattering(_shattering_tables([0.95, 0.99, 0.97, 0.995], [0.99, 0.97, 0.98, 0.985])).iloc[0]
    assert mixed["verdict"] == "cannot tell" and mixed["residual_higher"] == 2
    smoother = verdicts.shattering(_shattering_tables([0.99, 0.995, 0.992, 0.993], [0.5, 0.6, 0.55, 0.52]))
    assert smoother["verdict"].iloc[0] == "refuted"
    # a trace that is a straight line has r = 1: Fisher's z stays finite (if far out, which widens the interval)
    edge = verdicts.shattering(_shattering_tables([0.2, 0.3, 0.25], [1.0, 0.99, 0.995])).iloc[0]
    assert np.isfinite(edge["low"]) and np.isfinite(edge["high"])


def _paths(decay: float) -> pd.DataFrame:
    """A 9-block net's gradient through one path of each measured length, falling ``decay``-fold per length."""
    lengths = [0, 3, 6, 9]
    return pd.DataFrame({"length": lengths, "grad_norm": [decay ** -k for k in lengths], "grad_std": 0.0})


def test_path_shares_weight_each_length_by_its_number_of_paths():
    paths = pd.DataFrame({"length": [0, 1, 2], "grad_norm": [1.0, 1.0, 1.0], "grad_std": 0.0})
    share = verdicts.path_shares(paths, 2)  # C(2, k) = 1, 2, 1
    assert np.allclose(share["gradient share"], [0.25, 0.5, 0.25]) and share["cumulative share"].iloc[-1] == 1


def test_path_readings_take_every_trained_network_and_test_the_share_against_one_half():
    # C(9, k) = 1, 84, 84, 1 for the lengths 0, 3, 6, 9; the typical path has 4-5 branches, shorter ones <= 3
    readings = verdicts.path_readings({0: _paths(2.5), 1: _paths(3), 2: _paths(3.5)}, 9)
    assert readings["seed"].tolist() == [0, 1, 2] and readings["peak length"].tolist() == [3, 3, 3]
    w = np.array([1, 84 / 3**3, 84 / 3**6, 1 / 3**9])
    assert readings.loc[1, "share shorter than typical"] == pytest.approx(w[:2].sum() / w.sum())
    v = verdicts.path_verdict(readings, 9).iloc[0]
    assert v["id"] == "paths.short" and v["short"] == 3 and v["paths_short"] == pytest.approx((1 + 9 + 36 + 84) / 512)
    assert v["n"] == 3 and 0.5 < v["low"] < v["estimate"] < v["high"] < 1 and v["verdict"] == "confirmed"
    assert v["peaks"] == [3, 3, 3] and render.interval(v).endswith("%") and "+" not in render.interval(v)


def test_one_network_gives_no_interval_and_long_paths_refute_the_claim():
    one = verdicts.path_readings({0: _paths(10)}, 9)
    assert verdicts.path_verdict(one, 9)["verdict"].iloc[0] == verdicts.CANNOT_TELL_ONE_NET
    long = verdicts.path_readings({s: _paths(d) for s, d in enumerate((0.1, 0.12, 0.09))}, 9)
    assert verdicts.path_verdict(long, 9)["verdict"].iloc[0] == "refuted"


def _slices(model: str, seed: int, at: float, far: float) -> pd.DataFrame:
    alpha = np.linspace(-1, 1, 9)
    return pd.DataFrame({"alpha": alpha, "loss": at + (far - at) * alpha**2, "model": model, "seed": seed})


def test_landscape_readings_over_several_networks_give_an_interval_per_claim():
    one_d = pd.concat([_slices("plain56", 0, 0.44, 3.28), _slices("plain56", 1, 0.54, 3.63),
                       _slices("plain56", 2, 0.51, 4.17), _slices("resnet56", 0, 0.16, 2.87),
                       _slices("resnet56", 1, 0.16, 3.13), _slices("resnet56", 2, 0.16, 3.07)])  # fmt: skip
    readings = verdicts.landscape_readings(one_d)
    assert readings.loc[("plain56", 1), "loss at θ"] == pytest.approx(0.54)
    assert readings.loc[("resnet56", 0), "rise to α = ±1"] == pytest.approx(2.71)
    assert readings.loc[("plain56", 0), "loss at α = ±0.5 (mean)"] == pytest.approx(0.44 + 2.84 / 4)
    table = verdicts.landscape_verdicts(readings).set_index("id")
    assert table.loc["landscape.loss", "verdict"] == "confirmed"  # 0.16 in every resnet56 against 0.44-0.54
    assert table.loc["landscape.loss", "estimate"] == pytest.approx(0.16 - (0.44 + 0.54 + 0.51) / 3)
    # rises of 2.71-2.97 against 2.84-3.66: three networks do not separate them
    assert table.loc["landscape.rise", "verdict"] == "cannot tell" and (table["n"] == 3).all()
    single = verdicts.landscape_verdicts(readings.loc[[("plain56", 0), ("resnet56", 0)]])
    assert set(single["verdict"]) == {verdicts.CANNOT_TELL_ONE_NET}


def test_line_readings_take_only_lines_with_recomputed_statistics_and_measure_the_barrier(tmp_path):
    t = np.linspace(0, 1, 5)
    bump, falls, old = (fake_run("resnet56", 2, 0.9, 0.9, tmp_path), fake_run("plain56", 2, 0.9, 0.9, tmp_path),
                        fake_run("plain20", 0, 0.9, 0.9, tmp_path))  # fmt: skip
    for run, loss, bn in ((bump, [2.3, 1.5, 1.8, 0.4, 0.2], True), (falls, [2.4, 2.0, 1.1, 0.6, 0.5], True),
                          (old, [2.3, 2.3, 2.3, 2.3, 0.3], False)):  # fmt: skip
        run.path.mkdir(parents=True)
        table = pd.DataFrame({"t": t, "loss": loss, "accuracy": np.linspace(0.1, 0.95, 5)})
        table = table.assign(bn="recomputed") if bn else table  # no column: statistics interpolated (older runs)
        table.iloc[::-1].to_csv(run.path / "interpolation.csv", index=False)  # read in the order of t
    readings = verdicts.line_readings([bump, falls, old])
    assert list(readings.index) == [("resnet56", 2), ("plain56", 2)]
    assert readings.loc[("resnet56", 2), "barrier"] == pytest.approx(0.3)  # 1.5, then up to 1.8
    assert readings.loc[("resnet56", 2), "rising steps"] == 1 and readings.loc[("plain56", 2), "barrier"] == 0
    # half the fall: 1.25 first reached at t = 0.75 past the bump; 1.45 at t = 0.5
    assert readings["halfway t"].tolist() == [0.75, 0.5]
    # chance left where the accuracy (0.1 to 0.95 in even steps) first exceeds 0.2: at t = 0.25
    assert readings["leaves chance at t"].tolist() == [0.25, 0.25] and readings["depth"].tolist() == [56, 56]
    assert readings.loc[("plain56", 2)][["loss at the initial weights", "loss at the trained weights",
                                         "accuracy at the trained weights", "points"]].tolist() == [2.4, 0.5, 0.95, 5]
    assert verdicts.line_readings([old]).empty
    (bump.path / "interpolation.csv").write_text("t,loss,accuracy,bn\n0,2.3,0.1,recomputed\n1,2.4,0.2,recomputed\n")
    flat = verdicts.line_readings([bump]).iloc[0]
    assert math.isnan(flat["halfway t"]) and math.isnan(flat["leaves chance at t"])  # no fall; never above 0.2


def test_the_explosion_detector_finds_an_exploded_run_and_not_a_healthy_one():
    blown = fake_run("plain56", 0, 0.5, 0.5)
    blown.history["test_loss"] = [4.6e5, 55.0, 2.1]
    healthy = fake_run("plain20", 0, 0.5, 0.5)
    healthy.history["test_loss"] = [2.5, 2.0, 1.6]
    edge = fake_run("resnet56", 1, 0.5, 0.5)
    edge.history["test_loss"] = [10.6, 2.1, 1.4]  # high, but under 10 x ln 10 = 23.0
    table = verdicts.explosions([healthy, blown, edge])
    assert list(table["run"]) == ["plain56-smoke-s0"]
    assert table["epoch 1"].iloc[0] == 4.6e5 and table["epoch 2"].iloc[0] == 55.0
    assert math.isclose(table.attrs["threshold"], 10 * math.log(10)) and table.attrs["checked"] == 3
    assert list(verdicts.explosions([edge], factor=4)["run"]) == ["resnet56-smoke-s1"]  # the threshold is the gate


def committed_claims() -> dict:
    """The claims notebooks 06 and 07 show, computed as they compute them, from the committed runs and tables."""
    from cnnlib import at_init, mechanisms
    from cnnlib.models import FAMILIES, create_model
    from cnnlib.plan import LR_CONTROL
    from cnnlib.runs import get_runs, resolve_profile

    deg = list(FAMILIES["degradation"])
    profile = resolve_profile(None, deg)
    runs = get_runs(deg, profile, (0,)) + get_runs(deg, profile, (1, 2), required=False)
    low = get_runs(deg, profile, (0, 1, 2), tag=LR_CONTROL)  # the same test at peak lr 0.4, as its seeds land
    n_blocks = len(mechanisms.residual_blocks(create_model("resnet56")))
    paths = {r.config.seed: r.table("path_gradients") for r in runs if r.config.model == "resnet56"}
    one_d = pd.concat([r.table("surface_1d").assign(model=r.config.model, seed=r.config.seed) for r in runs
                       if r.config.model in ("plain56", "resnet56")], ignore_index=True)  # fmt: skip
    init = at_init.backward_profiles(deg, images=256, inits=10)
    ctrl_models = list(FAMILIES["controlled"])
    ctrl = get_runs(ctrl_models, resolve_profile(None, ctrl_models), (0,))
    if _data_present():  # the 18-layer tie is read over the test images, whose labels come with the data
        from cnnlib import analysis
        from cnnlib.data import load_cifar10

        tie = verdicts.shortcut_tie(ctrl, analysis.test_labels(load_cifar10(), ctrl[0]))
    else:
        tie = pd.DataFrame()
    return render.claims(
        tie, verdicts.controlled_training(ctrl),
        verdicts.degradation(runs), verdicts.degradation(low, tag=LR_CONTROL), verdicts.overfitting(runs),
        verdicts.vanishing_gradients(runs),
        verdicts.signal_at_init(at_init.signal_ratios(init)), verdicts.lesion_verdicts(runs),
        verdicts.path_verdict(verdicts.path_readings(paths, n_blocks), n_blocks),
        verdicts.landscape_verdicts(verdicts.landscape_readings(one_d)),
        verdicts.shattering(at_init.shattering_tables(depths=(8, 20, 56), points=256, seeds=range(20))))


def test_the_texts_of_notebooks_06_and_07_were_written_for_the_verdicts_of_the_committed_runs():
    v = committed_claims()
    names = sorted(p.stem for p in render.TEMPLATES.glob("0[67]_*.md") if p.stem != "06_controlled")
    assert {"06_closing", "07_closing"} <= set(names)
    if "controlled.shortcuts" not in v:  # no data here: the texts that presume the 18-layer tie are not checked
        names = [n for n in names if "controlled.shortcuts" not in render.presumes(n)]
    for name in names:
        assert render.stale(name, v) == [], f"rewrite cnnlib/templates/{name}.md for the runs' verdicts"
    # the numbers the texts quote, as the study's review recomputed them from the runs
    assert v["degradation.diff"].estimate == pytest.approx(0.1115, abs=5e-4)
    assert (v["degradation.diff"].low, v["degradation.diff"].high) == pytest.approx((0.039, 0.184), abs=1e-3)
    assert v["gradients.resnet56.last"].per_seed == pytest.approx([1.27, 1.27, 1.25], abs=0.005)
    assert v["paths.short"].peaks == [9, 9, 9] and v["shattering.d56"].n == 20
    assert not any(c.verdict == verdicts.VANISHES for c in v.values())


def test_the_line_text_was_written_for_the_shapes_of_the_stored_lines():
    """What ``templates/07_line.md`` says of the lines from the initial weights, checked on the stored runs."""
    from cnnlib.results import list_runs

    lined = [r for r in list_runs() if "bn" in r.table("interpolation")]
    sides = verdicts.line_sides(verdicts.line_readings(lined), lined)
    plain, residual = sides["plain"], sides["residual"]
    deep, rest = plain.iloc[-1], plain.iloc[:-1]
    assert len(plain) and len(residual) and deep["depth"] == plain["depth"].max()
    # the residual nets' loss falls from the start, from higher than the plain nets'; it hardly rises on the way
    assert residual["loss at the initial weights"].min() > plain["loss at the initial weights"].max()
    assert residual["barrier"].max() < 0.01
    # the deepest plain net crosses a plateau: late off chance, a rise ten times the residual nets', a late halfway
    assert deep["leaves chance at t"] > max(residual["leaves chance at t"].max(), rest["leaves chance at t"].max())
    assert deep["barrier"] > 10 * residual["barrier"].max() and deep["halfway t"] > residual["halfway t"].max()
    # the shallower plain nets do not: no rise, and off chance with the residual nets (no later than the latest)
    assert (rest["barrier"] < 0.01).all()
    assert (rest["leaves chance at t"] <= residual["leaves chance at t"].max()).all()
    # "one per architecture and not all trained under one recipe", the plain nets' recipes among them
    assert len({r.config.model for r in lined}) == len(lined)
    assert len({r.config.tag for r in lined if r.config.label in plain.index.get_level_values("model")}) > 1
    text = render.template("07_line", chance=verdicts.LEFT_CHANCE, plain=plain, residual=residual)
    assert f"The deepest plain net, {deep.name[0]}, crosses a plateau" in text
    assert f"exceeds 20% only at t = {render.num(deep['leaves chance at t'], 2)}" in text
    assert ("loss never rises" in text) == (rest["barrier"].max() == 0)


def test_a_tie_between_the_plain_and_the_residual_18_layer_nets_is_tested_against_the_margin():
    labels = np.arange(1000) % 10
    right, wrong = labels.copy(), (labels + 1) % 10
    i = np.arange(1000)
    a = np.where(i < 800, right, wrong)
    b = np.where((i < 795) | ((i >= 800) & (i < 805)), right, wrong)  # the same 80%, on other images
    runs = [fake_run("plainnet18", 0, 0.8, 0.8, preds=a), fake_run("resnet18", 0, 0.8, 0.8, preds=b)]
    row = verdicts.shortcut_tie(runs, labels).iloc[0]
    assert row["id"] == "controlled.shortcuts" and row["method"] == "paired bootstrap" and row["n"] == 1000
    assert row["estimate"] == 0 and -0.01 <= row["low"] < 0 < row["high"] <= 0.01 and row["verdict"] == "confirmed"
    far = [fake_run("plainnet18", 0, 0.5, 0.5, preds=np.where(i < 500, right, wrong)), runs[1]]
    assert verdicts.shortcut_tie(far, labels)["verdict"].iloc[0] == "refuted"
    assert verdicts.shortcut_tie(runs, None)["verdict"].iloc[0] == "cannot tell"  # one seed, no images: no interval


def _data_present() -> bool:
    from test_device_path import _data_tarball

    return _data_tarball() is not None


@pytest.mark.skipif(not _data_present(), reason="needs the CIFAR-10 tarball (CNNLIB_DATA or data/) for the test labels")
def test_the_controlled_familys_text_was_written_for_the_verdict_of_the_committed_runs():
    from cnnlib import analysis
    from cnnlib.data import load_cifar10
    from cnnlib.models import FAMILIES
    from cnnlib.runs import get_runs, resolve_profile

    ctrl = list(FAMILIES["controlled"])
    runs = get_runs(ctrl, resolve_profile(None, ctrl), (0,))
    tie = verdicts.shortcut_tie(runs, analysis.test_labels(load_cifar10(), runs[0]))
    assert render.stale("06_controlled", render.claims(tie)) == []
    assert tie["estimate"].iloc[0] == pytest.approx(0.0005, abs=0.002)  # plainnet18 − resnet18: +0.1 points


def test_a_damaged_step_table_stops_with_what_to_do(store):
    from cnnlib import runs
    from cnnlib.results import DamagedRunError

    assert runs.step_times() is None  # none stored: notebook 05 says how to time them
    folder = store / "results" / "step-times"
    folder.mkdir(parents=True)
    steps({"resnet18": {"fp32": 1.0}}).to_csv(folder / "step_times.csv", index=False)
    with pytest.raises(DamagedRunError, match=r"step_times.json is missing; .*step_rates.py --store"):
        runs.step_times()  # the conditions are missing
    (folder / "step_times.json").write_text('{"cpu": "x", "cores": 2, "threads": 2, "batch": 128, "rounds": 6}')
    with pytest.raises(DamagedRunError, match="step_times.json lacks others_share, started"):
        runs.step_times()
    (folder / "step_times.json").write_text('{"cpu": "x", "cores": 2, "threads": 2, "batch": 128, "rounds": 6, '
                                            '"started": "2026-12-06 05:00:00", "others_share": 0.0}')
    table, when = runs.step_times()
    assert len(table) == 6 and when["batch"] == 128
    (folder / "step_times.csv").write_text("model,setting\nresnet18,fp32\n")  # cut short
    with pytest.raises(DamagedRunError, match="step_times.csv lacks a column of the timed steps"):
        runs.step_times()
