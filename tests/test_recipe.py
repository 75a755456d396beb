"""A recipe check that moves a family's recipe after the family trained: no stored run is lost, and the family
changes recipe all at once (``recipe.record``, ``recipe.retraining``, ``results.retag``)."""

import json

import pandas as pd
import pytest
import torch

from cnnlib import __main__ as cli
from cnnlib import plan, recipe, render
from cnnlib.config import make_config
from cnnlib.models import FAMILIES
from cnnlib.pages import recipe_checks
from cnnlib.paths import weights_root
from cnnlib.results import load_run, retag, save_run
from cnnlib.train import FitResult

CONTROLLED = list(FAMILIES["controlled"])
LOW = dict(setting="lr0.2_wd0.0005", lr=0.2, weight_decay=5e-4, mean=0.87)  # a choice that moves the family's lr


@pytest.fixture(autouse=True)
def _the_controlled_check_not_yet_recorded(_recorded_choices_are_a_copy):
    """The controlled family at the shared recipe's lr 0.8, as before its own check is recorded (in this test's
    copy of the recorded choices, whatever the committed file holds by then)."""
    choices = json.loads(recipe.config.RECIPE_CHOICE.read_text())
    choices.pop("controlled", None)
    recipe.config.RECIPE_CHOICE.write_text(json.dumps(choices))


def _store(cfg, test_acc=0.8) -> None:
    """A finished run of ``cfg``, stored the way training stores it (a table beside it; its weights, an empty
    state, kept outside the store)."""
    n = cfg.epochs
    history = pd.DataFrame(dict(epoch=range(1, n + 1), train_loss=[1.0] * n, train_acc=[0.7] * n,
                                test_loss=[1.1] * n, test_acc=[test_acc] * n, seconds=[5.0] * n))  # fmt: skip
    info = dict(device="cpu", device_name="Test CPU", torch="2.x", train_s=5.0 * n)
    table = pd.DataFrame(dict(block=["layer1.0"], response=[0.5]))
    save_run(cfg, FitResult(history, torch.arange(10) % 10, info, {}, {"responses": table}))


def _controlled_chooses(chosen: dict, monkeypatch) -> None:
    """The controlled check's runs choose ``chosen``; the other checks keep their recorded choices."""
    monkeypatch.setattr(recipe, "choice",
                        lambda df=None, check="shared": chosen if check == "controlled" else recipe.recorded(check))


def test_a_run_is_stored_again_as_a_variant_of_its_config_with_its_files_as_they_were(store):
    cfg = make_config("resnet18", "full", 0)
    _store(cfg)
    weights = (weights_root() / cfg.run_id / "model.pt").read_bytes()  # training kept them (a small state here)
    before = load_run(cfg)
    files = {p.name: p.read_bytes() for p in before.path.iterdir() if p.name != "run.json"}

    moved = retag(before, "lr0.8_wd0.0005")
    assert moved.config.run_id == "resnet18-full-lr0.8_wd0.0005-s0" and load_run(cfg) is None
    assert moved.matches(make_config("resnet18", "full", 0, tag="lr0.8_wd0.0005"))  # the variant's own config
    assert {p.name: p.read_bytes() for p in moved.path.iterdir() if p.name != "run.json"} == files
    assert moved.meta["stored_as"] == [cfg.run_id] and moved.final == before.final
    assert (weights_root() / moved.config.run_id / "model.pt").read_bytes() == weights
    assert not (weights_root() / cfg.run_id).exists()
    back = retag(moved, "")  # and back: the same run under its first name, which it remembers
    assert back.matches(cfg) and back.meta["stored_as"] == [cfg.run_id, moved.config.run_id]


def test_a_move_interrupted_after_the_copy_is_finished_by_calling_it_again_and_another_run_is_never_replaced(store):
    cfg = make_config("resnet18", "full", 0)
    _store(cfg)
    run = load_run(cfg)
    target = store / "results" / "resnet18-full-lr0.8_wd0.0005-s0"
    half = store / "copy"  # the state an interruption after the copy leaves: both folders complete
    retag(run, "lr0.8_wd0.0005")
    target.rename(half)
    _store(cfg)
    half.rename(target)
    assert retag(load_run(cfg), "lr0.8_wd0.0005").matches(make_config("resnet18", "full", 0, tag="lr0.8_wd0.0005"))
    assert load_run(cfg) is None
    _store(cfg, test_acc=0.5)  # another run (other numbers) where the variant is to go: nothing moves
    with pytest.raises(FileExistsError, match="holds another run; resnet18-full-s0 stays where it is"):
        retag(load_run(cfg), "lr0.8_wd0.0005")
    assert load_run(cfg).final["test_acc"] == 0.5 and load_run(target.name).final["test_acc"] == 0.8


def test_a_later_check_that_moves_the_lr_waits_for_its_familys_seed_0_at_it_then_swaps_the_runs(store, monkeypatch,
                                                                                                capsys):
    for m in CONTROLLED:  # the family's seed 0, trained at the shared recipe's lr 0.8 before its own check
        _store(make_config(m, "full", 0), test_acc=0.85)
    _controlled_chooses(LOW, monkeypatch)
    again = recipe.retraining("controlled")
    assert [c.run_id for c in again] == [f"{m}-full-lr0.2_wd0.0005-s0" for m in CONTROLLED]  # densenet121 last
    assert {(c.lr, c.epochs) for c in again} == {(0.2, 10)}
    why = recipe.blocking(check="controlled")
    assert "chose lr0.2_wd0.0005 (mean held-out accuracy 87.00%), not lr0.8_wd0.0005" in why
    assert "(4 of 4 runs still to train)" in why and "kept as that variant" in why
    # the plan trains them after the check and before seeds 1 and 2, which wait; the variant does not
    units = dict(plan.stages("full"))["7 controlled: its lr check, then seeds 1-2"]
    assert [c.run_id for c in units[6]] == [c.run_id for c in again] and units[7][0].seed == 1
    waiting = {}
    assert not plan._waits_for_a_recipe(again[0], waiting, print)
    assert plan._waits_for_a_recipe(units[7][0], waiting, print)
    # nothing is recorded, and the notebooks keep the family at 0.8, until all four are stored
    for cfg in again[:3]:
        _store(cfg, test_acc=0.87)
    assert recipe.record_new("controlled") is None and [c.model for c in recipe.to_retrain("controlled")] == [
        "densenet121"]
    assert make_config("resnet18", "full", 0).lr == 0.8 and load_run("resnet18-full-s0").config.lr == 0.8
    shown = recipe_checks().checks["controlled"]
    assert (shown.pending, shown.retrain_left, shown.retrain_runs) == (LOW, 1, 4)
    text = render.template("05_checks", r=recipe_checks())
    assert "Chosen: peak lr 0.2, at a mean held-out accuracy of 87.00%, where the family's stored runs trained at " \
           "0.8; its seed 0 has 1 of 4 runs still to train at 0.2. The notebooks show the family at 0.8 until all " \
           "of them are stored; then" in text
    assert render.check_table(shown).loc["lr0.2_wd0.0005", "note"] == render.PENDING
    cli._recipe_checks(record=False)  # `status` says the same
    out = capsys.readouterr().out.split("recipe check 'controlled'")[1]
    assert "chosen lr0.2_wd0.0005, not yet recorded as the full profile's recipe until its families' seed 0 is " \
           "trained again at it (1 run(s) to train)" in out
    _store(again[3], test_acc=0.87)
    # the last one is stored: the choice is recorded, the runs at 0.2 become the family's own, those at 0.8 a variant
    assert recipe.record_new("controlled") == LOW and recipe.retraining("controlled") == []
    for m in CONTROLLED:
        own, kept = load_run(f"{m}-full-s0"), load_run(f"{m}-full-lr0.8_wd0.0005-s0")
        assert own.matches(make_config(m, "full", 0)) and own.config.lr == 0.2 and own.final["test_acc"] == 0.87
        assert kept.matches(make_config(m, "full", 0, tag="lr0.8_wd0.0005")) and kept.final["test_acc"] == 0.85
        assert load_run(f"{m}-full-lr0.2_wd0.0005-s0") is None
    assert recipe.blocking(check="controlled") is None and plan.run_status(make_config("resnet18", "full", 0)).state \
        == "done"


def test_recording_is_finished_by_the_next_call_after_an_interruption(store, monkeypatch):
    for m in CONTROLLED:
        _store(make_config(m, "full", 0), test_acc=0.85)
        _store(make_config(m, "full", 0, tag=LOW["setting"]), test_acc=0.87)
    _controlled_chooses(LOW, monkeypatch)
    moves = []

    def flaky(run, tag):  # the sixth move is interrupted: four runs at 0.8 kept, one of those at 0.2 moved
        if len(moves) == 5:
            raise KeyboardInterrupt
        moves.append(run.config.run_id)
        return retag(run, tag)

    monkeypatch.setattr(recipe, "retag", flaky)
    with pytest.raises(KeyboardInterrupt):
        recipe.record_new("controlled")
    assert recipe.recorded("controlled") is None and recipe.to_retrain("controlled") == []
    monkeypatch.setattr(recipe, "retag", retag)
    assert recipe.record_new("controlled") == LOW
    for m in CONTROLLED:
        assert load_run(f"{m}-full-s0").config.lr == 0.2 and load_run(f"{m}-full-lr0.8_wd0.0005-s0").config.lr == 0.8
    assert json.loads((recipe.config.RECIPE_CHOICE).read_text())["controlled"]["lr"] == 0.2


def test_a_check_that_keeps_the_familys_lr_is_recorded_at_once_and_moves_nothing(store, monkeypatch):
    for m in CONTROLLED:
        _store(make_config(m, "full", 0))
    keep = dict(LOW, setting="lr0.8_wd0.0005", lr=0.8)
    _controlled_chooses(keep, monkeypatch)
    assert recipe.retraining("controlled") == [] and recipe.record_new("controlled") == keep
    assert sorted(p.name for p in (store / "results").iterdir()) == [f"{m}-full-s0" for m in sorted(CONTROLLED)]
    assert all(load_run(f"{m}-full-s0").matches(make_config(m, "full", 0)) for m in CONTROLLED)
