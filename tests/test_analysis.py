"""The summary table the notebooks show, on runs built in memory."""

from pathlib import Path

import numpy as np
import pandas as pd

from cnnlib import analysis
from cnnlib.config import make_config
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
    assert "peak GPU MB" not in table.columns
    assert "n/a (CPU)" not in table.to_string()
    assert table.loc["seed_cnn", "seeds"] == 2 and table.loc["seed_cnn", "final test acc (%)"] == "40.0 ± 0.0"


def test_the_summary_table_keeps_gpu_memory_when_a_run_has_it():
    table = analysis.summary_table([run("seed_cnn", peak_memory_mb=812.4), run("plain20")])
    assert list(table.columns).index("peak GPU MB") == list(table.columns).index("s / epoch") + 1
    assert table.loc["seed_cnn", "peak GPU MB"] == 812 and table.loc["plain20", "peak GPU MB"] == "n/a (CPU)"


def test_figure_notes_group_runs_by_profile_with_their_image_counts_and_seeds():
    runs = [run("seed_cnn", 0), run("plain20", 1), run("seed_cnn", 2)]
    assert [(p, sizes, len(g)) for p, sizes, g in analysis.profile_groups(runs)] == [
        ("smoke", "200 training / 100 test images", 3)]
    assert analysis.data_note(runs) == "profile 'smoke', 200 training / 100 test images, seeds 0, 1, 2"
    assert analysis.data_note(runs[:1]) == "profile 'smoke', 200 training / 100 test images, seed 0"


def test_families_of_different_profiles_get_their_profile_in_their_title_and_panels_of_their_own(monkeypatch):
    from test_findings import LABELS, run_with

    full = [run_with("seed_senet18", [0.5, 0.9], profile="full"), run_with("seed_cnn", [0.4, 0.6], profile="full")]
    pilot = [run_with("resnet18", [0.2, 0.3]), run_with("plainnet18", [0.2, 0.35])]
    families = {"original models": full, "controlled family": pilot}
    assert analysis.family_titles(families) == {"original models": "original models (profile 'full')",
                                                "controlled family": "controlled family (profile 'smoke')"}
    assert analysis.family_titles({"a": pilot, "b": pilot[:1]}) == {"a": "a", "b": "b"}
    assert analysis.profiles_line(families).startswith(
        "Results shown: original models: profile **full**; controlled family: profile **smoke**. ")
    assert analysis.profiles_line({"a": pilot, "b": pilot}) == "Results shown: profile **smoke**."

    monkeypatch.setattr(analysis, "test_labels", lambda _data, _run: LABELS)  # the fake runs' test images
    panels = analysis.accuracy_cost_panels(families, data=None)
    assert [t.split("\n")[0] for t in panels] == ["original models", "controlled family"]
    assert ["profile 'full'" in t for t in panels] == [True, False]
    first = panels[next(t for t in panels if "full" in t)]
    assert first["model"].tolist() == ["seed_cnn", "seed_senet18"]  # sorted by cost
    assert first["acc"].tolist() == [0.6, 0.9] and set(first["profile"]) == {"full"}
    assert ((first["low"] < first["acc"]) & (first["acc"] < first["high"])).all()
    (title, table), = analysis.accuracy_cost_panels({"a": pilot, "b": pilot[:1]}, data=None).items()
    assert title.startswith("profile 'smoke'") and len(table) == 3  # one profile: one panel of every run


def test_recipes_are_read_from_the_configs_and_the_differences_named():
    fams = {"a": [make_config(m, "smoke", lr=0.1, epochs=20) for m in ("resnet20", "plain20")],
            "b": [make_config("resnet56", "smoke", lr=0.8, epochs=10)]}
    table = analysis.recipe_table(fams)
    assert table.loc["a", "peak lr"] == "0.1" and table.loc["b", "epochs"] == "10"
    assert table.loc["a", "models"] == "resnet20, plain20"
    note = analysis.recipe_note(fams)
    assert "a: peak lr 0.1, epochs 20; b: peak lr 0.8, epochs 10" in note
    assert "batch" in note.split("shared: ")[1]  # what they share is listed once
    mixed = analysis.recipe_table({"c": [make_config("resnet20", "smoke", lr=0.1), make_config("plain20", "smoke",
                                                                                               lr=0.2)]})  # fmt: skip
    assert mixed.loc["c", "peak lr"] == "0.1 / 0.2"
    one = analysis.recipe_note({"a": fams["a"][:1], "b": [make_config("plain20", "smoke", lr=0.1, epochs=20)]})
    assert one.startswith("They share one recipe: peak lr 0.1, epochs 20")
