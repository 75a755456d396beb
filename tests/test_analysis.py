"""The summary table the notebooks show, on runs built in memory."""

from pathlib import Path

import numpy as np
import pandas as pd

from cnnlib import analysis
from cnnlib.results import Run
from cnnlib.train import make_config


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
