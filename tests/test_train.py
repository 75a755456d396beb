"""The training engine and the results store, on CPU with small synthetic data."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from cnnlib import results
from cnnlib.models import register
from cnnlib.results import StaleRunError, fit_or_load, load_run, save_run
from cnnlib.train import PROFILES, TrainConfig, TrainingDiverged, fit, lr_at, make_config

TIMING = ["seconds", "images_per_s"]


def small(model="seed_cnn", **kw):
    kw = dict(dict(epochs=2, train_subset=1000, test_subset=200, lr=0.1, batch_size=50), **kw)
    return make_config(model, "smoke", **kw)


def test_config_validates_and_hashes():
    with pytest.raises(ValueError, match="epochs must be positive"):
        make_config("seed_cnn", "smoke", epochs=0)
    with pytest.raises(ValueError, match="batch_size must be positive"):
        make_config("seed_cnn", "smoke", batch_size=-1)
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        make_config("seed_cnn", "fast")
    with pytest.raises(KeyError, match="unknown model"):
        make_config("vgg", "smoke")
    a, b = make_config("resnet20", "smoke"), make_config("resnet20", "smoke", epochs=3)
    assert a.hash != b.hash and a.hash == make_config("resnet20", "smoke").hash
    assert TrainConfig.from_dict(a.to_dict()) == a
    assert set(PROFILES) >= {"smoke", "full"}


def test_one_cycle_schedule_warms_up_then_decays_to_zero():
    cfg = make_config("seed_cnn", "smoke", lr=1.0, warmup=0.2)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[19] == pytest.approx(1.0) and max(lrs) == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:19], lrs[1:20], strict=True))
    assert all(a > b for a, b in zip(lrs[20:-1], lrs[21:], strict=True)) and lrs[-1] < 0.02


def test_seed_cnn_learns_in_two_epochs(synthetic, store):
    run = fit(small(), data=synthetic, device="cpu", verbose=False)
    h = run.history
    assert list(h["epoch"]) == [1, 2]
    assert h["test_acc"].iloc[-1] > 0.5, "well above the 10% of chance"
    assert h["train_loss"].iloc[-1] < h["train_loss"].iloc[0]
    stages = ["conv1", "conv2", "conv3", "fc1", "fc2", "fc3"]
    assert [c for c in h.columns if c.startswith("grad_")] == [f"grad_{s}" for s in stages]
    assert (h[[f"grad_{s}" for s in stages]] > 0).all().all()
    assert (h[[f"act_std_{s}" for s in stages]] > 0).all().all()
    assert run.predictions.shape == (200,) and run.predictions.dtype == torch.int64
    assert h.attrs["config"]["model"] == "seed_cnn"


def test_cpu_training_is_deterministic(synthetic, store):
    cfg = small("resnet20", epochs=1, train_subset=300, test_subset=100)
    a = fit(cfg, data=synthetic, device="cpu", verbose=False, resume=False)
    b = fit(cfg, data=synthetic, device="cpu", verbose=False, resume=False)
    pd.testing.assert_frame_equal(a.history.drop(columns=TIMING), b.history.drop(columns=TIMING))
    assert torch.equal(a.predictions, b.predictions)
    c = fit(small("resnet20", epochs=1, train_subset=300, test_subset=100, seed=1),
            data=synthetic, device="cpu", verbose=False, resume=False)  # fmt: skip
    assert not c.history["train_loss"].equals(a.history["train_loss"])


def test_resume_after_a_real_interruption_matches_an_uninterrupted_run(store, tmp_path):
    """Kill a training process after its first checkpoint, resume it, compare."""
    epochs = 3
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), *sys.path]))
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "_interrupt_worker.py"), str(epochs)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    ckpt = store / "checkpoints" / "resnet20-smoke-s0" / "last.pt"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    out = proc.communicate()[0].decode()
    assert ckpt.exists(), f"the worker wrote no checkpoint:\n{out}"
    killed_after = torch.load(ckpt, weights_only=False)["epoch"]
    assert killed_after < epochs, "the worker finished before it could be interrupted"

    from synthetic import synthetic_cifar

    data = synthetic_cifar(50, 10)
    cfg = make_config("resnet20", "smoke", epochs=epochs, train_subset=500, test_subset=100)
    resumed = fit(cfg, data=data, device="cpu", verbose=False)
    assert resumed.info["resumed_after_epoch"] == killed_after >= 1
    os.environ["CNNLIB_CHECKPOINTS"] = str(tmp_path / "fresh")
    straight = fit(cfg, data=data, device="cpu", verbose=False)
    assert straight.info["resumed_after_epoch"] == 0
    pd.testing.assert_frame_equal(resumed.history.drop(columns=TIMING), straight.history.drop(columns=TIMING))
    assert torch.equal(resumed.predictions, straight.predictions)
    # the epoch-1 snapshot written before the kill is the same as the uninterrupted run's
    assert list(resumed.snapshots) == list(straight.snapshots) == [1]
    for key, value in straight.snapshots[1].items():
        assert torch.equal(resumed.snapshots[1][key], value), key


def test_store_round_trip_and_fit_or_load_reuses(synthetic, store, monkeypatch):
    cfg = small(epochs=1)
    run = fit_or_load(cfg, data=synthetic, device="cpu", verbose=False)
    meta = json.loads((run.path / "run.json").read_text())
    assert meta["config_hash"] == cfg.hash and meta["config"]["epochs"] == 1
    assert {"torch", "device_name", "data_source", "wall_s", "final"} <= set(meta)
    assert meta["data_source"].startswith("synthetic")
    assert run.predictions.shape == (200,) and run.predictions.dtype == np.uint8
    assert sorted(p.name for p in run.path.iterdir()) == ["history.csv", "model.pt", "predictions.npy", "run.json"]
    assert results.snapshot_epochs_of(run) == []  # a one-epoch run has no earlier epoch to keep
    model = results.load_model(run)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), results.load_model(run)(x)) and not model.training

    def boom(*a, **k):
        raise AssertionError("fit_or_load trained although the run is stored")

    monkeypatch.setattr(results, "fit", boom)
    again = fit_or_load(cfg)
    pd.testing.assert_frame_equal(again.history, run.history)


def test_stale_config_is_refused_with_a_way_out(synthetic, store, monkeypatch):
    fit_or_load(small(epochs=1), data=synthetic, device="cpu", verbose=False)
    changed = small(epochs=2)
    with pytest.raises(StaleRunError, match=r"another config.*epochs.*--retrain"):
        fit_or_load(changed, data=synthetic, device="cpu", verbose=False)
    monkeypatch.setenv("CNNLIB_RETRAIN", "1")
    run = fit_or_load(changed, data=synthetic, device="cpu", verbose=False)
    assert run.final["epochs"] == 2


def test_a_crash_while_saving_leaves_no_half_result(synthetic, store, monkeypatch):
    cfg = small(epochs=1)
    result = fit(cfg, data=synthetic, device="cpu", verbose=False)
    first = save_run(cfg, result)
    before = {p.name: p.read_bytes() for p in first.iterdir()}

    calls = []
    real_replace = os.replace

    def crash_on_second_file(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        real_replace(src, dst)

    monkeypatch.setattr(results.os, "replace", crash_on_second_file)
    with pytest.raises(OSError, match="simulated"):
        save_run(cfg, result)
    monkeypatch.undo()
    leftovers = [p.name for p in first.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == [], "temporary files left behind"
    assert load_run(cfg) is None, "an incomplete run must not be readable as finished"
    # each file is either the old or the new version, never a torn one
    for p in first.iterdir():
        assert p.read_bytes() == before[p.name] or p.name == "history.csv"


_calls = {"n": 0}


class _Explodes(nn.Module):
    """Finite for the first 10 training steps, NaN afterwards."""

    stages = ("fc",)

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x):
        if self.training:
            _calls["n"] += 1
        out = self.fc(x.flatten(1))
        return out * float("nan") if self.training and _calls["n"] > 10 else out


@register
def _nan_after_one_epoch(num_classes: int = 10) -> nn.Module:
    """Test model: its loss turns NaN in the second epoch."""
    return _Explodes()


def test_nan_loss_stops_with_the_epoch_and_keeps_history(synthetic, store):
    _calls["n"] = 0
    # 1000 images in batches of 100: 10 finite steps make exactly one epoch
    cfg = make_config("_nan_after_one_epoch", "smoke", epochs=3, train_subset=1000, test_subset=100, batch_size=100)
    with pytest.raises(TrainingDiverged, match="epoch 2") as err:
        fit(cfg, data=synthetic, device="cpu", verbose=False)
    assert list(err.value.history["epoch"]) == [1]
