"""Interval-backed verdicts on the original report's claims, on runs whose answer is known."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cnnlib import render, summary, verdicts
from cnnlib.results import Run
from cnnlib.train import make_config


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
    assert list(t["verdict"]) == ["confirmed", "refuted", "confirmed"]
    assert "degradation" in t.attrs["reading"]
    assert t["difference"].iloc[0].startswith("+19.0 [")


def test_degradation_in_both_families_says_the_budget_is_too_short():
    runs = family({"plain20": [0.80, 0.81, 0.79], "plain56": [0.60, 0.62, 0.61],
                   "resnet20": [0.82, 0.83, 0.81], "resnet56": [0.70, 0.71, 0.69]})  # fmt: skip
    t = verdicts.degradation(runs)
    assert t["verdict"].iloc[1] == "confirmed" and "cannot be separated" in t.attrs["reading"]


def test_one_seed_gives_no_interval_and_says_what_settles_it():
    runs = family({"plain20": [0.8], "plain56": [0.6], "resnet20": [0.8], "resnet56": [0.8]})
    t = verdicts.degradation(runs)
    assert (t["verdict"] == "cannot tell").all()
    assert t["what would settle it"].str.contains("3 seeds").all()
    assert t.attrs["reading"].startswith("With one seed of plain20, plain56, resnet20, resnet56 there is no interval")
    assert "interval spans 0" not in t.attrs["reading"] and t.attrs["claims"] == 0
    # one net with two seeds still leaves the others without an interval
    t = verdicts.degradation(runs + family({"resnet20": [0.8, 0.81]})[1:])
    assert t.attrs["reading"].startswith("With one seed of plain20, plain56, resnet56 there")
    fits = family({"plain20": [0.92], "plain56": [0.86]})
    assert verdicts.overfitting(fits).iloc[0]["why"].startswith("one seed: no interval yet; settled by 3 seeds")


def test_overfitting_is_not_tested_while_no_model_fits_its_training_data():
    runs = family({"plain20": [0.50, 0.52, 0.51], "plain56": [0.40, 0.41, 0.42]}, test_gap=0.01)
    assert verdicts.overfitting(runs)["verdict"].iloc[0] == verdicts.NOT_IN_REGIME
    runs = family({"plain20": [0.90, 0.92, 0.91], "plain56": [0.70, 0.71, 0.72]}, test_gap=0.2)
    row = verdicts.overfitting(runs).iloc[0]
    assert row["verdict"] == "refuted" and "degradation" in row["why"]


def test_overfitting_is_not_testable_until_the_shallow_net_fits_its_training_data():
    # a wide train-test gap and a deeper net that fits worse, as in the stored pilot runs: before, "refuted"
    runs = family({"plain20": [0.50, 0.52, 0.51], "plain56": [0.25, 0.26, 0.27]}, test_gap=0.08)
    row = verdicts.overfitting(runs).iloc[0]
    assert row["verdict"] == "not testable in this regime" == verdicts.NOT_IN_REGIME
    assert "plain20 reaches 51.0% clean training accuracy, below the 90%" in row["why"]
    note = verdicts.overfitting(runs).attrs["note"]
    assert note.endswith("Testable once plain20 reaches 90% clean training accuracy.")
    fitted = family({"plain20": [0.90, 0.92, 0.91], "plain56": [0.70, 0.71, 0.72]}, test_gap=0.2)
    assert verdicts.overfitting(fitted).attrs["note"].endswith(
        "Testable because plain20 reaches 91.0% clean training accuracy (mean over its seeds), past the 90% at which "
        "a net counts as fitting its training data.")
    assert verdicts.FITS_TRAINING == 0.90
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
    t = table.set_index(["model", "point"])
    assert t.loc[("plain56", "epoch 3"), "signal towards the input"] == "vanishes"
    assert t.loc[("plain44", "epoch 3"), "signal towards the input"] == "grows"  # ~3,000x larger at the input
    assert t.loc[("resnet56", "epoch 3"), "signal towards the input"] == "neither"
    assert t.loc[("plain56", "step 0"), "signal towards the input"] == "neither"
    assert t.loc[("resnet44", "epoch 3"), "signal towards the input"] == "cannot tell"  # log10 0, 0.5, 1: spans +1
    assert table.attrs["claims"] == 8 and "below −1 vanishes, above +1 grows" in table.attrs["note"]
    assert "Why tenfold" in table.attrs["note"]
    # the per-seed values, and the growth per block the mean amounts to (two body blocks: one step between them)
    assert t.loc[("plain44", "epoch 3"), "log10 per seed"] == "+3.50 / +3.60 / +3.70"
    assert t.loc[("plain44", "epoch 3"), "per block"] == f"{10 ** 3.6:.3f}x"


@pytest.mark.parametrize(
    "low, high, expected",
    [(-3.2, -1.5, "vanishes"), (2.8, 4.2, "grows"), (-0.6, 0.4, "neither"), (0.7, 1.5, "cannot tell"),
     (-1.2, -0.5, "cannot tell"), (3.47, 3.47, "grows"), (float("nan"), float("nan"), "cannot tell")],
)  # fmt: skip
def test_gradient_outcome_has_three_outcomes_and_stated_thresholds(low, high, expected):
    assert verdicts.GRADIENT_THRESHOLD == 1.0
    assert verdicts.gradient_outcome(low, high) == expected


def test_markdown_escapes_cells():
    md = verdicts.markdown(pd.DataFrame({"a": ["x|y"], "b": [1]}))
    assert md.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | 1 |"]


@pytest.mark.parametrize("missing", ["plain20", "resnet56"])
def test_missing_models_give_an_empty_table(missing):
    accs = {m: [0.5] for m in ("plain20", "plain56", "resnet20", "resnet56") if m != missing}
    assert verdicts.degradation(family(accs)).empty


def test_training_times_compare_only_on_the_card_that_trained_most_runs():
    from cnnlib import analysis

    def on(model, device, name):
        run = fake_run(model, 0, 0.5, 0.5)
        run.meta.update(device=device, device_name=name)
        return run

    runs = [on("resnet18", "cuda", "H200"), on("plainnet18", "cuda", "H200"), on("seed_cnn", "cpu", "CPU: x"),
            on("densenet121", "cuda:1", "A100")]  # fmt: skip
    timed, card = analysis.timed_on_one_gpu(runs)
    assert card == "H200" and [r.config.model for r in timed] == ["resnet18", "plainnet18"]
    assert analysis.timed_on_one_gpu(runs[2:3]) == ([], None)


def test_chance_and_the_thresholds_have_one_home():
    import inspect

    from cnnlib import analysis, constants, skip_findings, stats
    from cnnlib.data import CLASSES

    assert constants.CHANCE == 1 / len(CLASSES) and constants.CHANCE_LOSS == pytest.approx(np.log(10))
    # every module that reads a threshold reads the one in constants (the same object, not a copy)
    for name in ("CHANCE", "NEAR_CHANCE", "ALPHA", "TIE_MARGIN", "GRADIENT_THRESHOLD", "FITS_TRAINING",
                 "CHANCE_LOSS", "EXPLOSION_FACTOR"):  # fmt: skip
        for module in (analysis, stats, verdicts, skip_findings):
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


def test_lesions_of_one_network_per_architecture_say_so(tmp_path):
    runs = lesioned(tmp_path, "resnet56", [0], 0.60, [0.55, 0.56, 0.57, 0.54, 0.58])
    runs += lesioned(tmp_path, "plain56", [0], 0.55, [0.30, 0.32, 0.28, 0.35, 0.31])
    row = verdicts.lesion_verdict(runs)
    assert row["verdict"] == "cannot tell (one network per architecture)" == verdicts.CANNOT_TELL_ONE_NET
    assert row["these trained networks only"] == "confirmed for these two trained networks (seed 0 nets) only"
    assert "spread within one network" in row["interval from"]
    assert verdicts.lesion_verdicts(runs, (("resnet56", "plain56"),), (1,)).attrs["networks"] == {row["claim"]: None}
    assert summary._one_net(None) == " (over random deletions within one trained network each)"
    assert row["difference (points)"].startswith("+19.8 [")  # (55 - 31.2) - (60 - 56) points


def test_lesions_replicate_over_trained_networks_when_several_store_tables(tmp_path):
    runs = lesioned(tmp_path, "resnet56", [0, 1, 2], 0.60, [0.55, 0.56, 0.57, 0.54, 0.58])
    runs += lesioned(tmp_path, "plain56", [0, 1, 2], 0.55, [0.30, 0.32, 0.28, 0.35, 0.31])
    table = verdicts.lesion_verdicts(runs, (("resnet56", "plain56"),), (1,))
    row = table.iloc[0]
    assert row["verdict"] == "confirmed" and row["these trained networks only"] == ""
    assert row["interval from"].startswith("Welch t over 3 and 3 trained networks")
    assert table.attrs["networks"][row["claim"]] == (3, 3)
    assert summary._one_net((3, 3)) == " (Welch interval over 3 and 3 trained networks)"  # the README's lesion line


def test_a_lesion_interval_over_two_networks_stays_within_what_their_intact_accuracies_allow(tmp_path):
    # two networks a side: about one degree of freedom, so the raw Welch interval runs past +100 points; a
    # deletion costs a net at most its intact accuracy (86%) and gains the other at most 100% - 90%
    runs = (lesioned(tmp_path, "plain56", [0], 0.85, [0.15] * 5) + lesioned(tmp_path, "plain56", [1], 0.85, [0.25] * 5)
            + lesioned(tmp_path, "resnet56", [0, 1], 0.90, [0.88] * 5))  # fmt: skip
    row = verdicts.lesion_verdicts(runs, (("resnet56", "plain56"),), (1,)).iloc[0]
    assert row["interval from"].startswith("Welch t over 2 and 2 trained networks")
    assert row["difference (points)"].startswith("+63.0 [") and row["difference (points)"].endswith(", +96.0]")


def test_a_lesion_comparison_with_both_sides_near_chance_cannot_tell(tmp_path):
    runs = lesioned(tmp_path, "resnet56", [0, 1, 2], 0.37, [0.13, 0.14, 0.12, 0.12, 0.14])  # left at 13.0%
    runs += lesioned(tmp_path, "plain56", [0, 1, 2], 0.22, [0.11, 0.12, 0.10, 0.13, 0.12])  # left at 11.6%
    row = verdicts.lesion_verdict(runs)
    assert row["verdict"] == "cannot tell (floor)" == verdicts.CANNOT_TELL_FLOOR
    assert "plain56 (11.6% left" in row["why"] and "within 5 points of chance" in row["why"]
    assert "resnet56 (13.0% left" in row["why"]
    assert verdicts.lesion_verdict(runs, k=5) == {}  # no table with k = 5


def test_degradation_compares_losses_of_fit_only_above_the_floor():
    runs = family({"plain20": [0.40, 0.41, 0.39], "plain56": [0.12, 0.13, 0.11],
                   "resnet20": [0.50, 0.51, 0.49], "resnet56": [0.55, 0.56, 0.54]})  # fmt: skip
    t = verdicts.degradation(runs)
    assert list(t["verdict"]) == ["confirmed", "refuted", "cannot tell (floor)"]
    assert "plain56 sits within 5 points of chance" in t["what would settle it"].iloc[2]
    assert t.attrs["claims"] == 2 and "Holm-adjusted across the 2 claims" in t.attrs["note"]
    assert "Welch t over 3 seeds" in t["interval from"].iloc[0]  # architectures are not paired by seed number


def test_a_net_left_at_chance_alone_lets_the_verdict_stand_in_the_one_direction_the_floor_cannot_fake(tmp_path):
    # the plain net collapses to chance, the residual net keeps most of its accuracy (Veit et al.)
    runs = lesioned(tmp_path, "resnet56", [0, 1, 2], 0.80, [0.70, 0.72, 0.71, 0.69, 0.73])
    runs += lesioned(tmp_path, "plain56", [0, 1, 2], 0.78, [0.10, 0.11, 0.10, 0.12, 0.10])
    row = verdicts.lesion_verdict(runs)
    assert row["verdict"] == "confirmed"
    assert row["why"].startswith("plain56 (10.") and "lost all it could" in row["why"]
    assert "can only be larger" in row["why"]
    floor = verdicts.lesion_verdicts(runs, (("resnet56", "plain56"),), (1,)).attrs["floor"][row["claim"]]
    assert list(floor["detail"]) == ["plain56"] and floor["stands_despite"] == "plain56"
    assert floor["detail"]["plain56"].startswith("plain56 (10.")
    # one network per architecture: the architectures stay untold, these two networks are confirmed
    one = verdicts.lesion_verdict([r for r in runs if r.config.seed == 0])
    assert one["verdict"] == verdicts.CANNOT_TELL_ONE_NET
    assert one["these trained networks only"] == "confirmed for these two trained networks (seed 0 nets) only"
    assert "lost all it could" in one["why"]
    # the residual net at chance and the plain one not: a refutation stands, a confirmation could be the floor's
    runs = lesioned(tmp_path, "resnet56", [0, 1, 2], 0.60, [0.11, 0.12, 0.10, 0.13, 0.12])
    refuting = runs + lesioned(tmp_path, "plain56", [0, 1, 2], 0.80, [0.40, 0.42, 0.41, 0.39, 0.43])
    assert verdicts.lesion_verdict(refuting)["verdict"] == "refuted"
    row = verdicts.lesion_verdict(runs + lesioned(tmp_path, "plain56", [0, 1, 2], 0.80, [0.20, 0.22, 0.21, 0.19, 0.2]))
    assert row["verdict"] == verdicts.CANNOT_TELL_FLOOR and "resnet56 (11.6% left" in row["why"]
    both = runs + lesioned(tmp_path, "plain56", [0, 1, 2], 0.80, [0.20, 0.22, 0.21, 0.19, 0.2])
    floor = verdicts.lesion_verdicts(both, (("resnet56", "plain56"),), (1,)).attrs["floor"][row["claim"]]
    # a confirmation the floor could have made: it does not stand
    assert list(floor["detail"]) == ["resnet56"] and floor["stands_despite"] == ""
    # a net at chance before any deletion never compares
    runs = lesioned(tmp_path, "resnet56", [0, 1, 2], 0.80, [0.70, 0.72, 0.71, 0.69, 0.73])
    runs += lesioned(tmp_path, "plain56", [0, 1, 2], 0.13, [0.10, 0.11, 0.10, 0.12, 0.10])
    assert verdicts.lesion_verdict(runs)["verdict"] == verdicts.CANNOT_TELL_FLOOR


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


def test_degradation_names_the_row_of_each_kind_of_net_for_its_readers():
    runs = family({"plain20": [0.80, 0.81, 0.79], "plain56": [0.60, 0.62, 0.61],
                   "resnet20": [0.82, 0.83, 0.81], "resnet56": [0.85, 0.86, 0.84]})  # fmt: skip
    t = verdicts.degradation(runs)
    assert t.attrs["within"] == {"plain": "plain56 − plain20", "residual": "resnet56 − resnet20"}
    assert set(t.attrs["within"].values()) <= set(t["comparison (clean training error)"])


def _shattering_tables(plain: list[float], residual: list[float], depth: int = 56) -> list[pd.DataFrame]:
    return [pd.DataFrame({"depth": depth, "net": ["plain", "residual"], "lag1_autocorrelation": [p, r],
                          "lag4_autocorrelation": 0.0}) for p, r in zip(plain, residual, strict=True)]


def test_shattering_over_many_initialisations_stays_within_the_bounds_of_a_correlation():
    rng = np.random.default_rng(0)
    plain = np.clip(rng.normal(0.6, 0.35, 20), -0.9, 0.99).tolist()  # widely spread, as at depth 56
    residual = (0.988 + 0.004 * rng.random(20)).tolist()
    sh = verdicts.shattering(_shattering_tables(plain, residual))
    row = sh.loc[56]
    assert row["initialisations"] == 20
    assert row["verdict: residual more correlated"] == "confirmed"
    assert row["residual higher"] == f"{sum(r > p for p, r in zip(plain, residual, strict=True))} of 20"
    for col in ("plain", "residual"):  # '0.61 [0.42, 0.75]': every bound a correlation can take
        est, low, high = (float(v) for v in row[col].replace("[", "").replace("]", "").replace(",", "").split())
        assert -1 <= low <= est <= high <= 1
    low = float(row["Fisher z, residual − plain"].split("[")[1].split(",")[0])
    assert low > 0  # the interval on Fisher's z separates the two nets
    assert float(row["residual − plain"]) == pytest.approx(np.mean(residual) - np.mean(plain), abs=0.006)


def test_shattering_that_goes_either_way_cannot_tell_and_a_plain_net_always_smoother_is_refuted():
    mixed = verdicts.shattering(_shattering_tables([0.95, 0.99, 0.97, 0.995], [0.99, 0.97, 0.98, 0.985]))
    assert mixed.loc[56, "verdict: residual more correlated"] == "cannot tell"
    assert mixed.loc[56, "residual higher"] == "2 of 4"
    smoother = verdicts.shattering(_shattering_tables([0.99, 0.995, 0.992, 0.993], [0.5, 0.6, 0.55, 0.52]))
    assert smoother.loc[56, "verdict: residual more correlated"] == "refuted"
    # a trace that is a straight line has r = 1: Fisher's z stays finite (if far out, which widens the interval)
    edge = verdicts.shattering(_shattering_tables([0.2, 0.3, 0.25], [1.0, 0.99, 0.995]))
    bounds = edge.loc[56, "Fisher z, residual − plain"].split("[")[1].rstrip("]").split(", ")
    assert all(np.isfinite(float(b)) for b in bounds)
