"""The command line: what works, and one clear line for each user error."""

import argparse
import math
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from cnnlib.__main__ import _parser, main
from cnnlib.models import FAMILIES

COMMANDS = ["list", "summary", "train", "status", "train-missing", "engine", "tables", "verify", "readme", "report"]


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse exits on bad arguments
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_the_four_families(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    assert out.splitlines()[0].split() == ["seed", "seed_cnn", "seed_resnet18", "seed_densenet", "seed_senet18"]
    assert "resnet56" in out.splitlines()[2]


def test_summary_prints_a_torchinfo_table(capsys):
    code, out, _ = run(capsys, "summary", "seed_cnn")
    assert code == 0 and "Total params: 62,278" in out


@pytest.mark.parametrize(
    "argv, words",
    [
        (["train", "resnet19"], "unknown model 'resnet19'"),
        (["summary", "vgg16"], "unknown model 'vgg16'; choose from seed_cnn, "),
        (["summary", "vgg16"], "(see python -m cnnlib list)"),
        (["report", "--profile", "bogus"], "invalid choice: 'bogus'"),
        (["train", "resnet20", "--profile", "huge"], "invalid choice: 'huge'"),
        (["train", "resnet20", "--epochs", "0"], "must be positive, got 0"),
        (["train", "resnet20", "--epochs", "two"], "expected a whole number"),
        (["train", "resnet20", "--batch-size", "-8"], "must be positive, got -8"),
        (["train-missing", "--budget", "0"], "must be positive"),
        (["train-missing"], "--budget"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["train", "resnet20", "--epochs", "0"], "(see python -m cnnlib train --help)"),
    ],
)
def test_user_errors_give_one_line_and_exit_2(capsys, argv, words):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert words in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_missing_data_in_a_real_process(tmp_path):
    env = dict(os.environ, CNNLIB_DATA=str(tmp_path / "nowhere"), CNNLIB_CACHE=str(tmp_path / "cache"),
               CNNLIB_RESULTS=str(tmp_path / "results"), CNNLIB_CHECKPOINTS=str(tmp_path / "ckpt"))  # fmt: skip
    env["CNNLIB_DOWNLOAD"] = "0"
    proc = subprocess.run([sys.executable, "-m", "cnnlib", "train", "seed_cnn", "--profile", "smoke"],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: No CIFAR-10 data found")
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and all(len(line) < 160 for line in lines), proc.stderr  # what is missing; the fixes
    assert "cifar10-jpg.tar.gz" in proc.stderr and "cifar-10-python.tar.gz" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_lists_every_command_in_plain_text(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "``" not in out
    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(commands.choices) == COMMANDS
    text = " ".join(out.split())  # help lines wrap with the terminal's width
    assert text.startswith("usage: python -m cnnlib [-h] COMMAND ...")
    for action in commands._get_subactions():
        assert f" {action.dest} {' '.join(action.help.split())} " in text, action.dest
    for command in COMMANDS:
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and "``" not in out and out.startswith(f"usage: python -m cnnlib {command}")


def _fake_fit(calls):
    """A fit that trains nothing: one epoch's history, as cnnlib.train.fit hands it to the store."""
    import pandas as pd
    import torch

    from cnnlib.train import FitResult

    def fit(cfg, **kw):
        calls.append(cfg.run_id)
        history = pd.DataFrame(dict(epoch=[1], train_loss=[2.0], train_acc=[0.2], test_loss=[2.1], test_acc=[0.25],
                                    seconds=[3.0]))  # fmt: skip
        return FitResult(history, torch.zeros(10, dtype=torch.long), dict(train_s=3.0, device_name="cpu"), {}, {})

    return fit


def test_training_a_stored_run_again_says_it_was_loaded(capsys, store, monkeypatch):
    from cnnlib import results

    calls = []
    monkeypatch.setattr(results, "fit", _fake_fit(calls))
    monkeypatch.chdir(store)
    argv = ["train", "seed_cnn", "--profile", "smoke"]
    trained = "seed_cnn-smoke-s0: test accuracy 0.2500 after 1 epochs, 3 s of training on cpu"
    code, out, _ = run(capsys, *argv)
    assert code == 0 and out == f"{trained} -> results/seed_cnn-smoke-s0\n" and calls == ["seed_cnn-smoke-s0"]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and calls == ["seed_cnn-smoke-s0"]  # not trained again
    assert out == ("seed_cnn-smoke-s0: loaded from results/seed_cnn-smoke-s0, not retrained (use --retrain); "
                   "test accuracy 0.2500 after 1 epochs, 3 s of training on cpu\n")  # fmt: skip
    code, out, _ = run(capsys, *argv, "--retrain")
    assert code == 0 and len(calls) == 2 and out.startswith(trained)


def test_an_unknown_run_points_to_the_status_of_its_profile(capsys, store):
    code, _, err = run(capsys, "tables", "resnet56-cpu-s0")
    assert code == 2 and err == ("error: no stored run 'resnet56-cpu-s0'; see python -m cnnlib status --profile cpu "
                                 "for the run ids\n")  # fmt: skip
    code, _, err = run(capsys, "tables", "nonsense", "resnet56-cpu-s0")
    assert code == 2 and "no stored run 'nonsense', 'resnet56-cpu-s0'; see python -m cnnlib status --profile PROFILE" \
        in err


def test_report_checks_the_profile_before_anything_starts(capsys, store, monkeypatch):
    from cnnlib import data, report

    def never(*args, **kwargs):
        raise AssertionError("started although the profile is unknown")

    monkeypatch.setattr(data, "load_cifar10", never)
    monkeypatch.setattr(report, "_execute", never)
    monkeypatch.setenv("CNNLIB_PROFILE", "bogus")
    code, out, err = run(capsys, "report", "--out", str(store / "report"))
    assert code == 2 and out == ""
    assert err == "error: unknown profile 'bogus' (from CNNLIB_PROFILE); choose from cpu, full, smoke, tune\n"
    assert not (store / "report").exists()


def test_status_lists_the_plan(capsys, store):
    from cnnlib.plan import job_threads

    code, out, _ = run(capsys, "status", "--profile", "smoke")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split()[:2] == ["missing", "seed_cnn-smoke-s0"]  # the original report's models come first
    assert lines[-1] == "0/49 runs of the 'smoke' plan exist; 49 missing"
    # the hours are those of the job(s) train-missing starts by default, at their thread count
    assert ("training left on this machine, in hours of one training job (train-missing --workers 1: "
            f"{job_threads(1)} thread(s) each)") in out
    assert any(line.strip().startswith("stage 2 degradation, seed 0:") for line in lines)


def test_status_names_what_a_run_was_scored_on_and_the_jobs_it_estimates_for(capsys, store, monkeypatch):
    from cnnlib import plan
    from cnnlib.config import make_config
    from cnnlib.plan import PlanStatus, job_threads

    check, full = make_config("plain20", "tune", 0, tag="lr0.8_wd0.0005"), make_config("plain20", "full", 0)
    rows = [PlanStatus(check, "done", 0.8092, 900.0, "CPU: t"), PlanStatus(full, "done", 0.8581, 3180.0, "CPU: t")]
    monkeypatch.setattr(plan, "status", lambda profile, checkpoints=False: rows)
    code, out, _ = run(capsys, "status", "--profile", "smoke", "--workers", "2")
    assert code == 0
    lines = out.splitlines()
    # a recipe-check run never saw the test set: its number is held-out accuracy
    assert lines[0].split()[:4] == ["done", check.run_id, "held-out", "acc"] and "0.8092" in lines[0]
    assert lines[1].split()[:4] == ["done", full.run_id, "test", "acc"] and "0.8581" in lines[1]
    assert f"(train-missing --workers 2: {job_threads(2)} thread(s) each)" in out


def test_status_says_a_stage_with_no_rate_has_none_rather_than_zero_hours(capsys, store, monkeypatch):
    from cnnlib import plan

    monkeypatch.setattr(plan, "stage_hours_left", lambda profile, threads=None: [
        ("1 original", 0.0, 0.0, 4), ("2 degradation", 1.5, 1.52, 2), ("3 controlled", 2.0, 2.6, 0)])
    code, out, _ = run(capsys, "status", "--profile", "smoke")
    assert code == 0
    assert "  stage 1 original: no measured rate yet for its 4 missing run(s) (--measure times them)" in out
    assert "  stage 2 degradation: 1.5 h (+2 run(s) with no measured rate yet)" in out
    assert "  stage 3 controlled: 2.0 h (2.6 h at the median stored rates)" in out


def test_train_missing_respects_the_budget_and_reports_skips(store, synthetic, monkeypatch):
    from cnnlib import plan

    monkeypatch.setattr(plan, "estimate_seconds", lambda cfg, data, dev, **kw: 5 if cfg.model == "seed_cnn" else 1e9)
    lines = []
    out = plan.train_missing(60, "smoke", device="cpu", data=synthetic, log=lines.append, policy="units")
    seed_cnn = [f"seed_cnn-smoke-s{s}" for s in (0, 1, 2)]  # seed 0, then seeds 1-2 in stage 6
    assert out["trained"] == seed_cnn
    assert len(out["skipped"]) == 46 and "resnet18-smoke-s0" in out["skipped"]
    # a family is one unit: skipped together, never left with one member
    assert any(line.startswith("skip plainnet18-smoke-s0 resnet18-smoke-s0 se_resnet18-smoke-s0 densenet121-smoke-s0:")
               for line in lines)
    again = plan.train_missing(60, "smoke", device="cpu", data=synthetic, log=lines.append, policy="units")
    assert again["done"] == seed_cnn and again["trained"] == []


@pytest.mark.parametrize("args, words", [
    (["train", "resnet20", "--device", "gpu"], "unknown device 'gpu'"),
    (["train", "resnet20", "--device", "cuda"], "no CUDA GPU"),
    (["train", "resnet20", "--seed", "-1"], "must be 0 or more"),
    (["train", "resnet21"], "unknown model 'resnet21'"),
    (["train", "resnet20", "--tag", "fast"], "unknown tag 'fast'"),
])  # fmt: skip
def test_user_errors_end_in_one_line(capsys, store, args, words):
    code, out, err = run(capsys, *args)
    assert code == 2 and words in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_family_trains_whole_or_not_at_all(store, synthetic, monkeypatch):
    from cnnlib import plan

    # each degradation run would fit alone, the four together do not
    monkeypatch.setattr(plan, "estimate_seconds", lambda cfg, d, dev, **kw: 20 if cfg.model in FAMILIES["degradation"]
                        and not cfg.tag else 1e9)  # fmt: skip
    lines = []
    out = plan.train_missing(60, "smoke", device="cpu", data=synthetic, log=lines.append, policy="units")
    assert out["trained"] == [] and "plain20-smoke-s0" in out["skipped"]
    family = "plain20-smoke-s0 plain56-smoke-s0 resnet20-smoke-s0 resnet56-smoke-s0"
    assert any(line.startswith(f"skip {family}: needs about 80 s") for line in lines)


def test_on_a_cpu_the_plan_trains_run_after_run_and_stops_at_the_deadline(store, synthetic, monkeypatch):
    from cnnlib import plan
    from cnnlib.train import RunWontFit

    # estimates play no part: a run that does not fit trains until the deadline and resumes next time
    monkeypatch.setattr(plan, "estimate_seconds", lambda cfg, data, dev, **kw: 1e9)
    calls = []

    def fake_fit_or_load(cfg, **kw):
        calls.append((cfg.run_id, kw["stops"].until_deadline))
        if cfg.model == "seed_resnet18":
            raise RunWontFit(f"{cfg.run_id}: stopped at the deadline", 0, float("nan"))
        return SimpleNamespace(final={"test_acc": 0.5}, meta={"train_s": 1.0})

    monkeypatch.setattr(plan, "fit_or_load", fake_fit_or_load)
    out = plan.train_missing(3600, "smoke", device="cpu", data=synthetic, log=lambda line: None,
                             models=["seed_cnn", "seed_resnet18", "plain20"])  # fmt: skip
    assert calls == [("seed_cnn-smoke-s0", True), ("seed_resnet18-smoke-s0", True)]
    assert out["trained"] == ["seed_cnn-smoke-s0"] and out["stopped"] == ["seed_resnet18-smoke-s0"]
    assert out["skipped"][0] == "plain20-smoke-s0"  # what comes after the stopped run waits
    with pytest.raises(ValueError, match="unknown policy"):
        plan.train_missing(1, "smoke", device="cpu", data=synthetic, policy="random")


def test_the_sequential_log_estimates_only_from_rates_at_the_jobs_threads(store, synthetic, monkeypatch):
    from cnnlib import plan

    # the engine's check of this model was made at another thread count only: no estimate from it
    checked = {1: 64 / 0.7}
    monkeypatch.setattr(plan.engine, "cached_rate",
                        lambda model, threads=None, exact=False: checked.get(threads) if exact else 64 / 0.7)
    monkeypatch.setattr(plan.torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(plan, "fit_or_load", lambda cfg, **kw: SimpleNamespace(final={"test_acc": 0.5},
                                                                               meta={"train_s": 1.0}))
    lines = []
    plan.train_missing(3600, "smoke", device="cpu", data=synthetic, log=lines.append, models=["seed_cnn"])
    assert any(line.startswith("train seed_cnn-smoke-s0 (no rate at 2 thread(s) yet;") for line in lines), lines
    checked[2] = 64 / 0.35
    lines.clear()
    plan.train_missing(3600, "smoke", device="cpu", data=synthetic, log=lines.append, models=["plain20"])
    assert any(line.startswith("train plain20-smoke-s0 (about ") for line in lines), lines


def test_a_checkpointed_run_resumes_before_the_rest_of_its_unit(store, synthetic, monkeypatch):
    from cnnlib import plan

    real = plan.run_status

    def run_status(cfg, checkpoints=False):  # plain56 has a checkpoint, its unit's other runs have none
        if checkpoints and cfg.run_id == "plain56-smoke-s0":
            return plan.PlanStatus(cfg, "partly", epochs_done=1, steps_done=0)
        return real(cfg, checkpoints=checkpoints)

    calls = []
    monkeypatch.setattr(plan, "run_status", run_status)
    monkeypatch.setattr(plan, "estimate_seconds", lambda cfg, data, dev, **kw: 5)
    monkeypatch.setattr(plan, "fit_or_load", lambda cfg, **kw: calls.append(cfg.run_id) or SimpleNamespace(
        final={"test_acc": 0.5}, meta={"train_s": 1.0}))
    plan.train_missing(3600, "smoke", device="cpu", data=synthetic, log=lambda line: None,
                       models=["plain20", "plain56", "resnet20"])  # fmt: skip
    assert calls[:3] == ["plain56-smoke-s0", "plain20-smoke-s0", "resnet20-smoke-s0"]


def test_the_finish_policy_starts_only_runs_that_fit_and_goes_on_with_shorter_ones(store, synthetic, monkeypatch):
    from cnnlib import plan
    from cnnlib.train import RunWontFit

    # seed_resnet18 would not finish in the call; the runs after it, shorter, still train
    seconds = {"seed_cnn": 5, "seed_resnet18": 1e9, "plain20": 5}
    monkeypatch.setattr(plan, "estimate_seconds", lambda cfg, data, dev, **kw: seconds[cfg.model])
    calls = []

    def fake_fit_or_load(cfg, **kw):
        calls.append((cfg.run_id, kw["stops"].until_deadline))
        if cfg.model == "seed_resnet18":
            raise RunWontFit(f"{cfg.run_id}: stopped at the deadline", 0, math.inf)
        return SimpleNamespace(final={"test_acc": 0.5}, meta={"train_s": 1.0})

    monkeypatch.setattr(plan, "fit_or_load", fake_fit_or_load)
    lines = []
    out = plan.train_missing(3600, "smoke", device="cpu", data=synthetic, log=lines.append, policy="finish",
                             models=["seed_cnn", "seed_resnet18", "plain20"])  # fmt: skip
    # what fits still stops at the deadline, checkpointed, if the estimate was short
    assert calls[:2] == [("seed_cnn-smoke-s0", True), ("plain20-smoke-s0", True)] and all(u for _, u in calls)
    assert any(line.startswith("skip seed_resnet18-smoke-s0: needs about 277777.8 h at") for line in lines)
    # then the first run that waits fills what is left of the call, and stops checkpointed at the deadline
    assert calls[-1] == ("seed_resnet18-smoke-s0", True) and sum(m == "seed_resnet18-smoke-s0" for m, _ in calls) == 1
    assert any(line.startswith("fill seed_resnet18-smoke-s0: nothing else fits in the ") for line in lines), lines
    assert out["stopped"] == ["seed_resnet18-smoke-s0"]
    assert out["skipped"] == [f"seed_resnet18-smoke-s{s}" for s in (1, 2)]  # seeds 1-2 come in stage 6
    assert out["trained"] == [run_id for run_id, _ in calls[:-1]]


def test_the_finish_policy_resumes_a_checkpointed_run_before_the_plan_and_takes_it_once(store, synthetic,
                                                                                       monkeypatch):
    from cnnlib import plan

    # plain20's run (the degradation family, stage 2) has a checkpoint here; seed_cnn comes first in the plan (stage 1)
    partly = "plain20-smoke-s0"
    real_status = plan.run_status
    monkeypatch.setattr(plan, "run_status", lambda cfg, checkpoints=False: (
        plan.PlanStatus(cfg, "partly", epochs_done=1, steps_done=0) if checkpoints and cfg.run_id == partly
        else real_status(cfg, checkpoints=checkpoints)))  # fmt: skip
    monkeypatch.setattr(plan, "estimate_seconds", lambda cfg, data, dev, **kw: 5)
    calls = []
    monkeypatch.setattr(plan, "fit_or_load", lambda cfg, **kw: calls.append(cfg.run_id) or SimpleNamespace(
        final={"test_acc": 0.5}, meta={"train_s": 1.0}))  # fmt: skip
    out = plan.train_missing(3600, "smoke", device="cpu", data=synthetic, log=lambda line: None, policy="finish",
                             models=["seed_cnn", "plain20", "resnet20"])  # fmt: skip
    assert calls[:3] == [partly, "seed_cnn-smoke-s0", "resnet20-smoke-s0"]  # then the plan's order, without it
    assert calls.count(partly) == 1 and out["trained"].count(partly) == 1 and partly not in out["done"]
    calls.clear()
    plan.train_missing(3600, "smoke", device="cpu", data=synthetic, log=lambda line: None, policy="sequential",
                       models=["seed_cnn", "plain20", "resnet20"])  # fmt: skip
    assert calls[:2] == ["seed_cnn-smoke-s0", partly]  # the sequential policy keeps the plan's order


def test_the_finish_policy_fills_nothing_with_less_than_its_least_time_left(store, synthetic, monkeypatch):
    from cnnlib import plan

    monkeypatch.setattr(plan, "estimate_seconds", lambda cfg, data, dev, **kw: 1e9)
    calls = []
    monkeypatch.setattr(plan, "fit_or_load", lambda cfg, **kw: calls.append(cfg.run_id))
    out = plan.train_missing(plan.FILL_MIN_S - 60, "smoke", device="cpu", data=synthetic, log=lambda line: None,
                             policy="finish", models=["seed_cnn"])  # fmt: skip
    assert calls == [] and out["skipped"] == [f"seed_cnn-smoke-s{s}" for s in (0, 1, 2)] and out["stopped"] == []


def test_the_finish_policy_times_no_steps_once_the_deadline_has_passed(store, synthetic, monkeypatch):
    from cnnlib import plan

    # plain20 and resnet20 form one unit; plain20's run takes the call past its deadline
    now = [1000.0]
    monkeypatch.setattr(plan, "time", SimpleNamespace(time=lambda: now[0], perf_counter=time.perf_counter))
    estimated = []

    def fake_estimate(cfg, data, dev, **kw):
        estimated.append(cfg.model)
        return 5.0

    def fake_fit_or_load(cfg, **kw):
        now[0] += 3600
        return SimpleNamespace(final={"test_acc": 0.5}, meta={"train_s": 3600.0})

    monkeypatch.setattr(plan, "estimate_seconds", fake_estimate)
    monkeypatch.setattr(plan, "fit_or_load", fake_fit_or_load)
    lines = []
    out = plan.train_missing(60, "smoke", device="cpu", data=synthetic, log=lines.append, policy="finish",
                             models=["plain20", "resnet20"])  # fmt: skip
    assert estimated == ["plain20"], "nothing may be measured for a run once the deadline has passed"
    assert out["trained"] == ["plain20-smoke-s0"] and out["skipped"][0] == "resnet20-smoke-s0"
    assert "skip resnet20-smoke-s0: the call's deadline has passed; it waits for a longer call" in lines


def test_the_finish_policy_stops_a_run_slower_than_its_estimate_and_judges_the_rest_at_its_pace(
        store, synthetic, monkeypatch):  # fmt: skip
    from cnnlib import plan
    from cnnlib.train import RunWontFit

    # stored rates from a faster day: seed_cnn's first epoch says its rest needs 300 s, not the 95 s estimated
    seconds = {"seed_cnn": plan.START_S + 95, "seed_resnet18": 1500, "plain20": 500}
    monkeypatch.setattr(plan, "estimate_seconds", lambda cfg, data, dev, **kw: seconds[cfg.model])
    calls = []

    def fake_fit_or_load(cfg, **kw):
        calls.append((cfg.run_id, kw["stops"].judge_first))
        if cfg.run_id == "seed_cnn-smoke-s0":
            raise RunWontFit(f"{cfg.run_id}: stopped after epoch 1/10", 1, 300.0)
        return SimpleNamespace(final={"test_acc": 0.5}, meta={"train_s": 1.0})

    monkeypatch.setattr(plan, "fit_or_load", fake_fit_or_load)
    lines = []
    out = plan.train_missing(3600, "smoke", device="cpu", data=synthetic, log=lines.append, policy="finish",
                             models=["seed_cnn", "seed_resnet18", "plain20"])  # fmt: skip
    assert calls[:2] == [("seed_cnn-smoke-s0", True), ("plain20-smoke-s0", True)]  # the stop ends nothing
    assert out["stopped"] == ["seed_cnn-smoke-s0"] and "seed_resnet18-smoke-s0" in out["skipped"]
    # the judged run, checkpointed here, fills the rest of the call, unjudged, before any run that never started
    assert calls[-1] == ("seed_cnn-smoke-s0", False) and ("seed_resnet18-smoke-s0", False) not in calls
    assert "this call's runs need about 3.16x their estimates; the next ones are judged so" in lines
    # 1500 s fits in the hour at the estimate, not at 3.16 times it
    assert any(line.startswith("skip seed_resnet18-smoke-s0: needs about 1.3 h at") for line in lines), lines


def test_a_partly_trained_run_needs_only_what_its_checkpoint_leaves(monkeypatch):
    from cnnlib import plan

    cfg = plan.make_config("resnet20", "full", 0)
    monkeypatch.setattr(plan, "estimate_seconds", lambda c, d, dev, **kw: plan.START_S + 1000.0)
    spe = cfg.steps_per_epoch()
    partly = plan.PlanStatus(cfg, "partly", epochs_done=cfg.epochs // 4, steps_done=0)
    monkeypatch.setattr(plan, "run_status", lambda c, checkpoints=False: partly)
    assert spe > 0 and partly.share_left == 0.75 and plan.PlanStatus(cfg, "missing").share_left == 1.0
    assert plan.seconds_to_finish(cfg, None, plan.torch.device("cpu")) == plan.START_S + 750.0
    monkeypatch.setattr(plan, "run_status", lambda c, checkpoints=False: plan.PlanStatus(cfg, "missing"))
    assert plan.seconds_to_finish(cfg, None, plan.torch.device("cpu")) == plan.START_S + 1000.0


def test_worker_reports_merge_into_one_result(tmp_path):
    import json

    from cnnlib import plan

    (tmp_path / "report-1.json").write_text(json.dumps(
        dict(trained=["a"], done=[], skipped=["c"], stopped=["d"])))  # fmt: skip
    (tmp_path / "report-2.json").write_text(json.dumps(
        dict(trained=["b"], done=["a"], skipped=[], stopped=[])))  # fmt: skip
    # "e" was stored by a worker that died before it could report
    out = plan.merge_reports(tmp_path, before={"z"}, after={"z", "a", "b", "e"})
    assert out == dict(trained=["a", "b", "e"], done=["z"], skipped=["c"], stopped=["d"])


def test_train_missing_can_be_limited_to_some_models(store, synthetic, monkeypatch):
    from cnnlib import plan

    monkeypatch.setattr(plan, "estimate_seconds", lambda cfg, data, dev, measure=True: 5)
    out = plan.train_missing(60, "smoke", device="cpu", data=synthetic, log=lambda line: None, models=["seed_cnn"],
                             policy="units")  # fmt: skip
    assert out["trained"] == [f"seed_cnn-smoke-s{s}" for s in (0, 1, 2)] and out["skipped"] == []
    with pytest.raises(ValueError, match="unknown model.*resnet21"):
        plan.train_missing(60, "smoke", device="cpu", data=synthetic, models=["resnet21"])


def _run_at(cfg, rate: float, cpu: str, bf16=(), **engine) -> SimpleNamespace:
    """A stored run as the rate lookups read it: ``cfg``, one epoch at ``rate`` images/s, on ``cpu``."""
    import pandas as pd

    return SimpleNamespace(config=cfg, history=pd.DataFrame({"images_per_s": [rate]}),
                           meta=dict(device="cpu", engine=dict(cpu=cpu, bf16_features=list(bf16), **engine)))


def test_a_rate_stored_on_another_cpu_is_not_this_cpus(monkeypatch):
    from cnnlib import plan

    cfg = plan.make_config("resnet20", "full", 0)

    def run(cpu, rate, bf16=("amx_bf16",)):
        return _run_at(cfg, rate, cpu, bf16)

    monkeypatch.setattr(plan.engine, "cpu_name", lambda: "Intel(R) Xeon(R) Processor")
    monkeypatch.setattr(plan.engine, "bf16_features", lambda: ("amx_bf16",))
    monkeypatch.setattr(plan.engine, "cached_rate", lambda model, threads=None, exact=False: 123.0)
    monkeypatch.setattr(plan, "_sound_runs", lambda: [run("AMD EPYC", 900.0)])
    assert plan.known_rate(cfg, "cpu") == 123.0  # the other CPU's run does not count here
    both = [run("AMD EPYC", 900.0), run("Intel(R) Xeon(R) Processor", 600.0)]
    monkeypatch.setattr(plan, "_sound_runs", lambda: both)
    assert plan.known_rate(cfg, "cpu") == 600.0
    # nor does a run on a CPU of the same name without hardware bf16
    monkeypatch.setattr(plan, "_sound_runs", lambda: [run("Intel(R) Xeon(R) Processor", 300.0, bf16=())])
    assert plan.known_rate(cfg, "cpu") == 123.0
    # the engine's small-batch check can be left out, and a run at another thread count when it must match
    assert plan.known_rate(cfg, "cpu", checks=False) is None
    monkeypatch.setattr(plan, "_sound_runs", lambda: [run("Intel(R) Xeon(R) Processor", 600.0)])
    assert plan.known_rate(cfg, "cpu", threads=2, exact=True, checks=False) is None  # its threads: not recorded


def test_a_run_is_judged_to_fit_at_its_typical_rate_and_planned_at_its_best(monkeypatch):
    from cnnlib import plan

    cfg = plan.make_config("resnet20", "full", 0)
    runs = [_run_at(cfg, rate, "x", threads=2) for rate in (300.0, 500.0, 600.0)]
    monkeypatch.setattr(plan.engine, "cpu_name", lambda: "x")
    monkeypatch.setattr(plan.engine, "bf16_features", lambda: ())
    monkeypatch.setattr(plan, "_sound_runs", lambda: runs)
    assert plan.known_rate(cfg, "cpu") == 600.0
    assert plan.known_rate(cfg, "cpu", typical=True) == 500.0
    seen = []
    monkeypatch.setattr(plan, "estimate_seconds", lambda c, d, dev, **kw: seen.append(kw) or 100.0)
    monkeypatch.setattr(plan, "run_status", lambda c, checkpoints=False: plan.PlanStatus(cfg, "missing"))
    plan.seconds_to_finish(cfg, None, plan.torch.device("cpu"))
    assert seen[0]["typical"] and seen[0]["exact"]


def test_the_estimate_counts_the_after_training_tables(monkeypatch, synthetic):
    import torch

    from cnnlib import plan
    from cnnlib.config import make_config

    monkeypatch.setattr(plan, "_sound_runs", lambda: [])
    monkeypatch.setattr(plan.engine, "cached_rate", lambda model, threads=None, exact=False: None)
    monkeypatch.setattr(plan, "measure_images_per_s", lambda cfg, dev: 100.0)
    cpu = torch.device("cpu")
    dissected, plain = make_config("plain56", "cpu", 1), make_config("plain56", "cpu", 0, tag="lr0.1x")  # no tables
    extra = plan.estimate_seconds(dissected, synthetic, cpu) - plan.estimate_seconds(plain, synthetic, cpu)
    settings = plan.aftertrain.mechanism_settings(3000, cpu)
    assert extra == pytest.approx(plan.aftertrain.mechanism_passes("plain56", settings) / 300)
    assert 100 < extra < 1000  # measured on this CPU: 4-7 minutes per net (benchmarks/RESULTS.md)
    control = make_config("plain56", "cpu", 0, tag=plan.LR_CONTROL)  # the lr control measures them too
    assert plan.estimate_seconds(control, synthetic, cpu) - plan.estimate_seconds(plain, synthetic, cpu) == extra
    assert plan.aftertrain.dissected(make_config("resnet44", "cpu", 2))  # and the depth sweep
    assert not plan.aftertrain.dissected(make_config("resnet18", "cpu", 0))
    # a run at a check's other setting may become the recipe's own (recipe.record): it measures them too
    assert plan.aftertrain.dissected(make_config("resnet20", "cpu", 0, tag="lr0.2_wd0.0005"))


def test_the_study_waits_for_the_recipe_checks_choice(store, synthetic, monkeypatch):
    from cnnlib import plan, recipe
    from cnnlib.config import RECIPE_GRID

    # every run of the check stored, with a best setting that is not the full profile's recipe
    best = "lr0.4_wd0.0001"
    fake = {}
    for tag in RECIPE_GRID:
        for net in recipe.nets("shared"):
            cfg = plan.make_config(net, "tune", 0, tag=tag)
            fake[cfg.run_id] = SimpleNamespace(final={"test_acc": 0.9 if tag == best else 0.8},
                                               matches=lambda c, cfg=cfg: c == cfg)  # fmt: skip
    table = recipe.table(fake)
    assert table["mean"].notna().all()
    chosen = recipe.choice(table)
    assert chosen["setting"] == best and (chosen["lr"], chosen["weight_decay"]) == (0.4, 1e-4)
    assert not recipe.applied(chosen)
    real_choice = recipe.choice
    monkeypatch.setattr(recipe, "choice", lambda df=None, check="shared": chosen if check == "shared" else None)
    trained = []
    monkeypatch.setattr(plan, "run_status", lambda cfg, **kw: plan.PlanStatus(cfg, "done" if cfg.profile == "tune"
                                                                               else "missing"))  # fmt: skip
    monkeypatch.setattr(plan, "fit_or_load", lambda cfg, **kw: trained.append(cfg.run_id))
    lines = []
    out = plan.train_missing(3600, "full", device="cpu", data=synthetic, log=lines.append)
    assert trained == [] and "seed_cnn-full-s0" in out["skipped"]
    assert any("instead of the recorded lr0.8_wd0.0005; record it (lr=0.4 and weight_decay=0.0001) as the full "
               "profile's recipe" in line for line in lines)  # fmt: skip
    # a table with a missing run chooses nothing, and the study waits for that run too (another worker
    # may be training it)
    fake.pop(next(iter(fake)))
    assert real_choice(recipe.table(fake)) is None
    monkeypatch.setattr(recipe, "choice", real_choice)
    assert recipe.blocking(recipe.table(fake)).startswith("the recipe check has 1 of its 12 runs still to train")
    # the checks' runs are units of their own, so that two workers can share a check's last setting
    check = dict(plan.stages("full"))["0 recipe check"]
    assert len(check) == 12 + 9 and all(len(unit) == 1 for unit in check)


def test_the_seed_family_waits_for_its_own_recipe_check_and_the_others_do_not(store, synthetic, monkeypatch):
    from cnnlib import plan, recipe

    assert recipe.checks_of("seed_cnn") == ["shared", "seed"] and recipe.checks_of("resnet20") == ["shared"]
    assert [c.run_id for c in recipe.configs("seed")][:2] == ["seed_cnn-tune-lr0.05_wd0.0005-s0",
                                                              "seed_resnet18-tune-lr0.05_wd0.0005-s0"]
    # the shared check complete and applied, the seed family's still missing its runs
    monkeypatch.setattr(recipe, "blocking", lambda df=None, check="shared": "seed runs missing" if check == "seed"
                        else None)  # fmt: skip
    monkeypatch.setattr(plan, "run_status", lambda cfg, **kw: plan.PlanStatus(cfg, "done" if cfg.profile == "tune"
                                                                               else "missing"))  # fmt: skip
    trained = []
    monkeypatch.setattr(plan, "fit_or_load", lambda cfg, **kw: trained.append(cfg.run_id) or SimpleNamespace(
        final={"test_acc": 0.5}, meta={"train_s": 1.0}))  # fmt: skip
    monkeypatch.setattr(plan, "estimate_seconds", lambda *a, **kw: 1.0)
    lines = []
    out = plan.train_missing(3600, "full", device="cpu", data=synthetic, log=lines.append)
    assert "seed_cnn-full-s0" in out["skipped"] and not any(r.startswith("seed_") for r in trained)
    assert trained[:4] == ["plain20-full-s0", "plain56-full-s0", "resnet20-full-s0", "resnet56-full-s0"]
    assert lines.count("wait: seed runs missing") == 1


def test_cpu_workers_split_the_cores_between_them(store, monkeypatch):
    from cnnlib import plan

    started = []

    class Worker:  # stands in for the worker process: records how it was started
        def __init__(self, cmd, env):
            started.append((cmd, env))

        def wait(self):
            return 0

    monkeypatch.setattr(plan.subprocess, "Popen", Worker)
    monkeypatch.setattr(plan.os, "cpu_count", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    lines = []
    result = plan.train_missing(60, "smoke", device="cpu", workers=2, log=lines.append)
    assert len(started) == 2 and all(env["OMP_NUM_THREADS"] == "1" for _, env in started)
    assert "--claims" in started[0][0] and started[0][0][started[0][0].index("--policy") + 1] == "sequential"
    assert lines == ["2 workers share the device until the deadline (1 thread(s) each)"]
    assert result["trained"] == []
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice stands
    started.clear()
    plan.train_missing(60, "smoke", device="cpu", workers=2, log=lines.append)
    assert all(env["OMP_NUM_THREADS"] == "2" for _, env in started)


def test_a_run_that_diverges_is_recorded_skipped_and_the_plan_goes_on(store, synthetic, monkeypatch, capsys):
    import pandas as pd

    from cnnlib import plan
    from cnnlib.train import TrainingDiverged

    trained = []

    def fake_fit_or_load(cfg, **kw):
        trained.append(cfg.run_id)
        if cfg.model == "seed_resnet18":
            raise TrainingDiverged(f"{cfg.run_id}: the training loss became nan in epoch 2",
                                   pd.DataFrame([dict(epoch=1, train_loss=1.9)]))  # fmt: skip
        return SimpleNamespace(final={"test_acc": 0.5}, meta={"train_s": 1.0})

    monkeypatch.setattr(plan, "fit_or_load", fake_fit_or_load)
    monkeypatch.setattr(plan, "estimate_seconds", lambda *a, **kw: 1.0)
    models = ["seed_cnn", "seed_resnet18", "seed_densenet"]
    lines = []
    out = plan.train_missing(3600, "smoke", device="cpu", data=synthetic, log=lines.append, models=models)
    # the worker does not die of it: the next run trains, and the divergence is kept beside the checkpoints
    assert trained == [f"{m}-smoke-s{s}" for s in (0, 1, 2) for m in models]  # seeds 1-2: stage 6
    assert "seed_resnet18-smoke-s0" in out["skipped"]
    cfg = plan.make_config("seed_resnet18", "smoke", 0)
    st = plan.run_status(cfg)
    assert (st.state, st.epochs_done) == ("diverged", 1) and "nan in epoch 2" in st.message
    assert any(line.startswith("error: seed_resnet18-smoke-s0: the training loss became nan") for line in lines)
    # the record is a finding, kept with the committed results: a machine without the checkpoints knows it
    import shutil

    from cnnlib.paths import checkpoint_root

    shutil.rmtree(checkpoint_root(), ignore_errors=True)
    assert plan.run_status(cfg).state == "diverged"
    # a later call does not train the same config again, and says why
    trained.clear()
    lines.clear()
    plan.train_missing(3600, "smoke", device="cpu", data=synthetic, log=lines.append, models=["seed_resnet18"])
    assert trained == [] and any(line.startswith("skip seed_resnet18-smoke-s0: it diverged before") for line in lines)
    # another recipe is another config: it trains
    assert plan.run_status(plan.make_config("seed_resnet18", "smoke", 0, lr=0.01)).state == "missing"
    # a record cut short is damaged, not "did not diverge": the config is not trained again behind one's back
    record = plan.diverged_path(cfg)
    record.write_text(record.read_text()[:40])
    st = plan.run_status(cfg)
    assert st.state == "damaged" and "does not parse as JSON" in st.message and record.name in st.message
    assert st.message.endswith("remove it to train the config again")
    plan.train_missing(3600, "smoke", device="cpu", data=synthetic, log=lines.append, models=["seed_resnet18"])
    assert trained == []


def test_a_check_never_chooses_a_setting_under_which_a_run_diverged(store):
    import pandas as pd

    from cnnlib import recipe
    from cnnlib.config import RECIPE_CHECKS, make_config
    from cnnlib.results import record_divergence
    from cnnlib.train import TrainingDiverged

    tags = RECIPE_CHECKS["seed"]["tags"]
    accs = {tags[0]: 0.6, tags[1]: 0.7, tags[2]: 0.8}  # the highest lr would win on accuracy alone
    fake = {}
    for tag in tags:
        for net in recipe.nets("seed"):
            cfg = make_config(net, "tune", 0, tag=tag)
            fake[cfg.run_id] = SimpleNamespace(final={"test_acc": accs[tag]}, matches=lambda c, cfg=cfg: c == cfg)
    assert recipe.choice(recipe.table(fake, "seed"), "seed")["setting"] == tags[2]

    def diverge(cfg):
        record_divergence(cfg, TrainingDiverged(f"{cfg.run_id}: the training loss became nan", pd.DataFrame()))

    # a check run that diverged is not missing: the check is complete, and its setting is out
    net = recipe.nets("seed")[-1]
    bad = make_config(net, "tune", 0, tag=tags[2])
    diverge(bad)
    del fake[bad.run_id]
    table = recipe.table(fake, "seed")
    assert table.set_index("setting").loc[tags[2], "diverged"] == net
    assert recipe.choice(table, "seed")["setting"] == tags[1]
    assert not (recipe.blocking(table, "seed") or "").startswith("the seed family's recipe check has")
    # so is a setting under which a full run of the family diverged (seed 0, the family's full profile)
    full = make_config("seed_senet18", "full", 0, **{k: v for k, v in recipe.RECIPE_SETTINGS[tags[1]].items()})
    diverge(full)
    table = recipe.table(fake, "seed")
    assert table.set_index("setting").loc[tags[1], "diverged"] == "seed_senet18 (full)"
    assert recipe.choice(table, "seed")["setting"] == tags[0]
    # but a full run of the seed family does not rule out the shared check's setting of the same lr and
    # weight decay: the seed check, not the shared one, sets that family's lr
    shared_tag = next(iter(RECIPE_CHECKS["shared"]["tags"]))
    diverge(make_config("seed_cnn", "full", 0, **recipe.RECIPE_SETTINGS[shared_tag]))
    assert "seed_cnn" not in recipe.family_models("shared") and "resnet20" in recipe.family_models("shared")
    assert recipe.table({}, "shared").set_index("setting").loc[shared_tag, "diverged"] == ""
    # a setting that is out needs no more runs: the check is complete without them
    del fake[make_config(recipe.nets("seed")[0], "tune", 0, tag=tags[1]).run_id]
    assert recipe.choice(recipe.table(fake, "seed"), "seed")["setting"] == tags[0]
    # and with every setting out, the family waits and says why
    diverge(make_config(net, "tune", 0, tag=tags[0]))
    del fake[make_config(net, "tune", 0, tag=tags[0]).run_id]
    table = recipe.table(fake, "seed")
    assert recipe.choice(table, "seed") is None
    assert recipe.blocking(table, "seed").startswith("every setting of the seed family's recipe check diverged")


def test_engine_lists_this_machines_checks_and_takes_them_again(capsys, tmp_path, monkeypatch):
    from cnnlib import engine

    monkeypatch.setenv("CNNLIB_CACHE", str(tmp_path))
    code, out, _ = run(capsys, "engine")
    assert code == 0 and "no engine checks" in out
    path = engine._cache_path()
    step_s = {"bf16+cl": 0.09, "fp32": 0.17, "fp32+cl": 0.13}
    engine._remember(path, engine._key("resnet20", 64, 2), dict(precision="bf16", channels_last=True, batch=64,
                     step_s=step_s, rounds=5, others_share=0.02, trusted=True, checked="2026-12-05 23:00:00"))
    engine._remember(path, engine._key("plain20", 64, 2), dict(precision="fp32", channels_last=True, batch=64,
                     step_s=step_s | {"bf16+cl": 2.2}, rounds=5, others_share=0.55, trusted=False))
    engine._remember(path, "another CPU|torch 0|resnet56|batch 64|threads 2", dict(precision="fp32"))
    code, out, _ = run(capsys, "engine")
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert sorted(rows) == ["plain20", "resnet20"]  # this machine's only
    assert "trusted" in rows["resnet20"] and "90" in rows["resnet20"]
    assert "provisional" in rows["plain20"] and "55" in rows["plain20"]
    checked = []
    monkeypatch.setattr(engine, "check", lambda model, batch, threads, **kw: checked.append((model, batch, threads))
                        or dict(precision="bf16", channels_last=True, batch=batch, step_s=step_s, rounds=5,
                                others_share=0.0, trusted=True))  # fmt: skip
    code, out, _ = run(capsys, "engine", "plain20", "--recheck")
    assert code == 0 and checked == [("plain20", 64, 2)] and out.startswith("plain20 (batch 64, 2 thread(s)): bf16")
    code, _, err = run(capsys, "engine", "plain21")
    assert code == 2 and "unknown model 'plain21'" in err


def test_the_recorded_choices_reproduce_every_stored_full_run():
    """The full profile's lr and weight decay come from the recorded choices (recipe_choice.json), no longer
    from config.py: every stored run of the full plan still matches its config (hash and all), the recorded
    choices are what the stored check runs choose, and no family's recipe is restated in the presets."""
    from cnnlib import plan, recipe
    from cnnlib.config import FAMILY_OVERRIDES, PROFILES, RECIPE_CHECKS
    from cnnlib.results import load_run

    full = plan.plan("full")
    stored = [(cfg, load_run(cfg)) for cfg in full]
    stored = [(cfg, run) for cfg, run in stored if run is not None]
    assert len(stored) >= 40 and all(run.matches(cfg) for cfg, run in stored)
    for check in RECIPE_CHECKS:
        if RECIPE_CHECKS[check].get("later") and recipe.recorded(check) is None:  # its families' seed 0 came first
            assert recipe.blocking(check=check) is not None
            continue
        assert recipe.applied(recipe.choice(check=check), check) and recipe.blocking(check=check) is None
    # as config.py had them; the controlled family's own check (after its seed 0) may move its lr once recorded
    controlled = recipe.recorded("controlled")
    for cfg in full:
        if cfg.profile == "full" and not cfg.tag:
            want = (0.1, 5e-4) if cfg.model in FAMILIES["seed"] else (0.8, 5e-4)
            if cfg.model in FAMILIES["controlled"] and controlled is not None:
                want = (controlled["lr"], 5e-4)
            assert (cfg.lr, cfg.weight_decay) == want, cfg.run_id
    sets = {k for c in RECIPE_CHECKS.values() for k in c["sets"]}
    assert not sets & set(PROFILES["full"]) and not any(sets & set(o) for o in FAMILY_OVERRIDES["full"].values())


def test_a_check_without_a_recorded_choice_holds_its_families_back_until_it_is_recorded(store, monkeypatch):
    from cnnlib import config, plan, recipe
    from cnnlib.config import RecipeNotChosen, make_config

    monkeypatch.setattr(config, "RECIPE_CHOICE", store / "recipe_choice.json")  # nothing recorded yet
    with pytest.raises(RecipeNotChosen, match="recipe of resnet20 is the choice of the recipe check 'shared'"):
        make_config("resnet20", "full")
    assert make_config("resnet20", "smoke").lr == 0.05  # the other profiles do not wait
    # a check's table tries each setting explicitly, so it needs no recorded choice
    assert make_config("seed_cnn", "full", lr=0.2, weight_decay=1e-4).lr == 0.2
    # the plan holds the checks only, and its families wait
    stages = dict(plan.stages("full"))
    assert len(stages["0 recipe check"]) == 21 and not any(us for name, us in stages.items() if name[0] not in "07")
    later = stages["7 controlled: its lr check, then seeds 1-2"]  # the controlled family's own check, runs only
    assert len(later) == 6 and all(c.profile == "tune" for u in later for c in u)
    assert recipe.blocking(recipe.table({}), "shared").startswith("the recipe check has 12 of its 12 runs")
    # once complete, the choice is recorded (train-missing calls record_new) and the families have configs
    chosen = {"setting": "lr0.4_wd0.0001", "lr": 0.4, "weight_decay": 1e-4, "mean": 0.9}
    monkeypatch.setattr(recipe, "choice", lambda df=None, check="shared": chosen if check == "shared" else None)
    assert recipe.record_new("shared") == chosen and recipe.record_new("shared") is None  # never replaced here
    assert recipe.record_new("seed") is None
    cfg = make_config("resnet20", "full")
    assert (cfg.lr, cfg.weight_decay) == (0.4, 1e-4) and recipe.blocking(check="shared") is None
    with pytest.raises(RecipeNotChosen, match="recipe check 'seed'"):  # the seed family waits for its own too
        make_config("seed_cnn", "full")
    assert "resnet20-full-s0" in {c.run_id for c in plan.plan("full")}
    assert not any(c.model in FAMILIES["seed"] and c.profile == "full" for c in plan.plan("full"))
    # the runs come to choose another setting: the recorded one stands until it is recorded on purpose
    other = dict(chosen, setting="lr0.2_wd0.0005", lr=0.2, weight_decay=5e-4)
    monkeypatch.setattr(recipe, "choice", lambda df=None, check="shared": other)
    assert "instead of the recorded lr0.4_wd0.0001" in recipe.blocking(check="shared")
    recipe.record(other, "shared")
    assert make_config("resnet20", "full").lr == 0.2 and recipe.blocking(check="shared") is None
    # the command line records a new choice only when asked to (`status --record-recipe`)
    third = dict(chosen, setting="lr0.8_wd0.0005", lr=0.8, weight_decay=5e-4)
    monkeypatch.setattr(recipe, "choice", lambda df=None, check="shared": third if check == "shared" else None)
    assert main(["status", "--profile", "full"]) == 0 and make_config("resnet20", "full").lr == 0.2
    assert main(["status", "--profile", "full", "--record-recipe"]) == 0 and make_config("resnet20", "full").lr == 0.8


def test_the_controlled_family_checks_its_own_lr_before_its_seeds_1_and_2(store, monkeypatch):
    from cnnlib import config, plan, recipe
    from cnnlib.config import make_config

    stages = dict(plan.stages("full"))
    units = stages["7 controlled: its lr check, then seeds 1-2"]
    check = [u[0] for u in units[:6]]
    assert {(c.model, c.profile, c.lr, c.holdout) for c in check} == {
        (m, "tune", lr, 5000) for m in ("resnet18", "plainnet18") for lr in (0.2, 0.4, 0.8)}
    assert [c.run_id for c in units[6]] == [f"{m}-full-s1" for m in FAMILIES["controlled"]]
    assert not any(c.model == "resnet18" and c.profile == "tune" for u in stages["0 recipe check"] for c in u)
    # until its choice is recorded the family keeps the shared recipe (its stored seed 0 stays current), and
    # its missing runs wait for the check
    assert make_config("resnet18", "full").lr == 0.8
    assert "controlled family's recipe check has 6 of its 6 runs still to train" in recipe.blocking(check="controlled")
    # recorded at another lr, the whole family takes it (seed 0 then no longer matches: trained again)
    choices = config.recorded_choices() | {"controlled": dict(setting="lr0.2_wd0.0005", lr=0.2, weight_decay=5e-4,
                                                               mean=0.9)}  # fmt: skip
    monkeypatch.setattr(config, "recorded_choices", lambda: choices)
    assert {make_config(m, "full").lr for m in FAMILIES["controlled"]} == {0.2}
    assert make_config("resnet20", "full").lr == 0.8 and make_config("seed_cnn", "full").lr == 0.1


def test_a_rate_known_only_by_the_engines_check_is_scaled_by_how_far_this_cpus_runs_outran_their_checks(monkeypatch):
    from cnnlib import plan

    monkeypatch.setattr(plan.engine, "cpu_name", lambda: "x")
    monkeypatch.setattr(plan.engine, "bf16_features", lambda: ())
    checks = {"resnet20": 100.0, "plain20": 200.0, "resnet56": 50.0, "plain32": 80.0}
    monkeypatch.setattr(plan.engine, "cached_rate", lambda model, threads=None, exact=False: checks.get(model))
    runs = [_run_at(plan.make_config(m, "full", 0), rate, "x") for m, rate in
            (("resnet20", 150.0), ("plain20", 240.0), ("resnet56", 70.0), ("seed_cnn", 900.0))]  # seed_cnn: unchecked
    runs.append(_run_at(plan.make_config("resnet44", "full", 0), 500.0, "another cpu"))  # another CPU's: not counted
    monkeypatch.setattr(plan, "_sound_runs", lambda: runs)
    assert plan.check_scale(512) == pytest.approx(1.4)  # the median of 1.5, 1.2 and 1.4
    sweep = plan.make_config("plain32", "full", 0)
    assert plan.known_rate(sweep, "cpu") == pytest.approx(80.0 * 1.4)
    assert plan.known_rate(plan.make_config("resnet20", "full", 0), "cpu") == 150.0  # a stored run is used as it is
    assert plan.check_scale(128) == 1.0  # no run at that batch: the check as it is
    monkeypatch.setattr(plan, "_sound_runs", lambda: [])
    assert plan.known_rate(sweep, "cpu") == 80.0


def test_status_prints_each_recipe_check_as_notebook_05_shows_it(capsys, monkeypatch, store):
    import pandas as pd

    from cnnlib import __main__ as cli
    from cnnlib import recipe
    from cnnlib.config import RECIPE_CHECKS, RECIPE_SETTINGS

    def table(runs=None, check="shared"):  # every net of every setting at 0.8, the second setting's at 0.9
        tags = RECIPE_CHECKS[check]["tags"]
        rows = [{"setting": t, "lr": RECIPE_SETTINGS[t]["lr"], "weight decay": RECIPE_SETTINGS[t]["weight_decay"],
                 **{f"{n} held-out acc": 0.9 if i == 1 else 0.8 for n in recipe.nets(check)}, "diverged": "",
                 "diverged runs": [], "mean": 0.9 if i == 1 else 0.8} for i, t in enumerate(tags)]  # fmt: skip
        return pd.DataFrame(rows)

    def controlled_rows():  # each setting's row of the controlled check's table: its accuracies, mean and note
        out = capsys.readouterr().out
        assert f"recipe check 'controlled' (resnet18, plainnet18): 6/6 runs; chosen {second}" in out
        return out, {x.split()[0]: " ".join(x.split()[3:]) for x in
                     out.split("recipe check 'controlled'")[1].splitlines()[3:]}  # fmt: skip

    monkeypatch.setattr(recipe, "table", table)
    second = RECIPE_CHECKS["controlled"]["tags"][1]
    cli._recipe_checks(record=False)  # the committed choices hold none of these: the best is not called chosen
    out, rows = controlled_rows()
    assert f"chosen {second}, not yet recorded as the full profile's recipe" in out
    assert rows[second] == "90.00 90.00 90.00 best, not yet recorded"  # resnet18, plainnet18, their mean, the note
    assert rows[RECIPE_CHECKS["controlled"]["tags"][0]] == "80.00 80.00 80.00"
    cli._recipe_checks(record=True)
    out, rows = controlled_rows()
    assert "not yet recorded" not in out and rows[second] == "90.00 90.00 90.00 chosen"
