"""The sentences of notebooks 01-05, built from (fake) stored runs."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cnnlib import findings
from cnnlib.config import make_config
from cnnlib.results import Run

LABELS = np.repeat(np.arange(10), 20)  # 200 test images, 20 per class


def run_with(model, test_acc, *, clean=None, loss1=1.5, seed=0, right=None, device="cpu", s_epoch=1.0,
             profile="smoke"):  # fmt: skip
    """A smoke-profile run whose history ends at ``test_acc`` and whose predictions get the first
    ``right`` test images right (default: as many as ``test_acc`` says)."""
    test_acc = np.asarray(test_acc, dtype=float)
    clean = test_acc + 0.05 if clean is None else np.asarray(clean, dtype=float)
    h = pd.DataFrame({"epoch": range(1, len(test_acc) + 1), "train_acc": clean, "clean_train_acc": clean,
                      "test_acc": test_acc, "test_loss": [loss1] + [1.0] * (len(test_acc) - 1)})  # fmt: skip
    right = round(test_acc[-1] * len(LABELS)) if right is None else right
    preds = np.where(np.arange(len(LABELS)) < right, LABELS, (LABELS + 1) % 10).astype(np.uint8)
    meta = {"device": device, "engine": {"precision": "fp32"}, "final": {"seconds_per_epoch": s_epoch}}
    return Run(make_config(model, profile, seed), h, preds, meta, Path("/nonexistent"))


def labels_of(_run):
    return LABELS


def test_a_run_that_has_not_fitted_its_training_data_says_so_with_its_interval():
    run = run_with("seed_cnn", [0.2, 0.3, 0.4, 0.5, 0.6])
    text = " ".join(findings.run_sentences(run, LABELS))
    assert ("`seed_cnn` ends at 60.0% test accuracy (95% interval 52.9% to 66.8% over 200 test images) after "
            "5 epochs") in text
    assert "short of the 90% at which a net counts as fitting its training images" in text
    assert "Over its last epoch the test accuracy changed by +10.0 points (it was still rising)" in text
    assert "blew up" not in text and "best epoch" not in text


def test_a_run_past_the_fitting_mark_but_short_of_all_its_images_says_both():
    run = run_with("resnet18", [0.5, 0.7, 0.8, 0.85, 0.86], clean=[0.6, 0.8, 0.88, 0.9, 0.906])
    text = " ".join(findings.run_sentences(run, LABELS))
    assert ("Its final clean training accuracy is 90.6%, +4.6 points above the test accuracy: it passes the 90% at "
            "which a net counts as fitting its training images but still gets 9.4% of them wrong, so the gap is its "
            "generalisation gap so far.") in text


def test_a_fitted_run_reads_its_gap_as_generalisation_and_names_its_peak():
    run = run_with("resnet20", [0.5, 0.8, 0.9, 0.85, 0.85], clean=[0.6, 0.9, 0.97, 0.98, 0.99])
    text = " ".join(findings.run_sentences(run, LABELS))
    assert "it fits its training images, and the gap is its generalisation gap" in text and "+14.0 points" in text
    assert "Its best epoch was epoch 3 at 90.0%" in text and "(it had levelled off)" in text


def test_a_first_epoch_blow_up_is_named_and_only_above_the_threshold():
    blown, healthy = run_with("plain56", [0.1, 0.3], loss1=460.4), run_with("plain20", [0.2, 0.3], loss1=20.0)
    assert findings.EXPLODED == pytest.approx(10 * np.log(10))
    text = " ".join(findings.run_sentences(blown, LABELS))
    assert "test loss after epoch 1 was 460.4 (a uniform guess scores 2.30)" in text
    assert "blew up" not in " ".join(findings.run_sentences(healthy, LABELS))


def test_two_models_are_compared_with_a_paired_interval_and_their_costs():
    a, b = run_with("resnet18", [0.3, 0.8]), run_with("seed_resnet18", [0.3, 0.5])
    text = findings.comparison_sentence([a], [b], LABELS)
    assert text.startswith("`resnet18` ends 30.0 points above `seed_resnet18` (95% interval +")
    assert "paired bootstrap over 200 test images" in text and "it excludes zero: more than" in text
    close = findings.comparison_sentence([run_with("resnet18", [0.5, 0.51])], [b], LABELS)
    assert "1.0 points above" in close and close.endswith("; it includes zero: within the noise.")
    cost = findings.cost_sentence(a, b)
    assert cost.startswith("`resnet18` needs 15 times the multiply-adds per image of `seed_resnet18`")
    assert "took 1.0 times its seconds per epoch on the same machine" in cost
    other = run_with("seed_resnet18", [0.3, 0.5], device="cuda")
    assert "seconds per epoch" not in findings.cost_sentence(a, other)  # machines differ: no time ratio


def test_the_page_reading_puts_the_original_report_next_to_ours():
    original, ours = run_with("seed_senet18", [0.5, 0.9]), run_with("se_resnet18", [0.4, 0.91])
    text = findings.page_reading([original], [ours], labels_of)
    paragraphs = text.split("\n\n")
    assert len(paragraphs) == 4 and paragraphs[0].startswith("`seed_senet18` ends at 90.0%")
    assert paragraphs[1].startswith("`se_resnet18` ends at 91.0%")
    assert "about the same multiply-adds per image" in paragraphs[2]
    assert paragraphs[3] == ("The original report's `seed_senet18` ended at about 82%; ours (smoke profile, "
                             "200 training images) is +8.0 points from it, and our 95% interval lies wholly above it.")
    chance = findings.page_reading([run_with("seed_cnn", [0.1, 0.12])], [], labels_of)
    assert chance.endswith("`seed_cnn` ended within 5 points of chance (10%): it did not learn in this budget.")


def test_a_full_run_is_read_against_the_accuracy_the_study_expects_of_it():
    # 200 test images: the 95% interval is about +-6 points wide
    missed = run_with("seed_resnet18", [0.5, 0.7], profile="full")
    assert findings.target_sentence(missed, LABELS) == (
        "The study expects at least 85.0% of `seed_resnet18` under the full profile (a number set before training, "
        "which nothing is tuned toward); this run (70.0%) misses it by 15.0 points, with its 95% interval below it. "
        "After 2 epochs it still gets 25.0% of its training images wrong (clean training accuracy 75.0%), where the "
        "published schedules fit nearly all of them, so a longer schedule (He et al. trained 164 epochs) is the "
        "first thing that could close the gap: a change for its whole family, chosen on held-out training images as "
        "the recipe was.")
    # a run that fits nearly all its training images and still misses points at generalisation instead
    overfit = run_with("resnet56", [0.5, 0.8], clean=[0.6, 0.995], profile="full")
    assert findings.target_sentence(overfit, LABELS).endswith(
        "It fits nearly all its training images (clean training accuracy 99.5%), so the gap is in how it "
        "generalises, and more augmentation or regularisation is the first thing that could close it: a change for "
        "its whole family, chosen on held-out training images as the recipe was.")
    assert "meets it, +13.0 points above" in findings.target_sentence(run_with("seed_densenet", [0.95], profile="full"),
                                                                       LABELS)  # fmt: skip
    assert "too close to tell" in findings.target_sentence(run_with("resnet20", [0.92], profile="full"), LABELS)
    # only the full profile's runs, of the models with a target, are held to one
    assert findings.target_sentence(run_with("seed_resnet18", [0.7]), LABELS) is None
    assert findings.target_sentence(run_with("plain20", [0.7], profile="full"), LABELS) is None
    text = findings.page_reading([missed], [], labels_of)
    assert "misses it by 15.0 points, with its 95% interval below it. After 2 epochs" in text.split("\n\n")[0]
    met = run_with("seed_densenet", [0.95], profile="full")
    pilot = run_with("seed_resnet18", [0.2])  # a pilot run of the same model and seed is not the full one
    assert findings.targets_sentence([pilot, missed, met, run_with("plain20", [0.7], profile="full")], labels_of) == (
        "Against the accuracy the study expects of each architecture under the full profile (set before training; "
        "first seed, 95% interval over the test images): `seed_resnet18` misses it by 15.0 points (70.0% against "
        "85.0%; 75.0% clean training accuracy); `seed_densenet` meets it (95.0% against 82.0%). `seed_resnet18` "
        "still gets more than 1% of its training images wrong (the published schedules fit nearly all of them), so "
        "a longer schedule (He et al. trained 164 epochs) is the first thing that could close the gap. It is a "
        "change for a whole family, chosen on held-out training images as the recipe was.")
    both = findings.targets_sentence([missed, overfit, run_with("resnet20", [0.5, 0.8], profile="full")], labels_of)
    assert "`seed_resnet18` and `resnet20` still get more than 1% of their training images wrong" in both
    assert "`resnet56` fits nearly all its training images: there more augmentation or regularisation" in both
    assert "Either is a change for a whole family" in both
    assert "is a change" not in findings.targets_sentence([met], labels_of)  # nothing missed, nothing to close
    assert findings.targets_sentence([run_with("seed_resnet18", [0.7])], labels_of) is None


def test_the_comparison_closing_tables_the_verdicts_and_reads_the_family():
    seeds = [run_with(m, [0.2, a]) for m, a in (("seed_senet18", 0.6), ("seed_resnet18", 0.4), ("seed_densenet", 0.5))]
    ctrl = [run_with(m, [0.3, a + 0.01 * s], seed=s) for m, a in (("resnet18", 0.7), ("plainnet18", 0.6),
                                                                   ("se_resnet18", 0.72)) for s in range(3)]
    evidence = ["A − B: +2.0 [+1.0, +3.0] points (97.5% level)"]
    tables = {"original models": pd.DataFrame({"claim": ["accuracy: A > B"], "verdict": ["confirmed"],
                                               "evidence (Holm-adjusted intervals)": evidence}),
              "controlled family": pd.DataFrame()}  # fmt: skip
    text = findings.comparison_reading(seeds, ctrl, labels_of, tables)
    head, *bullets = text.split("\n- ")
    assert head.startswith("| claim | verdict, original models | evidence |")
    assert "| accuracy: A > B | **confirmed** | original models: A − B: +2.0 [+1.0, +3.0] |" in head
    assert bullets[0] == ("The original models: `seed_senet18` ends highest (60.0%), then `seed_densenet` (50.0%), "
                          "`seed_resnet18` (40.0%) (final test accuracy, one seed each).")
    assert bullets[1].startswith("The controlled family: `se_resnet18` ends highest (73.0%)")
    assert bullets[1].endswith("(final test accuracy, mean over 3 seeds).")
    assert bullets[2].startswith("Removing the shortcuts (same skeleton): `plainnet18` ends 10.0 points below")
    assert "Welch t over 3 seeds" in bullets[2] and "it excludes zero" in bullets[2]
    assert bullets[3].startswith("Adding the SE module (same skeleton): `se_resnet18` ends 2.0 points above")
    assert bullets[4].startswith("In the original models") and "paired bootstrap" in bullets[4]
    assert bullets[5].startswith("No model fits its training images (the highest final clean training accuracy "
                                 "is 79.0%, `se_resnet18`")


def test_fitting_is_said_for_all_some_or_none():
    fit, short = run_with("resnet20", [0.5, 0.9], clean=[0.6, 0.95]), run_with("plain20", [0.5, 0.6])
    assert findings.fitting_sentence([fit]).startswith("Every model fits its training images")
    assert findings.fitting_sentence([fit, short]).startswith("`resnet20` fits its training images")


def test_families_of_different_profiles_are_named_with_their_profile_and_read_apart():
    full = [run_with(m, [0.5, a], clean=[0.6, c], profile="full")
            for m, a, c in (("seed_senet18", 0.89, 0.97), ("seed_resnet18", 0.81, 0.88), ("seed_densenet", 0.85, 0.93))]
    pilot = [run_with(m, [0.2, 0.3 + 0.01 * s], seed=s) for m in ("resnet18", "plainnet18", "se_resnet18")
             for s in range(3)]  # fmt: skip
    text = findings.comparison_reading(full, pilot, labels_of)
    bullets = text.split("- ")[1:]
    assert bullets[0].startswith("The original models (profile 'full'): `seed_senet18` ends highest (89.0%)")
    assert bullets[1].startswith("The controlled family (profile 'smoke'): ")
    # fitting is read per family: the full runs fit, the pilot's do not, and neither sentence mixes them
    fitting = [b for b in bullets if "training images (" in b]
    assert fitting[0].startswith("Of the original models (profile 'full'): `seed_senet18`, `seed_densenet` fit their "
                                 "training images")
    assert fitting[1].startswith("Of the controlled family (profile 'smoke'): no model fits its training images")
    # one profile: the names stay bare and one fitting sentence covers both families
    same = findings.comparison_reading([r for r in pilot if r.config.model == "resnet18"],
                                       [r for r in pilot if r.config.model != "resnet18"], labels_of)
    assert "profile" not in same and same.count("fits its training images") == 1
