"""The closing tables and sentences of notebooks 06 and 07, on synthetic runs whose answer is known."""

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from cnnlib import plots, skip_findings, verdicts  # noqa: E402
from cnnlib.config import make_config  # noqa: E402
from cnnlib.results import Run  # noqa: E402


def fake_run(model, seed, clean_acc=0.5, test_loss=(2.2, 2.0, 1.8), tag=None) -> Run:
    epochs = len(test_loss)
    h = pd.DataFrame({"epoch": range(1, epochs + 1), "train_acc": np.linspace(0.1, clean_acc, epochs),
                      "clean_train_acc": np.linspace(0.1, clean_acc, epochs),
                      "test_acc": np.linspace(0.1, clean_acc, epochs), "test_loss": list(test_loss)})  # fmt: skip
    cfg = make_config(model, "smoke", seed, **({"tag": tag} if tag else {}))
    return Run(cfg, h, np.zeros(10, dtype=np.uint8), {"device_name": "CPU: test", "final": {}}, Path("/nonexistent"))


def family(accs: dict[str, list[float]]) -> list[Run]:
    return [fake_run(m, s, a) for m, vals in accs.items() for s, a in enumerate(vals)]


def test_the_explosion_detector_finds_an_exploded_run_and_not_a_healthy_one():
    blown = fake_run("plain56", 0, test_loss=(4.6e5, 55.0, 2.1))
    healthy = fake_run("plain20", 0, test_loss=(2.5, 2.0, 1.6))
    edge = fake_run("resnet56", 1, test_loss=(10.6, 2.1, 1.4))  # high, but under 10 x ln 10 = 23.0
    table = skip_findings.epoch1_explosions([healthy, blown, edge])
    assert list(table["run"]) == ["plain56-smoke-s0"]
    assert table["epoch-1 test loss"].iloc[0] == 4.6e5 and table["epoch-2 test loss"].iloc[0] == 55.0
    assert math.isclose(table["× ln 10"].iloc[0], 4.6e5 / math.log(10))
    assert math.isclose(table.attrs["threshold"], 10 * math.log(10)) and table.attrs["checked"] == 3
    text = skip_findings.explosions_markdown(table)
    assert "exceeds 23.0 (10 × ln 10" in text and "in 1 of the 3 runs" in text and "plain56-smoke-s0" in text
    assert "plain20" not in text and "caveat" in text
    # the threshold is the only gate
    assert list(skip_findings.epoch1_explosions([edge], factor=4)["run"]) == ["resnet56-smoke-s1"]
    assert skip_findings.explosions_markdown(skip_findings.epoch1_explosions([healthy])).startswith("No run's")


def test_seeds_are_said_as_they_exist():
    runs = [fake_run("plain20", s) for s in (0, 1, 2)] + [fake_run("plain32", 0)]
    assert skip_findings.seeds_phrase(runs[:3]) == "seeds 0, 1, 2"
    assert skip_findings.seeds_phrase(runs) == "seeds 0, 1, 2 of plain20; seed 0 of plain32"
    assert skip_findings.figure_note(runs[3:]).endswith("3 epochs), seed 0")


def degradation_inputs(explode_plain56: bool):
    runs = family({"plain20": [0.92, 0.93, 0.91], "plain56": [0.60, 0.62, 0.61],
                   "resnet20": [0.92, 0.93, 0.91], "resnet56": [0.95, 0.96, 0.94]})  # fmt: skip
    if explode_plain56:
        runs[3].history["test_loss"] = [5e4, 3.0, 2.0]
    return runs


def test_the_06_summary_carries_the_verdicts_it_was_given():
    runs = degradation_inputs(explode_plain56=True)
    deg, ovf = verdicts.degradation(runs), verdicts.overfitting(runs)
    vg = pd.DataFrame([
        {"model": "plain56", "point": "step 0", "step": 0, "seeds": 3, "first/last block signal": "3e+03",
         "log10 per seed": "+3.40 / +3.50 / +3.51", "per block": "1.343x",
         "log10 [interval]": "+3.47 [+1.77, +5.17]", "level": "99%", "signal towards the input": "grows"},
        {"model": "plain56", "point": "epoch 3", "step": 60, "seeds": 3, "first/last block signal": "0.7",
         "log10 per seed": "-0.10 / -0.14 / -0.18", "per block": "0.988x",
         "log10 [interval]": "-0.14 [-0.50, +0.30]", "level": "98%", "signal towards the input": "neither"},
    ])  # fmt: skip
    explosions = skip_findings.epoch1_explosions(runs)
    md = skip_findings.degradation_summary(deg, ovf, vg, explosions)
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[0] == "| claim | verdict | evidence |"
    assert md.splitlines()[len(table) + 1] == ""  # a blank line ends the table before the notes
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1] for line in table[1:]}
    assert list(deg["verdict"]) == ["confirmed", "refuted", "confirmed"]
    for _, r in deg.iterrows():
        assert rows[f"{r['claim']} ({r['comparison (clean training error)']})"] == r["verdict"]
    assert rows[ovf["claim"].iloc[0]] == ovf["verdict"].iloc[0] == "refuted"
    assert rows["the backward signal towards the input (vanishes / neither / grows): plain56, step 0"] == "grows"
    assert "+3.47 [+1.77, +5.17] (3 seeds, 99% level; per seed +3.40 / +3.50 / +3.51); 1.343x per block" in md
    # plain56 seed 0 blew up: its rows carry the caveat, the summary names it, and no verdict is strengthened
    assert "plain56 seed 0" in md and skip_findings.DAGGER in md
    assert skip_findings.DAGGER not in next(line for line in table if "(resnet56 − resnet20)" in line)
    assert "none vanishes" in md and "1 grows (plain56 at step 0)" in md and "1 reads neither" in md
    prose = md.split("\n\n")[-1]
    assert 3 <= prose.count(". ") + 1 <= 6
    clean = skip_findings.degradation_summary(deg, ovf, vg, skip_findings.epoch1_explosions(degradation_inputs(False)))
    assert skip_findings.DAGGER not in clean and "No run blew up" in clean


def sweep_runs(residual_56: float) -> list[Run]:
    """Depth sweep: plain nets' clean accuracy falling with depth; the residual nets' 56-layer accuracy given."""
    accs = {"plain20": [0.80, 0.81, 0.79], "plain32": [0.75], "plain56": [0.60, 0.62, 0.61],
            "resnet20": [0.82, 0.83, 0.81], "resnet32": [0.84], "resnet56": [residual_56 + d for d in (0, 0.01, -0.01)]}
    return family(accs)


def test_the_depth_reading_says_contradicts_only_when_the_residual_error_rises():
    rising = sweep_runs(0.60)  # residual error 18% -> 40%: rises, against He et al.
    sweep = verdicts.depth_sweep(rising)
    trend = skip_findings.depth_trend(sweep)
    assert trend.loc["residual", "direction"] == "rises" and trend.loc["plain", "direction"] == "rises"
    text = skip_findings.depth_reading(sweep, verdicts.degradation(rising))
    plain, residual = text.split(". From ")
    assert "as He et al. found" in plain and "contradicts" not in plain
    assert "contradicts He et al., who found it falling" in residual
    assert "(one seed" not in text  # the ends of the sweep have three seeds each

    falling = sweep_runs(0.90)  # residual error 18% -> 10%: falls, as He et al. found
    sweep = verdicts.depth_sweep(falling)
    assert skip_findings.depth_trend(sweep).loc["residual", "direction"] == "falls"
    text = skip_findings.depth_reading(sweep, verdicts.degradation(falling))
    assert "contradicts" not in text and text.count("as He et al. found") == 2
    # the verdict names the claim it is on: "fits worse", refuted where the residual error falls
    assert 'verdict on "the deeper residual net fits its training data worse": refuted' in text


def test_the_07_summary_carries_the_verdicts_it_was_given():
    runs = sweep_runs(0.60)
    sweep = verdicts.depth_sweep(runs)
    deg = verdicts.degradation([r for r in runs if r.config.model in ("plain20", "plain56", "resnet20", "resnet56")])
    lesion = pd.DataFrame([{"claim": "deleting 1 random block(s) costs plain56 more accuracy than resnet56",
                            "difference (points)": "+7.5 [+5.0, +10.0]", "interval from": "Welch t; 95% level",
                            "verdict": "cannot tell (floor)", verdicts.THESE_NETWORKS: "",
                            "why": "plain56 (11.7% left, intact 22.4%): within 5 points of chance (10%) ..."},
                           {"claim": "deleting 1 random block(s) costs plain20 more accuracy than resnet20",
                            "difference (points)": "+52.0 [+38.7, +65.4]", "interval from": "Welch t; 95% level",
                            "verdict": "confirmed", verdicts.THESE_NETWORKS: "",
                            "why": "plain20 (9.9% left, intact 85.6%) is left within 5 points of chance (10%): it "
                                   "lost all it could, ...; confirmed stands"}])  # fmt: skip
    lesion.attrs["floor"] = {  # as verdicts.lesion_verdicts leaves it: no net is read out of the prose of 'why'
        lesion["claim"].iloc[0]: {"detail": {"plain56": "plain56 (11.7% left, intact 22.4%)"},
                                  "stands_despite": ""},
        lesion["claim"].iloc[1]: {"detail": {"plain20": "plain20 (9.9% left, intact 85.6%)"},
                                  "stands_despite": "plain20"}}  # fmt: skip
    lz = pd.DataFrame({"intact accuracy (%)": [22.4, 37.2], "one block deleted, mean (%)": [11.7, 32.6]},
                      index=pd.Index(["plain56", "resnet56"], name="model"))  # fmt: skip
    sh = pd.DataFrame({"plain": ["0.67 [-0.38, 0.98]"], "residual": ["0.99 [0.99, 0.99]"],
                       "residual − plain": ["+0.32 [+0.10, +0.50]"], "level": ["95%"],
                       "verdict: residual more correlated": ["confirmed"]}, index=pd.Index([56], name="depth"))
    paths = pd.DataFrame({"length": [0, 3, 6, 9], "grad_norm": [1e-2, 1e-3, 1e-4, 1e-5], "grad_std": 0.0})
    share = skip_findings.path_shares(paths, 9)
    md = skip_findings.mechanisms_summary(lesion, lz, sh, share, sweep, deg, inits=3)
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1] for line in md.splitlines()[2:] if line.startswith("| ")}
    assert md.splitlines()[len(rows) + 2] == ""  # a blank line ends the table before the notes
    assert rows[lesion["claim"].iloc[0]] == "cannot tell (floor)"
    assert rows[lesion["claim"].iloc[1]] == "confirmed"
    assert "plain20 (9.9% left, intact 85.6%) is left at chance, which only understates its loss" in md
    assert "at the floor: plain56 (11.7% left, intact 22.4%)" in md
    assert rows["at initialisation the residual net's input gradient is more correlated than the plain net's "
                "(depth 56; Balduzzi et al.)"] == "confirmed"
    assert rows["the deeper plain nets fit their training data worse (He et al.)"] == deg["verdict"].iloc[0]
    # He et al.'s residual claim is the opposite direction of the degradation table's second row
    assert deg["verdict"].iloc[1] == "confirmed"
    assert rows["the deeper residual nets fit their training data better (He et al.)"] == "refuted"
    assert "contradicts He et al." in md
    assert "only every third length (0, 3, ..., 9) was measured" in md
    # C(9, k) paths of each length: 1, 84, 84, 1; the gradient through one falls tenfold per measured length
    assert "peaks at paths of length 3 of 9, shorter than the typical path (4-5 residual branches)" in md


def test_path_shares_weight_each_length_by_its_number_of_paths():
    paths = pd.DataFrame({"length": [0, 1, 2], "grad_norm": [1.0, 1.0, 1.0], "grad_std": 0.0})
    share = skip_findings.path_shares(paths, 2)  # C(2, k) = 1, 2, 1
    assert np.allclose(share["gradient share"], [0.25, 0.5, 0.25]) and share["cumulative share"].iloc[-1] == 1
    assert skip_findings.sampled_lengths(share) == "every length (0-2)"
    assert "(every length measured)" in skip_findings.path_reading(share)


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


def test_the_lesion_sentence_says_once_what_the_one_network_comparisons_show():
    only = "confirmed for these two trained networks (seed 0 nets) only"
    table = pd.DataFrame({"claim": [f"deleting {k} random block(s) costs plain56 more accuracy than resnet56"
                                    for k in (1, 5)],
                          "verdict": [verdicts.CANNOT_TELL_ONE_NET] * 2, verdicts.THESE_NETWORKS: [only, only]})
    lz = pd.DataFrame({"intact accuracy (%)": [84.8, 88.0], "one block deleted, mean (%)": [11.0, 80.1]},
                      index=pd.Index(["plain56", "resnet56"], name="model"))  # fmt: skip
    text = skip_findings.lesion_sentence(lz, table)
    assert text == ("Deleting one block at a time leaves resnet56 at 80.1% (intact 88.0%) and plain56 at 11.0% "
                    "(intact 84.8%, within 5 points of chance) on average; of the 2 lesion comparisons, 2 cannot "
                    "tell (one network per architecture); the 2 comparisons of one trained network per architecture "
                    f"are each {only}.")
    one = skip_findings.lesion_sentence(lz, table.iloc[:1])
    assert one.endswith(f"1 cannot tell (one network per architecture); the comparison of one trained network per "
                        f"architecture is {only}.")


def _paths(decay: float) -> pd.DataFrame:
    """A 9-block net's gradient through one path of each measured length, falling ``decay``-fold per length."""
    lengths = [0, 3, 6, 9]
    return pd.DataFrame({"length": lengths, "grad_norm": [decay ** -k for k in lengths], "grad_std": 0.0})


def test_path_readings_take_every_trained_network_and_test_the_share_against_one_half():
    # C(9, k) = 1, 84, 84, 1 for the lengths 0, 3, 6, 9; the typical path has 4-5 branches, shorter ones <= 3
    readings = skip_findings.path_readings({0: _paths(2.5), 1: _paths(3), 2: _paths(3.5)}, 9)
    assert readings["seed"].tolist() == [0, 1, 2] and readings.attrs["short"] == 3
    assert readings["peak length"].tolist() == [3, 3, 3]
    w = np.array([1, 84 / 3**3, 84 / 3**6, 1 / 3**9])
    assert readings.loc[1, "share shorter than typical"] == pytest.approx(w[:2].sum() / w.sum())
    assert readings.attrs["paths_short"] == pytest.approx((1 + 9 + 36 + 84) / 512)
    v = skip_findings.path_verdict(readings)
    assert v["nets"] == 3 and 0.5 < v["low"] < v["estimate"] < v["high"] < 1
    assert v["verdict"] == "confirmed"
    text = skip_findings.paths_reading(readings, "the trained nets")
    assert "peaks at length 3 of 9 in every network" in text and "confirmed" in text


def test_one_network_gives_no_interval_and_long_paths_refute_the_claim():
    one = skip_findings.path_readings({0: _paths(10)}, 9)
    assert skip_findings.path_verdict(one)["verdict"] == verdicts.CANNOT_TELL_ONE_NET
    long = skip_findings.path_readings({s: _paths(d) for s, d in enumerate((0.1, 0.12, 0.09))}, 9)
    assert skip_findings.path_verdict(long)["verdict"] == "refuted"


def _slices(model: str, seed: int, at: float, far: float) -> pd.DataFrame:
    alpha = np.linspace(-1, 1, 9)
    return pd.DataFrame({"alpha": alpha, "loss": at + (far - at) * alpha**2, "model": model, "seed": seed})


def test_landscape_readings_over_several_networks_give_an_interval_per_claim():
    one_d = pd.concat([_slices("plain56", 0, 0.44, 3.28), _slices("plain56", 1, 0.54, 3.63),
                       _slices("plain56", 2, 0.51, 4.17), _slices("resnet56", 0, 0.16, 2.87),
                       _slices("resnet56", 1, 0.16, 3.13), _slices("resnet56", 2, 0.16, 3.07)])  # fmt: skip
    readings = skip_findings.landscape_readings(one_d)
    assert readings.loc[("plain56", 1), "loss at θ"] == pytest.approx(0.54)
    assert readings.loc[("resnet56", 0), "rise to α = ±1"] == pytest.approx(2.71)
    assert readings.loc[("plain56", 0), "loss at α = ±0.5 (mean)"] == pytest.approx(0.44 + 2.84 / 4)
    table = skip_findings.landscape_verdicts(readings).set_index("claim")
    lower, flatter = table["verdict"].tolist()
    assert lower == "confirmed"  # 0.16 in every resnet56 against 0.44-0.54
    assert flatter == "cannot tell"  # rises of 2.71-2.97 against 2.84-3.66: three networks do not separate them
    assert table.attrs["nets"] == {"resnet56": 3, "plain56": 3}
    single = skip_findings.landscape_verdicts(readings.loc[[("plain56", 0), ("resnet56", 0)]])
    assert set(single["verdict"]) == {verdicts.CANNOT_TELL_ONE_NET}


def test_the_07_summary_reads_paths_and_landscapes_over_every_network_when_given():
    sweep = verdicts.depth_sweep(sweep_runs(0.60))
    lesion = pd.DataFrame(columns=["claim", "difference (points)", "interval from", "verdict", verdicts.THESE_NETWORKS])
    sh = verdicts.shattering([pd.DataFrame({"depth": 56, "net": ["plain", "residual"], "lag1_autocorrelation": [p, r],
                                            "lag4_autocorrelation": 0.0})
                              for p, r in ((0.3, 0.99), (0.85, 0.988), (0.6, 0.99))])  # fmt: skip
    paths = skip_findings.path_readings({0: _paths(2.5), 1: _paths(3), 2: _paths(3.5)}, 9)
    one_d = pd.concat([_slices(m, s, at, far) for m, at, far in (("plain56", 0.5, 3.5), ("resnet56", 0.16, 3.0))
                       for s in range(3)])  # fmt: skip
    landscape = skip_findings.landscape_verdicts(skip_findings.landscape_readings(one_d))
    md = skip_findings.mechanisms_summary(lesion, pd.DataFrame(), sh, None, sweep, paths=paths, landscape=landscape)
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1] for line in md.splitlines()[2:] if line.startswith("| ")}
    assert rows["training's gradient flows mostly through paths shorter than the typical one (Veit et al.)"] == \
        skip_findings.path_verdict(paths)["verdict"] == "confirmed"
    for claim, verdict in zip(landscape["claim"], landscape["verdict"], strict=True):
        assert rows[claim] == verdict
    assert "over 3 initialisations" in md and "residual higher in 3 of 3" in md
