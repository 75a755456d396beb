import json
import os

import pytest
import torch

from cnnlib import engine
from cnnlib.config import make_config
from cnnlib.engine import Engine
from cnnlib.train import fit, stepper


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLIB_CACHE", str(tmp_path / "cache"))
    for name in ("CNNLIB_PRECISION", "CNNLIB_CHANNELS_LAST", "CNNLIB_COMPILE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "cache"


class FakeLoad:
    """The load meter of a check, reporting a given share of the cores used by other processes."""

    share: float | None = 0.0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.others_share, self.n_cpus = FakeLoad.share, 2
        return False


def fake_steps(monkeypatch, seconds: dict, busy: float | None = 0.0):
    """Checks that time each candidate at ``seconds[(precision, channels_last)]`` with ``busy`` of the cores
    used by others; returns the list of checked models, one entry per check."""
    calls = []

    def steps(model_name, batch, candidates, stepper, rounds=engine.CHECK_ROUNDS, warmup=engine.CHECK_WARMUP):
        calls.append(model_name)
        return {name: [seconds[(e.precision, e.channels_last)]] * rounds for name, e in candidates.items()}

    monkeypatch.setattr(engine, "_interleaved_steps", steps)
    monkeypatch.setattr(FakeLoad, "share", busy)
    monkeypatch.setattr(engine, "_LoadMeter", FakeLoad)
    return calls


def test_a_cpu_without_hardware_bf16_stays_in_fp32(cache, monkeypatch):
    monkeypatch.setattr(engine, "bf16_features", lambda: ())
    # even if bf16 would time faster, it is not a candidate without hardware support
    calls = fake_steps(monkeypatch, {("fp32", False): 0.3, ("fp32", True): 0.2, ("bf16", True): 0.01})
    eng = engine.choose("cpu", "resnet20", 512, stepper=stepper)
    assert (eng.precision, eng.channels_last, eng.compiled) == ("fp32", True, False)
    assert "bf16+cl" not in engine.cached_checks()[next(iter(engine.cached_checks()))]["step_s"]
    assert "no hardware bf16" in eng.reason
    # measured once per machine, model, batch and threads: the second choice reads the cache
    assert engine.choose("cpu", "resnet20", 512, stepper=stepper) == eng and calls == ["resnet20"]
    (key,) = json.loads((cache / "engine.json").read_text())
    assert "resnet20|batch 64|" in key
    assert engine.cached_rate("resnet20") == pytest.approx(64 / 0.2)


def test_a_cpu_with_hardware_bf16_takes_it_only_when_measured_faster(cache, monkeypatch):
    monkeypatch.setattr(engine, "bf16_features", lambda: ("amx_bf16",))
    fake_steps(monkeypatch, {("fp32", False): 0.3, ("fp32", True): 0.2, ("bf16", True): 0.1})
    assert engine.choose("cpu", "resnet20", 512, stepper=stepper).precision == "bf16"
    fake_steps(monkeypatch, {("fp32", False): 0.3, ("fp32", True): 0.2, ("bf16", True): 0.25})
    slower_in_bf16 = engine.choose("cpu", "seed_cnn", 512, stepper=stepper)  # seed_cnn on such a CPU
    assert slower_in_bf16.precision == "fp32"


def test_two_jobs_checking_at_once_both_keep_their_entry(cache, monkeypatch):
    # job A reads an empty cache, then measures; meanwhile job B stores its model's check
    monkeypatch.setattr(engine, "bf16_features", lambda: ())
    fake_steps(monkeypatch, {("fp32", False): 0.3, ("fp32", True): 0.2})
    measure = engine._interleaved_steps

    def steps(model_name, batch, candidates, *args, **kw):
        if model_name == "seed_densenet" and not (cache / "engine.json").exists():
            engine.measured_cpu_choice("seed_resnet18", 64, 1, stepper=stepper)  # B finishes while A measures
        return measure(model_name, batch, candidates, *args, **kw)

    monkeypatch.setattr(engine, "_interleaved_steps", steps)
    engine.measured_cpu_choice("seed_densenet", 64, 1, stepper=stepper)
    keys = json.loads((cache / "engine.json").read_text())
    assert sorted(k.split("|")[2] for k in keys) == ["seed_densenet", "seed_resnet18"]


def test_a_rate_checked_at_another_thread_count_still_counts(cache, monkeypatch):
    monkeypatch.setattr(engine, "bf16_features", lambda: ())
    fake_steps(monkeypatch, {("fp32", False): 0.4, ("fp32", True): 0.5})
    engine.measured_cpu_choice("resnet20", 64, 1, stepper=stepper)  # a training worker's check, at one thread
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # the status command, at two
    assert engine.cached_rate("resnet20") == pytest.approx(64 / 0.4)
    assert engine.cached_rate("resnet56") is None


def test_the_switches_override_the_check_and_bad_values_fail(cache, monkeypatch):
    fake_steps(monkeypatch, {})  # any measurement would fail: the switches decide alone
    monkeypatch.setenv("CNNLIB_PRECISION", "bf16")
    monkeypatch.setenv("CNNLIB_CHANNELS_LAST", "0")
    monkeypatch.setenv("CNNLIB_COMPILE", "1")
    eng = engine.choose("cpu", "resnet20", 512, stepper=stepper)
    assert (eng.precision, eng.channels_last, eng.compiled) == ("bf16", False, True)
    monkeypatch.setenv("CNNLIB_PRECISION", "fp16")
    with pytest.raises(ValueError, match="CNNLIB_PRECISION='fp16'"):
        engine.choose("cpu", "resnet20", 512, stepper=stepper)


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
    engine.measured_cpu_choice("resnet20", 64, 1, stepper=stepper)
    fake_steps(monkeypatch, {("fp32", False): 1.6, ("fp32", True): 2.0})
    engine.measured_cpu_choice("resnet20", 64, 2, stepper=stepper)
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


def test_candidates_are_timed_in_turns_so_a_busy_moment_cannot_pick_the_winner(monkeypatch):
    # bf16 is the faster step, but a busy moment makes its first timed step 20x slower: timed one after
    # the other with a mean (the old check) it would lose; in turns, by the median, it still wins
    order, clock = [], [0.0]
    cost = {"fp32": [0.3] * 9, "fp32+cl": [0.2] * 9, "bf16+cl": [0.1, 0.1, 2.0] + [0.1] * 6}

    def fake_stepper(model_name, batch, eng):
        name = f"{eng.precision}{'+cl' if eng.channels_last else ''}"

        def step():
            order.append(name)
            clock[0] += cost[name].pop(0)

        return step

    candidates = {n: Engine("cpu", n.split("+")[0], n.endswith("+cl")) for n in ("fp32", "fp32+cl", "bf16+cl")}
    times = engine._interleaved_steps("resnet20", 64, candidates, fake_stepper, rounds=5, warmup=2,
                                      clock=lambda: clock[0])  # fmt: skip
    assert order[6:12] == ["fp32", "fp32+cl", "bf16+cl"] * 2  # after two warm-up steps each: in turns
    assert times["bf16+cl"] == pytest.approx([2.0, 0.1, 0.1, 0.1, 0.1])
    medians = {k: sorted(v)[2] for k, v in times.items()}
    assert min(medians, key=medians.get) == "bf16+cl"


def test_a_check_on_busy_cores_is_provisional_and_taken_again_at_the_next_start(cache, monkeypatch):
    monkeypatch.setattr(engine, "bf16_features", lambda: ("amx_bf16",))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # a check with both cores of two
    # on busy cores bf16 steps crawl (measured: 2,256 ms against 89 ms on free cores, resnet20 at batch 64)
    calls = fake_steps(monkeypatch, {("fp32", False): 0.31, ("fp32", True): 0.26, ("bf16", True): 2.26}, busy=0.55)
    busy = engine.choose("cpu", "resnet20", 512, stepper=stepper)
    assert busy.precision == "fp32" and "provisional" in busy.reason and "55%" in busy.reason
    (entry,) = engine.cached_checks().values()
    assert entry["trusted"] is False and entry["others_share"] == 0.55
    assert engine.cached_rate("resnet20") is None  # the plan's estimates read trusted checks only
    # the next run checks again; on free cores bf16 wins, and that check stands
    fake_steps(monkeypatch, {("fp32", False): 0.17, ("fp32", True): 0.13, ("bf16", True): 0.09}, busy=0.02)
    free = engine.choose("cpu", "resnet20", 512, stepper=stepper)
    assert (free.precision, free.channels_last) == ("bf16", True)
    assert engine.cached_rate("resnet20") == pytest.approx(64 / 0.09)
    calls = fake_steps(monkeypatch, {}, busy=0.9)  # a trusted check is not taken again, busy or not
    assert engine.choose("cpu", "resnet20", 512, stepper=stepper) == free and calls == []


def test_a_long_run_waits_for_free_cores_and_keeps_the_least_loaded_check(cache, monkeypatch):
    monkeypatch.setattr(engine, "bf16_features", lambda: ("amx_bf16",))
    monkeypatch.setattr(engine, "CHECK_PAUSE_S", 0.0)
    fake_steps(monkeypatch, {("fp32", False): 0.3, ("fp32", True): 0.2, ("bf16", True): 0.1})
    shares = iter([0.6, 0.4, 0.5])

    class Load(FakeLoad):
        def __exit__(self, *exc):
            self.others_share, self.n_cpus = next(shares), 2

    monkeypatch.setattr(engine, "_LoadMeter", Load)
    m = engine.measured_cpu_choice("resnet20", 64, 2, stepper=stepper, tries=3)
    assert m["others_share"] == 0.4 and m["trusted"] is False  # all three busy: the least loaded is kept
    shares = iter([0.6, 0.1, 0.9])
    m = engine.measured_cpu_choice("resnet20", 64, 2, stepper=stepper, tries=3)
    assert m["others_share"] == 0.1 and m["trusted"] is True  # the second was free: no third


def test_old_checks_without_a_recorded_load_are_taken_again(cache, monkeypatch):
    # the cached entry of the busy moment that left resnet20 in fp32 on an AMD EPYC with AVX512-BF16
    monkeypatch.setattr(engine, "bf16_features", lambda: ("avx512_bf16",))
    key = engine._key("resnet20", 64, torch.get_num_threads())
    engine._remember(engine._cache_path(), key, dict(precision="fp32", channels_last=True, batch=64,
                     step_s={"bf16+cl": 1.232, "fp32": 0.282, "fp32+cl": 0.246}))  # fmt: skip
    assert engine.cached_rate("resnet20") is None
    fake_steps(monkeypatch, {("fp32", False): 0.167, ("fp32", True): 0.132, ("bf16", True): 0.087})
    assert engine.choose("cpu", "resnet20", 512, stepper=stepper).precision == "bf16"


def test_a_run_far_below_its_checks_prediction_puts_the_check_in_doubt(cache, monkeypatch):
    monkeypatch.setattr(engine, "bf16_features", lambda: ("amx_bf16",))
    fake_steps(monkeypatch, {("fp32", False): 0.3, ("fp32", True): 0.2, ("bf16", True): 0.1})
    eng = engine.choose("cpu", "resnet20", 512, stepper=stepper)  # predicts 640 img/s
    assert engine.confirm(eng, "resnet20", 512, 700.0) is None  # a rate like the check's confirms it
    assert engine.confirm(Engine("cpu", "fp32", threads=eng.threads, reason="test"), "resnet20", 512, 1.0) is None
    msg = engine.confirm(eng, "resnet20", 512, 250.0)
    assert "250 img/s" in msg and "640" in msg and "taken again" in msg
    (entry,) = engine.cached_checks().values()
    assert entry["doubted"] and not engine.trusted(entry) and engine.cached_rate("resnet20") is None
    calls = fake_steps(monkeypatch, {("fp32", False): 0.3, ("fp32", True): 0.2, ("bf16", True): 0.1})
    engine.choose("cpu", "resnet20", 512, stepper=stepper)
    assert calls == ["resnet20"] and engine.trusted(next(iter(engine.cached_checks().values())))


def test_a_training_run_confirms_its_check_after_its_first_epoch(cache, synthetic, store, monkeypatch, capsys):
    # a check that predicts far more than any CPU trains: the run's first epoch puts it in doubt, says so,
    # and keeps its engine
    monkeypatch.setattr(engine, "bf16_features", lambda: ())
    fake_steps(monkeypatch, {("fp32", False): 1e-4, ("fp32", True): 2e-4})  # 640,000 img/s
    cfg = make_config("seed_cnn", "smoke", epochs=6)  # 24 steps: long enough to be worth a check
    result = fit(cfg, data=synthetic, device="cpu", verbose=False)
    assert result.info["engine"]["precision"] == "fp32" and not result.info["engine"]["channels_last"]
    (entry,) = engine.cached_checks().values()
    assert "img/s" in entry["doubted"]
    assert capsys.readouterr().out.count("in doubt") == 1  # after the first epoch only


def test_a_run_shorter_than_a_check_is_not_checked(cache, synthetic, store, monkeypatch):
    calls = fake_steps(monkeypatch, {("fp32", False): 0.3, ("fp32", True): 0.2, ("bf16", True): 0.1})
    result = fit(make_config("seed_cnn", "smoke", epochs=2), data=synthetic, device="cpu", verbose=False)  # 8 steps
    e = result.info["engine"]
    assert calls == [] and engine.cached_checks() == {} and (e["precision"], e["channels_last"]) == ("fp32", False)
    assert e["reason"] == f"not measured: 8 training steps, fewer than the {engine.CHECK_STEPS} a check takes"


def test_the_load_meter_counts_other_processes_only():
    # this process's own work is not load: a busy loop here leaves the others' share near what it was
    with engine._LoadMeter() as load:
        t0 = __import__("time").perf_counter()
        while __import__("time").perf_counter() - t0 < 0.3:
            pass
    if load.others_share is not None:  # None where /proc/stat is missing
        assert 0.0 <= load.others_share <= 1.0


def test_a_one_thread_check_leaves_the_other_core_to_other_work(cache, monkeypatch):
    # a one-thread training job beside it uses half of two cores: a one-thread check still has a core of its
    # own and stands; a two-thread check beside the same job does not
    monkeypatch.setattr(engine, "bf16_features", lambda: ("amx_bf16",))
    fake_steps(monkeypatch, {("fp32", False): 0.3, ("fp32", True): 0.2, ("bf16", True): 0.1}, busy=0.5)
    assert engine.check("resnet20", 64, 1, stepper=stepper)["trusted"] is True
    assert engine.check("resnet20", 64, 2, stepper=stepper)["trusted"] is False
    fake_steps(monkeypatch, {("fp32", False): 0.3, ("fp32", True): 0.2, ("bf16", True): 0.1}, busy=0.8)
    assert engine.check("resnet20", 64, 1, stepper=stepper)["trusted"] is False
