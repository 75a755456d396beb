"""The sections notebooks 01-04 share, built from two stored runs."""

import matplotlib

matplotlib.use("Agg")

from cnnlib.config import make_config  # noqa: E402
from cnnlib.pages import ModelPage  # noqa: E402
from cnnlib.results import fit_or_load  # noqa: E402


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

    table = page.table()
    assert list(table.index) == ["seed_cnn", "seed_resnet18"]
    assert table.loc["seed_cnn", "final train acc, clean (%)"] != "not recorded"
    assert list(page.per_class().columns) == ["seed_cnn", "seed_resnet18"]
    assert page.full_original is None  # no full-protocol run stored here
    assert list(page.versus_original()["original report (%)"]) == [60, 72]
    reading = page.reading().data.split("\n\n")
    assert reading[0].startswith("`seed_cnn` ends at ") and reading[1].startswith("`seed_resnet18` ends at ")
    assert reading[2].startswith("`seed_resnet18` ends ") and "times the multiply-adds per image" in reading[2]
    assert reading[3].startswith("The original report's `seed_cnn` ended at about 60%; ours (smoke profile")


def test_a_page_shows_the_original_models_richest_run_before_its_counterpart_has_one(synthetic, store, monkeypatch):
    import cnnlib.runs as report

    monkeypatch.delenv("CNNLIB_PROFILE", raising=False)
    monkeypatch.setattr(report, "PREFERRED", ("smoke",))
    # a run of another config (an older recipe) does not make its profile the one shown
    fit_or_load(make_config("seed_cnn", "smoke", epochs=1), data=synthetic, device="cpu", verbose=False)
    assert report.resolve_profile(None, ["seed_cnn"]) == "full"
    fit_or_load(make_config("seed_cnn", "smoke"), data=synthetic, device="cpu", verbose=False, retrain=True)
    assert report.resolve_profile(None, ["seed_cnn"]) == "smoke"
    assert report.resolve_profile(None, ["seed_cnn", "seed_resnet18"]) == "full"  # no seed_resnet18 run yet

    page = ModelPage("seed_cnn", "seed_resnet18", None, name="01_test")
    assert page.profile == "smoke" and [r.config.model for r in page.runs] == ["seed_cnn"]
    assert page.missing == ["seed_resnet18"]
    assert "`seed_resnet18` has no run of this profile yet" in page.origin().data
    assert page.full_original is None  # and no full-protocol run to add
