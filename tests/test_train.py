"""The training engine and the results store, on CPU with small synthetic data."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from cnnlib import aftertrain, results
from cnnlib.config import PROFILES, TrainConfig, lr_at, make_config
from cnnlib.models import register
from cnnlib.results import StaleRunError, fit_or_load, load_run, save_run
from cnnlib.train import RunWontFit, StopRule, TrainingDiverged, fit, peek_checkpoint

TIMING = ["seconds", "images_per_s", "epoch_seconds"]


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
    with pytest.raises(ValueError, match="unknown model"):
        make_config("vgg", "smoke")
    a, b = make_config("resnet20", "smoke"), make_config("resnet20", "smoke", epochs=3)
    assert a.hash != b.hash and a.hash == make_config("resnet20", "smoke").hash
    assert TrainConfig.from_dict(a.to_dict()) == a
    assert set(PROFILES) >= {"smoke", "full"}
    tune = make_config("resnet20", "tune")  # 45,000 images at batch 512: 87 full batches, the last one dropped
    assert tune.steps_per_epoch() == 87 == 45_000 // tune.batch_size


def test_every_variant_has_a_name_and_its_runs_a_label():
    from cnnlib.config import TAG_NAMES, TAGS

    assert set(TAG_NAMES) == set(TAGS)
    low = make_config("plain56", "full", tag="lr0.4_wd0.0005")
    assert (low.label, low.variant) == ("plain56 (lr0.4_wd0.0005)", "peak lr 0.4 and weight decay 0.0005")
    assert (make_config("plain56", "full").label, make_config("plain56", "full").variant) == ("plain56", "")


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


def fit_and_measure(cfg, **kw):
    """``fit`` and then the tables measured on the trained weights, as ``fit_or_load`` makes them."""
    result = fit(cfg, **kw)
    result.tables |= results.measure_tables(cfg, result.model, result.data, result.engine,
                                            init_fingerprint=result.info["init_fingerprint"])  # fmt: skip
    return result


def test_cpu_training_is_deterministic(synthetic, store):
    cfg = small("resnet20", epochs=1, train_subset=300, test_subset=100)
    a = fit(cfg, data=synthetic, device="cpu", verbose=False, resume=False)
    # the same config and engine: a busy machine may make the engine check choose another precision for a second
    # run (a check in doubt is taken again), and determinism is promised per config and engine
    b = fit(cfg, data=synthetic, device="cpu", verbose=False, resume=False, engine=a.engine)
    pd.testing.assert_frame_equal(a.history.drop(columns=TIMING), b.history.drop(columns=TIMING))
    assert torch.equal(a.predictions, b.predictions)
    c = fit(small("resnet20", epochs=1, train_subset=300, test_subset=100, seed=1),
            data=synthetic, device="cpu", verbose=False, resume=False, engine=a.engine)  # fmt: skip
    assert not c.history["train_loss"].equals(a.history["train_loss"])


def test_resume_after_a_real_interruption_matches_an_uninterrupted_run(store, tmp_path):
    """Kill a training process after its first checkpoint, resume it, compare."""
    epochs, kill_after = 3, 1
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), *sys.path]))
    proc = subprocess.run([sys.executable, str(Path(__file__).parent / "_interrupt_worker.py"), str(epochs),
                           str(kill_after)], env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    ckpt = store / "checkpoints" / "resnet20-smoke-s0" / "last.pt"
    assert torch.load(ckpt, weights_only=False)["epoch"] == kill_after

    from synthetic import synthetic_cifar

    data = synthetic_cifar(50, 10)
    cfg = make_config("resnet20", "smoke", epochs=epochs, train_subset=500, test_subset=100)
    resumed = fit_and_measure(cfg, data=data, device="cpu", verbose=False)
    assert resumed.info["resumed_after_epoch"] == kill_after
    os.environ["CNNLIB_CHECKPOINTS"] = str(tmp_path / "fresh")
    straight = fit_and_measure(cfg, data=data, device="cpu", verbose=False, engine=resumed.engine)  # same engine
    assert straight.info["resumed_after_epoch"] == 0
    pd.testing.assert_frame_equal(resumed.history.drop(columns=TIMING), straight.history.drop(columns=TIMING))
    assert torch.equal(resumed.predictions, straight.predictions)
    # the gradient profiles measured before the kill travel in the checkpoint: same tables
    assert set(resumed.tables) == set(straight.tables) >= {"layers", "blocks", "responses", "lesion_single"}
    for name, table in straight.tables.items():
        pd.testing.assert_frame_equal(resumed.tables[name], table)
    assert resumed.info["init_fingerprint"] == straight.info["init_fingerprint"]


def test_thin_nets_store_gradient_profiles_and_responses_not_weights(synthetic, store):
    cfg = small("resnet20", epochs=1, train_subset=200, test_subset=100)
    run = fit_or_load(cfg, data=synthetic, device="cpu", verbose=False)
    assert sorted(p.name for p in run.path.iterdir()) == [
        "gradients_blocks.csv", "gradients_layers.csv", "history.csv", "interpolation.csv", "lesion_random.csv",
        "lesion_single.csv", "path_gradients.csv", "predictions.npy", "responses.csv", "run.json",
        "surface_1d.csv", "surface_2d.csv"]  # the degradation family: notebook 07's tables too
    layers, blocks = run.table("layers"), run.table("blocks")
    # 4 steps per epoch: steps 0 and 1 (5 and 20 lie beyond the run), and the end of epoch 1
    assert list(layers.groupby("point", sort=False).size().index) == ["step 0", "step 1", "epoch 1"]
    assert (layers.groupby("point").size() == 20).all()  # resnet20: 19 convs and the classifier
    assert set(blocks["point"]) == set(layers["point"]) and (blocks["per_image"] > 0).all()
    assert len(run.table("responses")) == 9
    lesions = run.table("lesion_single")
    assert len(lesions) == 9 and lesions["accuracy"].notna().all()  # every residual block can be deleted
    assert len(run.table("surface_2d")) == 25 and run.table("interpolation")["t"].tolist()[::20] == [0.0, 1.0]


def test_a_run_that_will_not_fit_stops_checkpointed_and_resumes(synthetic, store):
    cfg = small("resnet20", epochs=3, train_subset=300, test_subset=100)
    with pytest.raises(RunWontFit, match="stopped after epoch 1/3") as err:
        fit(cfg, data=synthetic, device="cpu", verbose=False, stops=StopRule(deadline=time.time()))
    assert err.value.epoch == 1 and err.value.needed_s > 0
    resumed = fit(cfg, data=synthetic, device="cpu", verbose=False)
    assert resumed.info["resumed_after_epoch"] == 1 and len(resumed.history) == 3


def test_a_judged_run_stops_after_its_first_epoch_only_if_the_rest_would_miss_the_deadline(synthetic, store):
    rule = StopRule(deadline=time.time() + 100, until_deadline=True, judge_first=True)
    assert rule.stop(1000.0, first=True) and not rule.stop(10.0, first=True)
    assert not rule.stop(1000.0) and not rule.stop()  # later, and inside epochs: on to the deadline
    seen = []

    @dataclass(frozen=True)
    class Recording(StopRule):
        def stop(self, rest_s=None, *, first=False):
            if rest_s is not None:
                seen.append(first)
            return False

    fit(small("plain20", epochs=3, train_subset=100, test_subset=50), data=synthetic, device="cpu", verbose=False,
        stops=Recording())  # fmt: skip
    assert seen == [True, False]  # after epochs 1 and 2; the last one ends the run anyway


def test_a_run_stopped_inside_an_epoch_resumes_there_bit_for_bit(synthetic, store, tmp_path):
    cfg = small("resnet20", epochs=2, train_subset=300, test_subset=100)  # 6 steps per epoch
    with pytest.raises(RunWontFit, match=r"stopped at the deadline in epoch 1/2 \(step 1/6\)"):
        fit(cfg, data=synthetic, device="cpu", verbose=False, stops=StopRule(deadline=time.time(), until_deadline=True))
    info = peek_checkpoint(cfg)
    assert (info["epoch"], info["step"]) == (0, 1) and info["engine"]["device"] == "cpu"
    resumed = fit_and_measure(cfg, data=synthetic, device="cpu", verbose=False)
    assert resumed.info["resumed_after_epoch"] == 0 and len(resumed.history) == 2
    os.environ["CNNLIB_CHECKPOINTS"] = str(tmp_path / "fresh")
    straight = fit_and_measure(cfg, data=synthetic, device="cpu", verbose=False, engine=resumed.engine)
    pd.testing.assert_frame_equal(resumed.history.drop(columns=TIMING), straight.history.drop(columns=TIMING))
    assert torch.equal(resumed.predictions, straight.predictions)
    for name, table in straight.tables.items():
        pd.testing.assert_frame_equal(resumed.tables[name], table)


def test_store_round_trip_and_fit_or_load_reuses(synthetic, store, monkeypatch):
    cfg = small(epochs=1)
    run = fit_or_load(cfg, data=synthetic, device="cpu", verbose=False)
    meta = json.loads((run.path / "run.json").read_text())
    assert meta["config_hash"] == cfg.hash and meta["config"]["epochs"] == 1
    assert {"torch", "device_name", "data_source", "wall_s", "final"} <= set(meta)
    assert meta["data_source"].startswith("synthetic")
    assert run.predictions.shape == (200,) and run.predictions.dtype == np.uint8
    assert sorted(p.name for p in run.path.iterdir()) == ["history.csv", "predictions.npy", "run.json"]
    assert run.table("layers").empty  # gradient profiles are measured for the thin nets only
    model = aftertrain.load_weights(run)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), aftertrain.load_weights(run)(x)) and not model.training
    assert aftertrain.fingerprint(aftertrain.load_weights(run)) != meta["init_fingerprint"]

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
    run = fit_or_load(changed, retrain=True, data=synthetic, device="cpu", verbose=False)
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

    monkeypatch.setattr(os, "replace", crash_on_second_file)
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
        if self.training and len(x) == 100:  # training batches only, not the gradient probe's
            _calls["n"] += 1
        out = self.fc(x.flatten(1))
        return out * float("nan") if self.training and _calls["n"] > 10 else out


@register
def _nan_after_one_epoch(num_classes: int = 10) -> nn.Module:
    """Test model: its loss turns NaN in the second epoch."""
    return _Explodes()


class _EvalBreaks(_Explodes):
    """Trains with finite losses, but in eval mode its outputs turn NaN after ten steps (as when BatchNorm's
    running statistics overflow: the training loss stays finite, the evaluated model is gone for good)."""

    def forward(self, x):
        if self.training and len(x) == 100:
            _calls["n"] += 1
        out = self.fc(x.flatten(1))
        return out * float("nan") if not self.training and _calls["n"] > 10 else out


@register
def _eval_nan_after_one_epoch(num_classes: int = 10) -> nn.Module:
    """Test model: its eval-mode loss turns NaN after the second epoch."""
    return _EvalBreaks()


def test_an_eval_mode_loss_that_turns_nan_stops_the_run_too(synthetic, store):
    _calls["n"] = 0
    cfg = make_config("_eval_nan_after_one_epoch", "smoke", epochs=3, train_subset=1000, test_subset=100,
                      batch_size=100)  # fmt: skip
    with pytest.raises(TrainingDiverged, match="eval-mode loss on the training images became nan in epoch 2"):
        fit(cfg, data=synthetic, device="cpu", verbose=False)


def test_nan_loss_stops_with_the_epoch_and_keeps_history(synthetic, store):
    _calls["n"] = 0
    # 1000 images in batches of 100: 10 finite steps make exactly one epoch
    cfg = make_config("_nan_after_one_epoch", "smoke", epochs=3, train_subset=1000, test_subset=100, batch_size=100)
    with pytest.raises(TrainingDiverged, match="epoch 2") as err:
        fit(cfg, data=synthetic, device="cpu", verbose=False)
    assert list(err.value.history["epoch"]) == [1]


def test_tables_recomputed_from_the_kept_weights_match_those_made_after_training(synthetic, store):
    cfg = small("resnet20", epochs=1, train_subset=200, test_subset=100)
    run = fit_or_load(cfg, data=synthetic, device="cpu", verbose=False)
    before = {n: run.table(n) for n in ("responses", "lesion_single", "lesion_random", "surface_2d", "interpolation")}
    for p in run.path.glob("lesion_*.csv"):
        p.unlink()
    written = results.recompute_tables(run, data=synthetic)
    assert {"responses", "lesion_single", "surface_2d", "interpolation", "path_gradients"} <= set(written)
    for name, table in before.items():
        pd.testing.assert_frame_equal(run.table(name), table, check_exact=False, rtol=1e-6)


def test_a_stepper_edit_changes_the_net_it_steps():
    from cnnlib.engine import Engine
    from cnnlib.train import stepper

    seen = []
    step = stepper("seed_cnn", 4, Engine("cpu", "fp32", False, False, 1, "plain"), edit=seen.append)
    (model,) = seen
    before = [p.detach().clone() for p in model.parameters()]
    step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))  # the net trained


def test_interleaved_prefixes_are_balanced():
    from cnnlib.train import interleaved

    labels = torch.arange(10).repeat_interleave(30)  # stored class by class, as the data sets are
    idx = interleaved(labels, 25)
    assert torch.bincount(labels[idx], minlength=10).tolist() == [3] * 5 + [2] * 5
    assert sorted(interleaved(labels).tolist()) == list(range(300))


def test_without_a_terminal_a_progress_line_comes_every_few_minutes(monkeypatch, capsys):
    from types import SimpleNamespace

    from cnnlib import train

    now = [1000.0]
    monkeypatch.setattr(train, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    cfg = TrainConfig("resnet20", epochs=40, batch_size=512)
    line = train.ProgressLine(cfg, steps_per_epoch=97, seen=0, log=True)
    step_10_of_epoch_2 = 97 + 10  # optimizer steps taken
    now[0] += train.PROGRESS_EVERY_S - 1
    line.on_step(step_10_of_epoch_2, None, 0.1)
    assert capsys.readouterr().out == ""
    now[0] += 1  # 10 steps of 512 images in 180 s: 28 images/s, 87 steps left
    line.on_step(step_10_of_epoch_2, None, 0.1)
    assert capsys.readouterr().out == ("resnet20-full-s0 epoch 2/40 step 10/97: 28 img/s, the epoch's training ends "
                                       "in about 26 min\n")
    line.on_step(step_10_of_epoch_2 + 1, None, 0.1)  # the next line is due a period later
    silent = train.ProgressLine(cfg, steps_per_epoch=97, log=False)  # on a terminal the bar shows progress
    now[0] += 10 * train.PROGRESS_EVERY_S
    silent.on_step(step_10_of_epoch_2 + 1, None, 0.1)
    assert capsys.readouterr().out == ""
