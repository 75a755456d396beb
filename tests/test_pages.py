"""The sections notebooks 01-04 share, built from two stored runs."""

import re

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from cnnlib import analysis, pages, render, runs, verdicts  # noqa: E402
from cnnlib.config import make_config  # noqa: E402
from cnnlib.data import DataError, load_cifar10  # noqa: E402
from cnnlib.models import FAMILIES  # noqa: E402
from cnnlib.pages import ModelPage  # noqa: E402
from cnnlib.results import fit_or_load  # noqa: E402
from cnnlib.runs import get_runs  # noqa: E402


def test_a_model_page_shows_every_section_from_stored_runs(synthetic, store, monkeypatch, capsys):
    monkeypatch.setenv("CNNLIB_FIGURES", str(store / "figures"))
    monkeypatch.delenv("CNNLIB_PROFILE", raising=False)
    # one engine for both runs, so that they share one provenance line on any machine (left to the
    # measured choice, one model may train in channels_last and the other not)
    monkeypatch.setenv("CNNLIB_PRECISION", "fp32")
    monkeypatch.setenv("CNNLIB_CHANNELS_LAST", "1")
    for model in ("seed_cnn", "seed_resnet18"):
        fit_or_load(make_config(model, "smoke"), data=synthetic, device="cpu", verbose=False)
    page = ModelPage("seed_cnn", "seed_resnet18", "smoke", name="01_test")
    page.__dict__["data"] = synthetic  # instead of the tarball
    origin = page.origin().data
    assert "Results shown: profile **smoke**" in origin and "`seed_cnn` (seed 0), `seed_resnet18` (seed 0)" in origin
    assert [r.config.model for r in page.final] == ["seed_cnn", "seed_resnet18"]

    page.architecture()
    assert "Total params: 62,278" in capsys.readouterr().out
    page.curves()
    page.confusion()
    assert sorted(p.name for p in (store / "figures").iterdir()) == ["01_test_confusion.png", "01_test_curves.png"]
    n, _ = analysis.per_class_precision(page.final, synthetic)
    assert f"{n:,} test images" in page.per_class_precision().data

    table = page.table()
    assert list(table.index) == ["seed_cnn", "seed_resnet18"]
    assert table.loc["seed_cnn", "final train acc, clean (%)"] != "not recorded"
    assert list(page.per_class().columns) == ["seed_cnn", "seed_resnet18"]
    assert page.full_original is None  # no full-protocol run stored here
    shown = page.versus_original().data  # a row per original model: ours against the report's number
    assert "| seed_cnn − original report |" in shown and "| seed_resnet18 − original report |" in shown
    claims = page.claims().set_index("id")
    assert list(claims.columns) == list(render.VERDICT_COLUMNS[1:])
    assert set(claims.index) == {"original.seed_cnn", "original.seed_resnet18", "targets.seed_resnet18",
                                 "fits.seed_cnn", "fits.seed_resnet18", "comparison.seed_resnet18-seed_cnn"}
    # a smoke run is not held to the full profile's target
    assert claims.loc["targets.seed_resnet18", "verdict"] == "not testable in this regime"
    cnn = page.final[0]
    acc = float((cnn.predictions == page.labels(cnn)).mean())
    assert claims.loc["original.seed_cnn", "estimate"] == pytest.approx(acc - 0.60)
    row = claims.loc["comparison.seed_resnet18-seed_cnn"]
    assert row["method"] == "paired bootstrap" and row["n"] == len(page.labels(cnn)) and row["low"] <= row["high"]
    # a net against itself: a difference of exactly 0, a confirmed tie, and no side above the other
    same = pages.pair_claim([cnn], [cnn], page.labels(cnn), tie=True)
    assert (same["estimate"], same["low"], same["high"], same["verdict"]) == (0, 0, 0, "confirmed")
    assert pages.pair_claim([cnn], [cnn], page.labels(cnn))["verdict"] == "cannot tell"

    # a second seed of the original model: its numbers and claims go over both seeds, the figures of errors stay
    # with the first seed, and the pair compares on the seed both have
    fit_or_load(make_config("seed_cnn", "smoke", 1), data=synthetic, device="cpu", verbose=False)
    page = ModelPage("seed_cnn", "seed_resnet18", "smoke", (0, 1, 2), name="01_test")
    page.__dict__["data"] = synthetic
    assert [(r.config.model, r.config.seed) for r in page.runs] == [("seed_cnn", 0), ("seed_cnn", 1),
                                                                    ("seed_resnet18", 0)]  # fmt: skip
    assert [(r.config.model, r.config.seed) for r in page.final] == [("seed_cnn", 0), ("seed_resnet18", 0)]
    assert "`seed_cnn` (seeds 0, 1), `seed_resnet18` (seed 0)" in page.origin().data
    claims = page.claims().set_index("id")
    assert (claims.loc["original.seed_cnn", "method"], claims.loc["original.seed_cnn", "n"]) == ("t", 2)
    assert claims.loc["original.seed_resnet18", "method"] == "binomial"
    assert claims.loc["comparison.seed_resnet18-seed_cnn", "method"] == "paired bootstrap"
    assert page.table().loc["seed_cnn", "seeds"] == 2


def test_a_page_shows_the_original_models_richest_run_before_its_counterpart_has_one(synthetic, store, monkeypatch):
    import cnnlib.runs as report

    monkeypatch.delenv("CNNLIB_PROFILE", raising=False)
    monkeypatch.setattr(report, "PREFERRED", ("smoke",))
    # a run of another config (an older recipe) does not make its profile the one shown
    fit_or_load(make_config("seed_cnn", "smoke", epochs=1), data=synthetic, device="cpu", verbose=False)
    assert runs.resolve_profile(None, ["seed_cnn"]) == "full"
    fit_or_load(make_config("seed_cnn", "smoke"), data=synthetic, device="cpu", verbose=False, retrain=True)
    assert runs.resolve_profile(None, ["seed_cnn"]) == "smoke"
    assert runs.resolve_profile(None, ["seed_cnn", "seed_resnet18"]) == "full"  # no seed_resnet18 run yet

    page = ModelPage("seed_cnn", "seed_resnet18", None, name="01_test")
    assert page.profile == "smoke" and [r.config.model for r in page.runs] == ["seed_cnn"]
    assert page.missing == ["seed_resnet18"]
    assert "No run of this profile yet: `seed_resnet18`" in page.origin().data
    assert page.full_original is None  # and no full-protocol run to add


def test_a_models_numbers_and_claims_are_over_its_seeds_where_it_has_several():
    import numpy as np
    from test_verdicts import fake_run

    from cnnlib.constants import FITS_TRAINING

    runs = [fake_run("seed_resnet18", s, clean, test) for s, (clean, test) in enumerate(
        [(0.84, 0.81), (0.85, 0.82), (0.83, 0.80)])]  # fmt: skip
    rows = {r["id"]: r for r in pages.run_claims(runs, labels=None)}  # no test images needed across seeds
    original, fits = rows["original.seed_resnet18"], rows["fits.seed_resnet18"]
    assert original["estimate"] == pytest.approx(0.81 - 0.72)
    assert fits["estimate"] == pytest.approx(0.84 - FITS_TRAINING)
    assert (original["method"], original["n"], fits["method"], fits["n"]) == ("t", 3, "t", 3)
    assert original["low"] < original["estimate"] < original["high"] and fits["verdict"] == "refuted"
    f = pages.facts(runs, labels=None)
    assert (f.acc, f.clean, f.seeds) == (pytest.approx(0.81), pytest.approx(0.84), 3) and f.low < 0.81 < f.high
    assert render.mean_of(f) == " (the mean of 3 seeds)"
    # one seed: the exact binomial interval over the images that one network scored
    one = {r["id"]: r for r in pages.run_claims(runs[:1], labels=np.zeros(10, dtype=np.uint8))}
    assert (one["original.seed_resnet18"]["method"], one["original.seed_resnet18"]["n"]) == ("binomial", 10)
    single = pages.facts(runs[:1], np.zeros(10, dtype=np.uint8))
    assert one["fits.seed_resnet18"]["n"] == runs[0].config.n_clean() and render.mean_of(single) == ""
    # against a model with one seed, a comparison pairs the two on that seed, and the text says so
    assert render.paired_on(single, f) == render.paired_on(f, single) == " (on seed 0, which both have)"
    assert render.paired_on(f, f) == render.paired_on(single, single) == ""
    with pytest.raises(ValueError, match="a single model"):
        pages.run_claims([runs[0], fake_run("seed_cnn", 0, 0.6, 0.6)], labels=None)


SEEDS = (0, 1, 2)  # as notebooks 01-05 ask for them
PAGES = (("seed_cnn", "plainnet18", "01_cnn"), ("seed_resnet18", "resnet18", "02_resnet"),
         ("seed_densenet", "densenet121", "03_densenet"), ("seed_senet18", "se_resnet18", "04_senet"))


def test_the_texts_of_notebooks_01_to_05_hold_on_the_committed_runs():
    """Every presumed verdict of the templates of notebooks 01-05 holds on the committed full-profile runs, the
    numbers the texts state without a verdict hold too, and no sentence repeats across the texts."""
    try:
        data = load_cifar10(download=False)
    except DataError:
        pytest.skip("no CIFAR-10 here ($CNNLIB_DATA): the texts are read against the real test labels")
    texts = []
    for original, ours, name in PAGES:
        page = ModelPage(original, ours, "full", SEEDS, name=name)
        page.__dict__["data"] = data
        assert render.stale(f"{name[:2]}_reading", render.claims(page.claims())) == []
        texts.append(page.reading().data)
    families = [get_runs(list(FAMILIES[f]), "full") + get_runs(list(FAMILIES[f]), "full", SEEDS[1:], required=False)
                for f in ("seed", "controlled")]  # as notebook 05 reads them
    numbers = pages.comparison(*families, data)
    v = render.claims(numbers.runs)
    assert render.stale("05_targets", v) == []
    assert render.stale("05_closing", render.claims(numbers.pairs, *numbers.rankings)) == []
    timing = pd.concat(numbers.rankings).set_index("id").loc[["ranking.original.3", "ranking.controlled.3"]]
    assert set(timing["method"]) == {"steps"}  # training time from the committed step table
    texts += [render.template("05_targets", v, f=numbers.f, he_epochs=verdicts.HE_EPOCHS),
              render.template("05_closing", render.claims(numbers.pairs, *numbers.rankings), f=numbers.f)]
    # what the texts say of the numbers beyond the verdicts
    f = numbers.f
    cnn = f["seed_cnn"]
    assert 0 < cnn.clean - cnn.acc < 0.03  # 01: training and test accuracy within a few points
    short = {m: -v[f"targets.{m}"].estimate for m in f if f"targets.{m}" in v}
    assert min(short[m] for m in pages.RANKED["controlled"].values()) > max(
        short[m] for m in pages.RANKED["original"].values() if short[m] > 0)  # 05: the controlled family
    clean = {m: x.clean for m, x in f.items() if f"targets.{m}" in v}  # 05: the range of clean training accuracy
    assert min(clean, key=clean.get) == "seed_resnet18" and max(clean, key=clean.get) == "seed_senet18"
    assert max(clean.values()) < 0.99  # none fits every training image
    assert repeated_sentences(texts) == []


def repeated_sentences(texts) -> list[str]:
    """Sentences of six words or more that appear in more than one of ``texts`` (notebooks do not repeat each other)."""
    seen: dict[str, int] = {}
    for i, text in enumerate(texts):
        for s in {s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if len(s.split()) >= 6}:
            seen.setdefault(s, i)
            if seen[s] != i:
                seen[s] = -1
    return [s for s, i in seen.items() if i == -1]


def test_repeated_sentences():
    a = "The plain nets fit their training images worse with depth. Short one."
    b = "Something else entirely is said here today. The plain nets fit their training images worse with depth."
    assert repeated_sentences([a, b]) == ["The plain nets fit their training images worse with depth."]


def test_the_recipe_checks_of_an_empty_store_have_everything_to_train_and_keep_their_recorded_choices(store):
    from cnnlib import recipe
    from cnnlib.config import RECIPE_CHECKS

    r = pages.recipe_checks()
    assert list(r.checks) == list(RECIPE_CHECKS) and (r.images, r.held_out) == (45_000, 5_000)
    for name, check in r.checks.items():
        assert check.to_train == check.runs == len(RECIPE_CHECKS[name]["tags"]) * len(RECIPE_CHECKS[name]["nets"])
        assert check.chosen == recipe.recorded(name)  # the record, not the (absent) runs, says what was chosen
        assert check.table["mean"].isna().all()
