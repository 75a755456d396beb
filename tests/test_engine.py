import json
import os

import pytest
import torch

from cnnlib import engine
from cnnlib.engine import Engine
from cnnlib.train import fit, make_config


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLIB_CACHE", str(tmp_path / "cache"))
    for name in ("CNNLIB_PRECISION", "CNNLIB_CHANNELS_LAST", "CNNLIB_COMPILE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "cache"


def fake_steps(monkeypatch, seconds: dict):
    calls = []

    def step(model, batch, precision, channels_last, steps=2):
        calls.append((precision, channels_last))
        return seconds[(precision, channels_last)]

    monkeypatch.setattr(engine, "_step_seconds", step)
    return calls


def test_a_cpu_without_hardware_bf16_stays_in_fp32(cache, monkeypatch):
    monkeypatch.setattr(engine, "bf16_features", lambda: ())
    # even if bf16 would time faster, it is not a candidate without hardware support
    calls = fake_steps(monkeypatch, {("fp32", False): 0.3, ("fp32", True): 0.2, ("bf16", True): 0.01})
    eng = engine.choose("cpu", "resnet20", 512)
    assert (eng.precision, eng.channels_last, eng.compiled) == ("fp32", True, False)
    assert ("bf16", True) not in calls and "no hardware bf16" in eng.reason
    # measured once per machine, model, batch and threads: the second choice reads the cache
    assert engine.choose("cpu", "resnet20", 512) == eng and len(calls) == 2
    (key,) = json.loads((cache / "engine.json").read_text())
    assert "resnet20|batch 64|" in key
    assert engine.cached_rate("resnet20") == pytest.approx(64 / 0.2)


def test_a_cpu_with_hardware_bf16_takes_it_only_when_measured_faster(cache, monkeypatch):
    monkeypatch.setattr(engine, "bf16_features", lambda: ("amx_bf16",))
    fake_steps(monkeypatch, {("fp32", False): 0.3, ("fp32", True): 0.2, ("bf16", True): 0.1})
    assert engine.choose("cpu", "resnet20", 512).precision == "bf16"
    fake_steps(monkeypatch, {("fp32", False): 0.3, ("fp32", True): 0.2, ("bf16", True): 0.25})
    assert engine.choose("cpu", "seed_cnn", 512).precision == "fp32"  # slower in bf16 (seed_cnn on such a CPU)


def test_two_jobs_checking_at_once_both_keep_their_entry(cache, monkeypatch):
    # job A reads an empty cache, then measures; meanwhile job B stores its model's check
    monkeypatch.setattr(engine, "bf16_features", lambda: ())
    steps = {("fp32", False): 0.3, ("fp32", True): 0.2}

    def step(model_name, batch, precision, channels_last, steps_=2):
        if model_name == "seed_densenet" and not (cache / "engine.json").exists():
            engine.measured_cpu_choice("seed_resnet18", 64, 1)  # B finishes while A measures
        return steps[(precision, channels_last)]

    monkeypatch.setattr(engine, "_step_seconds", step)
    engine.measured_cpu_choice("seed_densenet", 64, 1)
    keys = json.loads((cache / "engine.json").read_text())
    assert sorted(k.split("|")[2] for k in keys) == ["seed_densenet", "seed_resnet18"]


def test_a_rate_checked_at_another_thread_count_still_counts(cache, monkeypatch):
    monkeypatch.setattr(engine, "bf16_features", lambda: ())
    fake_steps(monkeypatch, {("fp32", False): 0.4, ("fp32", True): 0.5})
    engine.measured_cpu_choice("resnet20", 64, 1)  # a training worker's check, at one thread
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # the status command, at two
    assert engine.cached_rate("resnet20") == pytest.approx(64 / 0.4)
    assert engine.cached_rate("resnet56") is None


def test_the_switches_override_the_check_and_bad_values_fail(cache, monkeypatch):
    fake_steps(monkeypatch, {})  # any measurement would fail: the switches decide alone
    monkeypatch.setenv("CNNLIB_PRECISION", "bf16")
    monkeypatch.setenv("CNNLIB_CHANNELS_LAST", "0")
    monkeypatch.setenv("CNNLIB_COMPILE", "1")
    eng = engine.choose("cpu", "resnet20", 512)
    assert (eng.precision, eng.channels_last, eng.compiled) == ("bf16", False, True)
    monkeypatch.setenv("CNNLIB_PRECISION", "fp16")
    with pytest.raises(ValueError, match="CNNLIB_PRECISION='fp16'"):
        engine.choose("cpu", "resnet20", 512)


def test_a_tiny_model_trains_in_bf16_channels_last_and_records_how(synthetic, store):
    bf16 = Engine("cpu", "bf16", True, False, torch.get_num_threads(), "test")
    cfg = make_config("seed_cnn", "smoke", epochs=2)
    result = fit(cfg, data=synthetic, device="cpu", engine=bf16, verbose=False)
    h = result.history
    assert torch.isfinite(torch.tensor(h["train_loss"].to_numpy())).all() and len(h) == 2
    assert h["train_loss"].iloc[-1] < h["train_loss"].iloc[0]
    rec = result.info["engine"]
    assert (rec["precision"], rec["channels_last"], rec["compiled"]) == ("bf16", True, False)
    assert "cpu" in rec and isinstance(rec["bf16_features"], list)
    assert all(v.dtype == torch.float32 for v in result.state_dict.values() if v.is_floating_point())
    # the same engine gives the same history, bit for bit
    again = fit(cfg, data=synthetic, device="cpu", engine=bf16, verbose=False, resume=False)
    cols = ["train_loss", "train_acc", "test_loss", "test_acc", "clean_train_loss"]
    assert again.history[cols].equals(h[cols])


def test_the_plan_reads_the_rate_checked_at_its_jobs_thread_count(cache, monkeypatch):
    # a one-thread worker's check with the cores free, and a two-thread check taken on a loaded machine
    monkeypatch.setattr(engine, "bf16_features", lambda: ())
    fake_steps(monkeypatch, {("fp32", False): 0.4, ("fp32", True): 0.5})
    engine.measured_cpu_choice("resnet20", 64, 1)
    fake_steps(monkeypatch, {("fp32", False): 1.6, ("fp32", True): 2.0})
    engine.measured_cpu_choice("resnet20", 64, 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert engine.cached_rate("resnet20") == pytest.approx(64 / 1.6)  # this process's own thread count
    assert engine.cached_rate("resnet20", threads=1) == pytest.approx(64 / 0.4)  # the training jobs'
    # a rate checked at one thread count stands in for another, unless only that thread count's will do
    assert engine.cached_rate("resnet20", threads=4) == pytest.approx(64 / 0.4)
    assert engine.cached_rate("resnet20", threads=4, exact=True) is None


def test_the_engine_cache_can_live_elsewhere(tmp_path):
    import subprocess
    import sys

    where = tmp_path / "checks.json"
    env = {**os.environ, "CNNLIB_ENGINE_CACHE": str(where)}
    code = "from cnnlib import engine; print(engine._cache_path())"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == str(where)  # fmt: skip
