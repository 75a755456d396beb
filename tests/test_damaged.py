"""Damaged files are named and never read as data: every stored file, checkpoints and weights.

Each case damages a file of a run stored in a temporary folder (cut short, emptied, garbled, removed) and
checks that reading the run stops with one line that names the file and says what to do, that ``status``
lists the run as damaged and goes on, and that a damaged checkpoint is set aside and training resumes from
the one before.
"""

import hashlib
import json
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch

from cnnlib import results
from cnnlib.__main__ import main
from cnnlib.config import make_config
from cnnlib.results import DamagedRunError, list_runs, load_run, record_checksums, save_run
from cnnlib.train import Callback, FitResult, fit

EPOCHS = 3


def _store(model="seed_cnn", seed=0) -> results.Run:
    """A run of ``EPOCHS`` epochs (smoke profile), with an after-training table, stored the way training stores it."""
    cfg = make_config(model, "smoke", seed, epochs=EPOCHS)
    history = pd.DataFrame(dict(epoch=range(1, EPOCHS + 1), train_loss=[2.0, 1.5, 1.2], train_acc=[0.2, 0.3, 0.4],
                                test_loss=[2.1, 1.6, 1.3], test_acc=[0.25, 0.35, 0.45],
                                seconds=[3.0] * EPOCHS))  # fmt: skip
    table = pd.DataFrame(dict(block=["layer1.0", "layer1.1"], response=[0.5, 0.25]))
    info = dict(device="cpu", device_name="Test CPU", torch="2.x", train_s=9.0)
    save_run(cfg, FitResult(history, torch.arange(100) % 10, info, {}, {"responses": table}))
    return load_run(cfg)


def _cut(path, keep: int | float):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])


def _garble(path):
    path.write_bytes(b"\x00\xff garbage \x13\x37" * 7)


def _legacy(run):
    """The run as stored before run.json recorded checksums."""
    meta = json.loads((run.path / "run.json").read_text())
    del meta["files"]
    (run.path / "run.json").write_text(json.dumps(meta, indent=2) + "\n")


DAMAGES = {  # (file, how) -> what the line says of it, with checksums recorded
    ("history.csv", "truncated"): "bytes where run.json records",
    ("history.csv", "garbage"): "bytes where run.json records",
    ("history.csv", "emptied"): "bytes where run.json records",
    ("history.csv", "missing"): "is missing",
    ("predictions.npy", "truncated"): "bytes where run.json records",
    ("predictions.npy", "garbage"): "bytes where run.json records",
    ("responses.csv", "garbage"): "bytes where run.json records",
    ("run.json", "truncated"): "does not parse as JSON",
    ("run.json", "garbage"): "does not parse as JSON",
    ("run.json", "emptied"): "does not parse as JSON",
}


def _damage(path, how):
    if how == "truncated":
        _cut(path, 0.6)
    elif how == "garbage":
        _garble(path)
    elif how == "emptied":
        path.write_bytes(b"")
    else:
        path.unlink()


@pytest.mark.parametrize("name, how", list(DAMAGES))
def test_a_damaged_file_stops_the_read_with_one_line_naming_it(store, name, how):
    run = _store()
    _damage(run.path / name, how)
    with pytest.raises(DamagedRunError) as caught:
        load_run(run.config)
    line = str(caught.value)
    assert "\n" not in line and f"seed_cnn-smoke-s{0}/{name}" in line and DAMAGES[name, how] in line, line
    assert "python -m cnnlib train seed_cnn --profile smoke --seed 0 --retrain" in line
    with pytest.raises(DamagedRunError):  # the notebooks' and the README's reader stops too
        list_runs()
    assert list_runs(skip_damaged=True) == []


LEGACY = {  # runs stored before the checksums: what can be checked without them
    ("history.csv", "truncated"): "holds cells that are not numbers",  # cut inside a row
    ("history.csv", "garbage"): "history.csv",
    ("history.csv", "emptied"): "does not parse as CSV",
    ("history.csv", "missing"): "is missing",
    ("predictions.npy", "truncated"): "does not load as a NumPy array",
    ("predictions.npy", "garbage"): "does not load as a NumPy array",
    ("responses.csv", "garbage"): "responses.csv",
}


@pytest.mark.parametrize("name, how", list(LEGACY))
def test_without_checksums_what_can_be_checked_is(store, name, how):
    run = _store()
    _legacy(run)
    _damage(run.path / name, how)
    with pytest.raises(DamagedRunError) as caught:
        load_run(run.config).table("responses")
    line = str(caught.value)
    assert "\n" not in line and f"seed_cnn-smoke-s0/{name}" in line and LEGACY[name, how] in line, line


def test_a_history_with_a_row_cut_off_disagrees_with_the_runs_epochs(store):
    run = _store()
    _legacy(run)
    history = run.path / "history.csv"
    history.write_text("".join(history.read_text().splitlines(keepends=True)[:-1]))  # whole rows, still CSV
    with pytest.raises(DamagedRunError, match="holds 2 epoch row"):
        load_run(run.config)


def test_checksums_recorded_afterwards_change_nothing_else_and_catch_what_parsing_cannot(store):
    run = _store()
    _legacy(run)
    before = json.loads((run.path / "run.json").read_text())
    assert record_checksums() == ["seed_cnn-smoke-s0"] and record_checksums() == []  # once
    after = json.loads((run.path / "run.json").read_text())
    assert set(after) - set(before) == {"files"} and {k: after[k] for k in before} == before
    assert list(after) == [*before, "files"]  # the keys keep their order: the diff is the new lines only
    assert set(after["files"]) == {"history.csv", "predictions.npy", "responses.csv"}
    # a changed number still parses and agrees with the epochs: only the checksum sees it
    history = run.path / "history.csv"
    history.write_text(history.read_text().replace("0.45", "0.95"))
    with pytest.raises(DamagedRunError, match="SHA-256"):
        load_run(run.config)


def test_a_damaged_run_that_git_tracks_says_how_to_restore_it(store):
    run = _store()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(store / "results")]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "runs"], check=True)
    _cut(run.path / "history.csv", 0.5)
    with pytest.raises(DamagedRunError, match="restore the run with `git checkout -- .*seed_cnn-smoke-s0`, or "
                                              "retrain it with `python -m cnnlib train seed_cnn"):
        load_run(run.config)


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", ["history.csv", "run.json", "predictions.npy"])
def test_train_names_the_damaged_file_and_retrain_replaces_the_run(capsys, store, monkeypatch, name):
    run = _store()
    _garble(run.path / name)
    code, out, err = run_cli(capsys, "train", "seed_cnn", "--profile", "smoke", "--epochs", str(EPOCHS))
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and name in err and "--retrain" in err, err

    def refit(cfg, **kwargs):
        return FitResult(run.history, torch.arange(100) % 10, dict(device="cpu", device_name="cpu", train_s=1.0), {},
                         {})  # fmt: skip

    monkeypatch.setattr(results, "fit", refit)
    code, out, err = run_cli(capsys, "train", "seed_cnn", "--profile", "smoke", "--epochs", str(EPOCHS), "--retrain")
    assert code == 0 and err == "" and load_run(run.config).final["test_acc"] == 0.45
    assert not (run.path / "responses.csv").exists()  # the old run's table is not passed off as the new run's


def test_status_lists_a_damaged_run_and_goes_on_with_the_others(capsys, store):
    for seed in range(2):
        _store("resnet20", seed)
    (store / "results" / "resnet20-smoke-s0" / "run.json").write_text("{ not json")
    code, out, err = run_cli(capsys, "status", "--profile", "smoke")
    assert code == 0, err
    lines = {line.split()[1]: line for line in out.splitlines() if line.split()[:1] in (["damaged"], ["missing"],
                                                                                          ["done"], ["stale"])}
    assert lines["resnet20-smoke-s0"].startswith("damaged") and "run.json does not parse as JSON" in \
        lines["resnet20-smoke-s0"]
    assert lines["resnet20-smoke-s1"].split()[0] in ("done", "stale")  # read, whatever the smoke recipe says now
    assert "of which 1 damaged" in out.splitlines()[-1]


def test_tables_without_weights_is_one_line(capsys, store):
    from cnnlib import aftertrain

    aftertrain.weights_path(_store("resnet20").config.run_id).unlink()  # as on a fresh clone
    code, out, err = run_cli(capsys, "tables", "resnet20-smoke-s0")
    assert code == 2 and len(err.splitlines()) == 1 and "no weights for resnet20-smoke-s0" in err, err


# checkpoints: a real (tiny) training run, stopped after epoch 2 of 3 with both of its checkpoints on disk


def _interrupted(synthetic):
    cfg = make_config("seed_cnn", "smoke", epochs=3, train_subset=200, test_subset=100, batch_size=50)

    class Stop(Callback):
        def after_epoch(self, row):
            if row["epoch"] == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, data=synthetic, device="cpu", verbose=False, callbacks=[Stop()])
    return cfg


@pytest.mark.parametrize("how", ["cut to 1 KB", "emptied"])
def test_a_damaged_checkpoint_is_set_aside_and_the_run_resumes_from_the_one_before(synthetic, store, capsys, how):
    cfg = _interrupted(synthetic)
    last = store / "checkpoints" / cfg.run_id / "last.pt"
    assert torch.load(last, weights_only=False)["epoch"] == 2
    _cut(last, 1024 if how == "cut to 1 KB" else 0)
    capsys.readouterr()
    resumed = fit(cfg, data=synthetic, device="cpu", verbose=True)
    out = capsys.readouterr().out.splitlines()
    assert f"{cfg.run_id}: the checkpoint {last} does not load" in out[0] and "set aside as last.pt.damaged" in out[0]
    assert out[0].endswith("it resumes from the checkpoint before") and "resuming after epoch 1/3" in out[1]
    assert resumed.info["resumed_after_epoch"] == 1 and len(resumed.history) == 3
    assert (last.parent / "last.pt.damaged").exists()


def test_with_every_checkpoint_damaged_the_run_starts_again_saying_so(synthetic, store, capsys):
    cfg = _interrupted(synthetic)
    folder = store / "checkpoints" / cfg.run_id
    for name in ("last.pt", "previous.pt"):
        _garble(folder / name)
    capsys.readouterr()
    again = fit(cfg, data=synthetic, device="cpu", verbose=True)
    out = capsys.readouterr().out
    assert "last.pt does not load" in out and "previous.pt does not load" in out and "starts again from epoch 0" in out
    assert again.info["resumed_after_epoch"] == 0 and len(again.history) == 3


def test_status_skips_a_damaged_checkpoint_without_moving_it(synthetic, store):
    from cnnlib.train import peek_checkpoint

    cfg = _interrupted(synthetic)
    last = store / "checkpoints" / cfg.run_id / "last.pt"
    _cut(last, 1024)
    assert peek_checkpoint(cfg)["epoch"] == 1  # the one before
    assert last.exists()  # reading for a status moves nothing


def test_damaged_weights_name_the_file(store):
    from cnnlib import aftertrain

    run = _store("resnet20")
    path = aftertrain.weights_path(run.config.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(aftertrain.WeightsUnavailable, match=f"weights {path} of resnet20-smoke-s0 are damaged"):
        aftertrain.load_weights(run)


def test_predictions_of_the_wrong_shape_are_damage(store):
    run = _store()
    _legacy(run)
    np.save(run.path / "predictions.npy", np.zeros((3, 3), dtype=np.uint8))
    with pytest.raises(DamagedRunError, match="not one class per scored image"):
        load_run(run.config)


SIGTERM_AFTER_EPOCH_1 = """
import functools, os, signal, sys
from synthetic import synthetic_cifar
from cnnlib import results, train
from cnnlib.__main__ import main

class Term(train.Callback):
    def after_epoch(self, row):
        if row["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)

train.load_cifar10 = lambda: synthetic_cifar(20, 10)
results.fit = functools.partial(train.fit, callbacks=[Term()], verbose=False)
sys.exit(main(["train", "seed_cnn", "--profile", "smoke", "--epochs", "3", "--train-subset", "200"]))
"""


def test_sigterm_during_training_is_handled_as_ctrl_c(store):
    import os
    import sys
    from pathlib import Path

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), *sys.path]))
    proc = subprocess.run([sys.executable, "-c", SIGTERM_AFTER_EPOCH_1], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 130, proc.stdout + proc.stderr
    assert proc.stderr == "interrupted; finished epochs are checkpointed and resume on the next run\n"
    ckpt = store / "checkpoints" / "seed_cnn-smoke-s0" / "last.pt"
    assert torch.load(ckpt, weights_only=False)["epoch"] == 1


def test_verify_names_every_damaged_run_and_records_checksums_only_when_all_are_sound(capsys, store):
    for seed in range(2):
        _legacy(_store("seed_cnn", seed))
    broken = store / "results" / "seed_cnn-smoke-s1" / "predictions.npy"
    good = broken.read_bytes()
    _garble(broken)
    code, out, err = run_cli(capsys, "verify", "--record-checksums")
    assert code == 2 and out.splitlines()[0].startswith("damaged ") and "seed_cnn-smoke-s1/predictions.npy" in out
    assert err == "error: 1 of the 2 stored runs are damaged (listed above)\n"
    assert all("files" not in json.loads(p.read_text()) for p in (store / "results").glob("*/run.json"))
    broken.write_bytes(good)
    code, out, err = run_cli(capsys, "verify", "--record-checksums")
    assert code == 0 and out.splitlines()[-1] == ("recorded the checksums of 2 run(s) stored without them: "
                                                  "seed_cnn-smoke-s0, seed_cnn-smoke-s1")  # fmt: skip
    assert all("files" in json.loads(p.read_text()) for p in (store / "results").glob("*/run.json"))


def test_every_committed_run_records_its_files_and_they_match(_committed_results, tmp_path):
    import shutil

    root = shutil.copytree(_committed_results, tmp_path / "results")
    runs = sorted(root.glob("*/run.json"))
    assert runs and all("files" in json.loads(p.read_text()) for p in runs)
    assert record_checksums(root) == []  # nothing left to record
    for path in runs:
        for name, f in json.loads(path.read_text())["files"].items():
            data = (path.parent / name).read_bytes()
            assert len(data) == f["size"] and hashlib.sha256(data).hexdigest() == f["sha256"], path.parent / name


def test_every_committed_table_beside_the_runs_records_its_checksum_and_matches(_committed_results):
    from cnnlib.results import read_table, stored_tables

    tables = stored_tables(_committed_results)
    assert {p.parent.name for p in tables} == {"at-init", "step-times"}
    for path in tables:
        made, _ = read_table(path)  # checked against the checksum
        assert "sha256" in made, path


def test_verify_names_a_damaged_record_of_a_diverged_run(capsys, store):
    _store("seed_cnn", 0)
    folder = store / "results" / "diverged"
    folder.mkdir()
    (folder / "seed_cnn-smoke-s1.json").write_text('{"run_id": "seed_cnn-smoke-s1", "config_hash": "ab"}')
    code, out, _ = run_cli(capsys, "verify")
    assert code == 0 and out.startswith("all 1 stored runs and 1 records of diverged runs in ")
    (folder / "seed_cnn-smoke-s1.json").write_text('{"run_id": "seed_cnn-smo')  # cut short
    code, out, err = run_cli(capsys, "verify")
    assert code == 2 and out.startswith("damaged ") and "seed_cnn-smoke-s1.json does not parse as JSON" in out
    assert out.rstrip().endswith("remove it to train the config again")
    assert err == "error: 0 of the 1 stored runs and 1 of the 1 records of diverged runs are damaged (listed above)\n"
