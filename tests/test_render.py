import math
from types import SimpleNamespace

import pandas as pd
import pytest

from cnnlib import render


def _frame(verdict="confirmed", low=0.031, high=0.142):
    return pd.DataFrame([dict(id="degradation.diff", claim="depth hurts the plain nets more", a="plain56", b="plain20",
                              quantity="clean training error", estimate=0.087, low=low, high=high, level=0.9833, n=3,
                              unit="points", method="welch contrast", verdict=verdict)])


def test_numbers():
    assert render.pct(0.8614) == "86.1%"
    assert render.points(0.087) == "+8.7 points"
    assert render.pct(math.nan) == "n/a"
    row = _frame().iloc[0]
    assert render.interval(row) == "+8.7 [+3.1, +14.2] points"
    assert render.interval(_frame(low=math.nan, high=math.nan).iloc[0]) == "+8.7 points (no interval)"
    assert render.level(row) == "98.33%"
    assert render.method(row) == "Welch contrast over 3 seeds per net"


def test_table_escapes_cells():
    md = render.table(pd.DataFrame({"a": ["x|y"], "b": [1]}))
    assert md.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | 1 |"]


def test_verdict_table_has_one_row_per_claim():
    md = render.verdict_table(_frame())
    lines = md.strip().splitlines()
    assert len(lines) == 3 and "plain56 − plain20" in lines[2] and "confirmed" in lines[2]


def test_template_flags_moved_verdicts(tmp_path, monkeypatch):
    (tmp_path / "t.md").write_text('+++\n[presumes]\n"degradation.diff" = "confirmed"\n+++\n'
                                   'Depth hurts: {{ v["degradation.diff"] | interval }}.\n')
    monkeypatch.setattr(render, "TEMPLATES", tmp_path)
    v = render.claims(_frame())
    assert render.presumes("t") == {"degradation.diff": "confirmed"}
    assert render.stale("t", v) == []
    assert render.template("t", v) == "Depth hurts: +8.7 [+3.1, +14.2] points.\n"
    moved = render.claims(_frame(verdict="cannot tell"))
    assert render.stale("t", moved) == ["degradation.diff: written for 'confirmed', the runs now say 'cannot tell'"]
    assert render.template("t", moved).startswith("> **This text was written for other verdicts**")
    # a text written for two verdicts, with a sentence for each, is stale only when the runs say a third
    (tmp_path / "b.md").write_text('+++\n[presumes]\n"degradation.diff" = ["confirmed", "cannot tell"]\n+++\n'
                                   '{% if v["degradation.diff"].verdict == "confirmed" %}Depth hurts.{% else %}'
                                   'Cannot tell yet.{% endif %}\n')
    assert render.stale("b", v) == [] and render.template("b", v) == "Depth hurts.\n"
    assert render.stale("b", moved) == [] and render.template("b", moved) == "Cannot tell yet.\n"
    assert render.stale("b", render.claims(_frame(verdict="refuted"))) == [
        "degradation.diff: written for 'confirmed' or 'cannot tell', the runs now say 'refuted'"]
    with pytest.raises(Exception, match="nope"):  # a misspelt number fails loudly, never renders empty
        (tmp_path / "u.md").write_text("{{ v['nope'].estimate }}")
        render.template("u", v)


def test_claim_ids_are_unique():
    with pytest.raises(ValueError, match="repeat"):
        render.claims(_frame(), _frame())



def test_what_would_settle_a_cannot_tell_follows_from_the_rows_numbers():
    base = _frame().iloc[0].to_dict()
    one_seed = "more seeds per net (two or more give an interval)"
    assert render.settle(base) == ""  # decided
    assert render.settle({**base, "verdict": "cannot tell", "method": "none"}) == one_seed
    assert render.settle({**base, "verdict": "cannot tell"}) == "more seeds"
    assert render.settle({**base, "verdict": "cannot tell (floor)"}) == "a budget in which every net learns"
    assert render.settle({**base, "verdict": "cannot tell", "method": "fisher z"}) == "more initialisations"
    assert render.settle({**base, "verdict": "cannot tell (one network per architecture)", "method": "none"}) == (
        "more trained networks per architecture")
    md = render.verdict_table(pd.DataFrame([{**base, "verdict": "cannot tell", "method": "none"}]))
    assert md.splitlines()[0].endswith("| what would settle it |") and f"| {one_seed} |" in md
    assert "what would settle it" not in render.verdict_table(_frame())  # every row decided: no column


def _check(name, accs, diverged=("", "", ""), chosen=None, to_train=0):
    """A recipe check as ``pages.recipe_checks`` gives it: two nets over three settings (``accs``: a pair of final
    held-out accuracies per setting, NaN where a net has none)."""
    tags = ["lr0.2_wd0.0005", "lr0.4_wd0.0005", "lr0.8_wd0.0005"]
    table = pd.DataFrame({"setting": tags, "lr": [0.2, 0.4, 0.8], "weight decay": [5e-4] * 3,
                          "a held-out acc": [a for a, _ in accs], "b held-out acc": [b for _, b in accs],
                          "diverged": list(diverged), "diverged runs": [d.split(", ") if d else [] for d in diverged],
                          "mean": [(a + b) / 2 if not d else math.nan
                                                               for (a, b), d in zip(accs, diverged, strict=True)]})
    return SimpleNamespace(name=name, nets=("a", "b"), table=table, to_train=to_train, runs=6, chosen=chosen,
                           pending=None)  # fmt: skip


def test_a_recipe_check_reads_as_a_table_with_its_choice_and_what_diverged():
    nan = math.nan
    chosen = dict(setting="lr0.4_wd0.0005", lr=0.4, weight_decay=5e-4, mean=0.8)
    shown = render.check_table(_check("controlled", [(0.79, 0.75), (0.81, 0.79), (nan, 0.7)],
                                      diverged=("", "", "a, c (full)"), chosen=chosen))
    assert list(shown.index) == ["lr0.2_wd0.0005", "lr0.4_wd0.0005", "lr0.8_wd0.0005"]
    assert shown.loc["lr0.4_wd0.0005", ["a held-out acc (%)", "mean (%)", "note"]].tolist() == ["81.00", "80.00",
                                                                                              "chosen"]
    assert shown.loc["lr0.8_wd0.0005", ["a held-out acc (%)", "b held-out acc (%)", "mean (%)", "note"]].tolist() == [
        "diverged", "70.00", "", "diverged: a, c (full)"]
    waiting = render.check_table(_check("controlled", [(0.79, nan), (nan, nan), (nan, nan)], to_train=5))
    assert waiting["b held-out acc (%)"].tolist() == ["not trained yet"] * 3 and set(waiting["note"]) == {""}


def test_the_recipe_checks_text_says_each_checks_choice_or_what_it_still_trains():
    nan = math.nan
    accs = [(0.79, 0.75), (0.81, 0.79), (0.8, 0.7)]
    done = dict(setting="lr0.8_wd0.0005", lr=0.8, weight_decay=5e-4, mean=0.75)
    r = SimpleNamespace(epochs=10, images=45_000, held_out=5_000, checks={
        "shared": _check("shared", accs, chosen=done), "seed": _check("seed", accs, chosen=done | dict(lr=0.1)),
        "controlled": _check("controlled", [(0.79, nan), (nan, nan), (nan, nan)], to_train=5)})
    text = render.template("05_checks", r=r)
    assert "10 epochs under each setting, on 45,000 training images" in text and "the 5,000 training" in text
    assert "Chosen: peak lr 0.8 and weight decay 0.0005, at a mean held-out accuracy of 75.00%." in text
    assert "Chosen: peak lr 0.1, at a mean held-out accuracy of 75.00%." in text  # the seed check sets the lr only
    assert "Not chosen yet: 5 of its 6 runs are still to train." in text
