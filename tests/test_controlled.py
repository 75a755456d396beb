"""What the controlled family's connections change in training: the pace of fitting and the per-stage probe."""

import numpy as np
import pandas as pd
import pytest
from test_verdicts import fake_run

from cnnlib import analysis, render, verdicts
from cnnlib.results import list_runs


def test_one_run_per_net_gives_a_difference_without_a_verdict():
    runs = [fake_run("plainnet18", 0, 0.9, 0.85, epochs=10), fake_run("resnet18", 0, 0.8, 0.85, epochs=10)]
    pace = verdicts.controlled_training(runs, epoch=3).set_index("id")
    assert list(pace.index) == ["controlled.early.plainnet18", "controlled.end.plainnet18"]
    # the fake histories rise linearly from 0.1 to the final accuracy over 10 epochs
    assert pace.loc["controlled.early.plainnet18", "estimate"] == pytest.approx(2 / 9 * (0.9 - 0.8))
    assert pace.loc["controlled.end.plainnet18", "estimate"] == pytest.approx(0.1)
    assert set(pace["verdict"]) == {verdicts.CANNOT_TELL_ONE_NET}
    assert set(pace["method"]) == {"none"} and set(pace["n"]) == {1} and pace["low"].isna().all()


def test_seeds_give_holm_adjusted_welch_intervals():
    runs = [fake_run(m, s, acc + 0.002 * s, 0.8, epochs=10)
            for m, acc in (("densenet121", 0.95), ("resnet18", 0.85)) for s in range(3)]  # fmt: skip
    pace = verdicts.controlled_training(runs).set_index("id")
    assert set(pace["verdict"]) == {"confirmed"} and set(pace["method"]) == {"welch"} and set(pace["n"]) == {3}
    assert sorted(pace["level"]) == pytest.approx([0.975, 0.975])  # Holm over two claims, both decided
    assert verdicts.controlled_training(runs, reference="plainnet18").empty


def test_stage_profile_reads_the_probe_of_one_epoch():
    run = fake_run("resnet18", 0, 0.9, 0.85, epochs=2)
    run.history = run.history.assign(grad_stem=[0.3, 0.2], grad_head=[1.2, 0.1], act_std_stem=[0.5, 0.4],
                                     act_std_head=[1.6, 1.4])  # fmt: skip
    p = analysis.stage_profile([run, fake_run("plainnet18", 0, 0.9, 0.85)], epoch=1)  # the second has no probe
    assert list(p["stage"]) == ["stem", "head"] and list(p["order"]) == [0, 1]
    assert p["grad"].tolist() == [0.3, 1.2] and p["act_std"].tolist() == [0.5, 1.6]


def test_the_text_on_the_controlled_familys_training_holds_on_the_committed_runs():
    ctrl = ("plainnet18", "resnet18", "se_resnet18", "densenet121")
    runs = [r for r in list_runs() if r.config.model in ctrl and r.config.profile == "full" and not r.config.tag]
    pace = verdicts.controlled_training(runs, epoch=3)
    assert render.stale("06_controlled_training", render.claims(pace)) == []
    first = analysis.stage_profile([r for r in runs if r.config.seed == 0], epoch=1).set_index(["model", "stage"])
    # "the plain net's first layer is not starved of gradient": its stem's gradient within tenfold of resnet18's
    assert first.loc[("plainnet18", "stem"), "grad"] > first.loc[("resnet18", "stem"), "grad"] / 10
    # "the std of resnet18's stage outputs rises from the first stage to the third"
    assert first.loc[("resnet18", "layer3"), "act_std"] > first.loc[("resnet18", "layer1"), "act_std"]
    assert np.isfinite(pd.to_numeric(pace["estimate"])).all()
