"""The tables the notebooks show, on runs built in memory."""

import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cnnlib import analysis, constants, pages, render
from cnnlib.config import TrainConfig, make_config
from cnnlib.results import Run


def run(model: str, seed: int = 0, peak_memory_mb: float | None = None, epochs: int = 3) -> Run:
    h = pd.DataFrame({"epoch": range(1, epochs + 1), "train_acc": np.linspace(0.1, 0.5, epochs),
                      "clean_train_acc": np.linspace(0.1, 0.55, epochs),
                      "test_acc": np.linspace(0.1, 0.4, epochs)})  # fmt: skip
    final = {"epochs": epochs, "train_acc": 0.5, "test_acc": 0.4, "seconds_per_epoch": 2.0}
    device = "cuda:0" if peak_memory_mb is not None else "cpu"
    meta = {"device": device, "peak_memory_mb": peak_memory_mb, "final": final}
    return Run(make_config(model, "smoke", seed), h, np.zeros(10, dtype=np.uint8), meta, Path("/nonexistent"))


def test_the_summary_table_leaves_out_gpu_memory_when_every_run_trained_on_a_cpu():
    table = analysis.summary_table([run("seed_cnn"), run("seed_cnn", 1), run("plain20")])
    assert list(table.index) == ["seed_cnn", "plain20"]
    assert "peak GPU MB" not in table.columns and "peak GPU MB" not in render.summary_table(table).columns
    assert table.loc["seed_cnn", "seeds"] == 2 and table.loc["seed_cnn", "final test acc (%)"] == [0.4, 0.4]
    assert table.loc["plain20", "final train acc, clean (%)"] == [pytest.approx(0.55)]
    assert render.summary_table(table).loc["seed_cnn", "final test acc (%)"] == render.mean_std([0.4, 0.4])


def test_the_summary_table_keeps_gpu_memory_when_a_run_has_it():
    table = analysis.summary_table([run("seed_cnn", peak_memory_mb=812.4), run("plain20")])
    assert list(table.columns).index("peak GPU MB") == list(table.columns).index("s / epoch") + 1
    assert table.loc["seed_cnn", "peak GPU MB"] == 812 and np.isnan(table.loc["plain20", "peak GPU MB"])
    shown = render.summary_table(table)
    assert shown.loc["seed_cnn", "peak GPU MB"] == 812 and shown.loc["plain20", "peak GPU MB"] == "n/a (CPU)"


def test_figure_notes_group_runs_by_profile_with_their_image_counts_and_seeds():
    runs = [run("seed_cnn", 0), run("plain20", 1), run("seed_cnn", 2)]
    groups = analysis.data_groups(runs)
    assert groups == [{"profile": "smoke", "images": [(200, 100)], "seeds": [0, 1, 2],
                       "only": [{"models": ["seed_cnn"], "seeds": [0, 2]}, {"models": ["plain20"], "seeds": [1]}]}]
    assert render.data_note(groups) == ("profile 'smoke', 200 training / 100 test images, seeds 0, 1, 2"
                                        ", of which seed_cnn has seeds 0, 2 only; plain20 has seed 1 only")
    # models with the same fewer seeds are named together
    shared = analysis.data_groups([run("plain32", 0), run("plain56", 2), run("resnet20", 2), run("resnet56", 2)])
    assert render.data_note(shared).endswith("seeds 0, 2, of which plain32 has seed 0 only; plain56, resnet20 and "
                                             "resnet56 have seed 2 only")  # fmt: skip
    even = analysis.data_groups([run("seed_cnn", 0), run("plain20", 0), run("seed_cnn", 1), run("plain20", 1)])
    assert even[0]["only"] == [] and render.data_note(even).endswith("images, seeds 0, 1")
    mixed = analysis.data_groups([run_with("resnet20", [0.5], profile="full", seed=1), *runs[:1]])
    assert [(g["profile"], g["images"], g["seeds"]) for g in mixed] == [("full", [(50_000, 10_000)], [1]),
                                                                         ("smoke", [(200, 100)], [0])]


LABELS = np.repeat(np.arange(10), 20)  # 200 test images, 20 per class


def run_with(model, test_acc, *, profile="smoke", seed=0):
    """A run whose history ends at ``test_acc``, with predictions that get that share of ``LABELS`` right."""
    test_acc = np.asarray(test_acc, dtype=float)
    h = pd.DataFrame({"epoch": range(1, len(test_acc) + 1), "train_acc": test_acc + 0.05,
                      "clean_train_acc": test_acc + 0.05, "test_acc": test_acc})  # fmt: skip
    preds = np.where(np.arange(len(LABELS)) < round(test_acc[-1] * len(LABELS)), LABELS, (LABELS + 1) % 10)
    return Run(make_config(model, profile, seed), h, preds.astype(np.uint8), {"final": {}}, Path("/nonexistent"))


def test_convergence_is_the_mean_accuracy_and_does_not_reward_an_early_plateau():
    weak = run_with("resnet20", np.full(10, 0.60))  # at 100% of its final accuracy from epoch 1
    strong = run_with("resnet20", np.linspace(0.55, 0.93, 10))
    assert analysis.auc(weak) == pytest.approx(0.60) and analysis.auc(strong) > analysis.auc(weak)


def test_families_of_different_profiles_get_their_profile_in_their_title_and_panels_of_their_own(monkeypatch):
    full = [run_with("seed_senet18", [0.5, 0.9], profile="full"), run_with("seed_cnn", [0.4, 0.6], profile="full")]
    pilot = [run_with("resnet18", [0.2, 0.3]), run_with("plainnet18", [0.2, 0.35])]
    families = {"original models": full, "controlled family": pilot}
    assert analysis.family_profiles(families) == {"original models": ("full",), "controlled family": ("smoke",)}
    titles = render.family_titles(analysis.family_profiles(families))
    assert [("full" in t, "smoke" in t) for t in titles.values()] == [(True, False), (False, True)]
    assert render.family_titles(analysis.family_profiles({"a": pilot, "b": pilot[:1]})) == {"a": "a", "b": "b"}

    monkeypatch.setattr(analysis, "test_labels", lambda _data, _run: LABELS)  # the fake runs' test images
    panels = pages.accuracy_cost_panels(families, data=None)
    assert [t.split("\n")[0] for t in panels] == ["original models", "controlled family"]
    assert ["profile 'full'" in t for t in panels] == [True, False]
    first = panels[next(t for t in panels if "full" in t)]
    assert first["model"].tolist() == ["seed_cnn", "seed_senet18"]  # sorted by cost
    assert first["acc"].tolist() == [0.6, 0.9] and set(first["profile"]) == {"full"}
    assert ((first["low"] < first["acc"]) & (first["acc"] < first["high"])).all()
    (title, table), = pages.accuracy_cost_panels({"a": pilot, "b": pilot[:1]}, data=None).items()
    assert title.startswith("profile 'smoke'") and len(table) == 3  # one profile: one panel of every run


def test_recipes_are_read_from_the_configs_and_the_differences_named():
    fams = {"a": [make_config(m, "smoke", lr=0.1, epochs=20) for m in ("resnet20", "plain20")],
            "b": [make_config("resnet56", "smoke", lr=0.8, epochs=10)]}
    table = analysis.recipe_table(fams)
    assert table.loc["a", "peak lr"] == "0.1" and table.loc["b", "epochs"] == "10"
    assert table.loc["a", "models"] == "resnet20, plain20"
    mixed = analysis.recipe_table({"c": [make_config("resnet20", "smoke", lr=0.1), make_config("plain20", "smoke",
                                                                                               lr=0.2)]})  # fmt: skip
    assert mixed.loc["c", "peak lr"] == "0.1 / 0.2"


def test_runs_that_end_near_chance_are_listed_with_their_numbers():
    stuck, fine = run_with("resnet18", [0.3, 0.1], seed=1), run_with("resnet18", [0.3, 0.5])
    stuck.history["clean_train_acc"] = [0.3, constants.CHANCE + constants.NEAR_CHANCE]  # at the margin: listed
    stuck.history["train_loss"], fine.history["train_loss"] = [4.0, 2.3], [2.3, 1.8]
    near = analysis.near_chance([fine, stuck])
    assert near["run"].tolist() == ["resnet18-smoke-s1"] and near["in epoch"].tolist() == [1]
    assert near["final training accuracy"].iloc[0] == pytest.approx(0.15)
    assert analysis.near_chance([fine]).empty
    # one margin for the list and for the verdicts' floor
    assert inspect.signature(analysis.near_chance).parameters["within"].default is constants.NEAR_CHANCE


def test_per_class_accuracy_and_its_precision(synthetic):
    run = Run(TrainConfig("seed_cnn", "smoke"), pd.DataFrame({"epoch": [1], "test_acc": [0.1]}),
              np.where(synthetic.test_y.numpy() == 0, 0, 1).astype(np.uint8), {"final": {}}, Path("/nonexistent"))
    t = analysis.per_class_table([run], synthetic)
    assert t.loc["airplane", "seed_cnn"] == 100.0 and t.loc["cat", "seed_cnn"] == 0.0
    n, half = analysis.per_class_precision([run], synthetic)  # 20 test images per class: Clopper-Pearson at 10/20
    assert n == 20 and half == pytest.approx(0.228, abs=1e-3)


def test_fit_at_two_rates_compares_each_net_on_the_seeds_the_lower_rate_has():
    def at(model, seed, acc, tag=""):
        r = run_with(model, [acc - 0.05], profile="full", seed=seed)  # clean training accuracy: acc
        return Run(make_config(model, "full", seed, tag=tag), r.history, r.predictions, r.meta, r.path)

    shared = [at("plain20", s, a) for s, a in ((0, 0.90), (1, 0.92), (2, 0.50))]  # seed 2: not at the lower rate
    shared += [at("plain56", s, a) for s, a in ((0, 0.80), (1, 0.84), (2, 0.50))]
    low = [at(m, s, a, tag=constants.LR_CONTROL) for m, s, a in
           (("plain20", 0, 0.91), ("plain20", 1, 0.93), ("plain56", 0, 0.85), ("plain56", 1, 0.87))]  # fmt: skip
    fit = analysis.fit_at_two_rates(shared, low)
    assert list(fit.index) == ["plain20", "plain56"]
    assert list(fit.columns) == ["peak lr 0.8", "peak lr 0.4", "gain (points)"]
    assert fit.loc["plain20", "peak lr 0.8"] == pytest.approx(91.0)
    assert fit.loc["plain56", "peak lr 0.4"] == pytest.approx(86.0)
    assert fit["gain (points)"].tolist() == pytest.approx([1.0, 4.0])
    assert analysis.fit_at_two_rates(shared, []).empty
