"""cnnlib.stats: known intervals, bootstrap behaviour, t-intervals
against scipy's t-tests, bounded intervals, Holm by hand, tie margins, and verdicts on
constructed comparisons."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from cnnlib.stats import (
    TIE_MARGIN,
    PairedComparison,
    accuracy_interval,
    bootstrap_evidence,
    decision_p,
    holm,
    holm_adjust,
    paired_difference,
    ranking_verdict,
    seed_difference,
    seed_evidence,
    seed_interval,
    sign_decided,
    tie_verdict,
    verdict,
    welch_contrast,
)


def paired_predictions(both: int, a_only: int, b_only: int, neither: int, seed: int = 0):
    """(pred_a, pred_b, labels) on both + a_only + b_only + neither images, shuffled:
    each count says which of the two runs gets those images right."""
    rng = np.random.default_rng(seed)
    n = both + a_only + b_only + neither
    labels = rng.integers(0, 10, n)
    right_a = np.repeat([True, True, False, False], [both, a_only, b_only, neither])
    right_b = np.repeat([True, False, True, False], [both, a_only, b_only, neither])
    order = rng.permutation(n)
    right_a, right_b = right_a[order], right_b[order]
    wrong = (labels + rng.integers(1, 10, n)) % 10  # any class but the true one
    return np.where(right_a, labels, wrong), np.where(right_b, labels, wrong), labels


# --- accuracy_interval ------------------------------------------------------------------------------------------------


def test_clopper_pearson_known_case():
    labels = np.zeros(100, dtype=int)
    pred = np.r_[np.zeros(50, dtype=int), np.ones(50, dtype=int)]
    iv = accuracy_interval(pred, labels)
    assert iv.estimate == 0.5 and iv.n == 100 and iv.confidence == 0.95
    assert (round(iv.low, 3), round(iv.high, 3)) == (0.398, 0.602)


def test_clopper_pearson_all_correct_reaches_one():
    labels = np.arange(20) % 10
    iv = accuracy_interval(labels, labels)
    assert iv.estimate == 1.0 and iv.high == 1.0
    assert iv.low == pytest.approx(0.025 ** (1 / 20))  # exact lower bound for k = n


def test_wider_confidence_gives_wider_interval():
    pred, _, labels = paired_predictions(60, 10, 10, 20)
    narrow, wide = accuracy_interval(pred, labels, confidence=0.8), accuracy_interval(pred, labels, confidence=0.99)
    assert wide.low < narrow.low < narrow.estimate < narrow.high < wide.high


# --- paired_difference ------------------------------------------------------------------------------------------------


def test_identical_predictions_give_zero_difference():
    pred, _, labels = paired_predictions(300, 0, 0, 200)
    cmp = paired_difference(pred, pred, labels)
    assert (cmp.difference, cmp.low, cmp.high) == (0.0, 0.0, 0.0)


def test_the_paired_difference_has_a_sign():
    pred_a, pred_b, labels = paired_predictions(50, 10, 0, 40)
    cmp, swapped = paired_difference(pred_a, pred_b, labels), paired_difference(pred_b, pred_a, labels)
    assert cmp.difference == pytest.approx(0.1) and swapped.difference == pytest.approx(-0.1)
    assert (swapped.low, swapped.high) == (pytest.approx(-cmp.high), pytest.approx(-cmp.low))


def test_bootstrap_contains_estimate_and_matches_normal_approximation():
    pred_a, pred_b, labels = paired_predictions(1400, 150, 100, 350)
    cmp = paired_difference(pred_a, pred_b, labels)
    assert cmp.low < cmp.difference < cmp.high
    d = (pred_a == labels).astype(float) - (pred_b == labels)
    normal_width = 2 * sps.norm.ppf(0.975) * d.std() / math.sqrt(len(d))
    assert cmp.high - cmp.low == pytest.approx(normal_width, rel=0.15)


def test_bootstrap_narrows_with_more_images():
    small = paired_predictions(140, 30, 20, 60)
    large = [np.tile(x, 4) for x in small]  # same accuracies, four times the images
    w_small, w_large = width(paired_difference(*small)), width(paired_difference(*large))
    assert w_large < 0.6 * w_small  # ~1/sqrt(4)


def width(cmp: PairedComparison) -> float:
    return cmp.high - cmp.low


def test_bootstrap_is_deterministic_given_seed():
    data = paired_predictions(700, 90, 70, 140)
    assert paired_difference(*data, seed=3) == paired_difference(*data, seed=3)
    assert len({width(paired_difference(*data, seed=s, resamples=500)) for s in range(5)}) > 1


def test_original_report_gap_on_500_images_cannot_tell():
    # 27.4% vs 30.2% on 500 test images, one seed; the runs agree on most images.
    pred_a, pred_b, labels = paired_predictions(both=110, a_only=27, b_only=41, neither=322)
    a, b = accuracy_interval(pred_a, labels), accuracy_interval(pred_b, labels)
    assert (a.estimate, b.estimate) == (0.274, 0.302)
    cmp = paired_difference(pred_a, pred_b, labels)
    assert cmp.difference == pytest.approx(-0.028)
    assert verdict(cmp.low, cmp.high, -1) == "cannot tell"  # the claim B > A
    assert verdict(cmp.low, cmp.high, +1) == "cannot tell"


def test_clear_gap_on_full_test_set_is_confirmed():
    pred_a, pred_b, labels = paired_predictions(both=8800, a_only=540, b_only=200, neither=460)
    cmp = paired_difference(pred_a, pred_b, labels)
    assert verdict(cmp.low, cmp.high, +1) == "confirmed"
    assert verdict(cmp.low, cmp.high, -1) == "refuted"


@pytest.mark.parametrize(
    "pred, labels, match",
    [
        (np.zeros(5, dtype=int), np.zeros(4, dtype=int), "same test images"),
        (np.zeros(0, dtype=int), np.zeros(0, dtype=int), "empty"),
        (np.zeros(4, dtype=int), np.zeros(4), "integer class indices"),
        (np.zeros((2, 2), dtype=int), np.zeros(4, dtype=int), "1-D"),
    ],
)
def test_bad_inputs_raise_value_error(pred, labels, match):
    with pytest.raises(ValueError, match=match):
        accuracy_interval(pred, labels)
    with pytest.raises(ValueError, match=match):
        paired_difference(pred, pred, labels)


# --- seeds ------------------------------------------------------------------------------------------------------------


def test_seed_interval_matches_hand_computed_t_interval():
    iv = seed_interval([0.90, 0.92, 0.94])
    t_975_2df = 4.302652729911275  # t quantile, 2 degrees of freedom, from tables
    half = t_975_2df * 0.02 / math.sqrt(3)
    assert iv.estimate == pytest.approx(0.92) and iv.n == 3
    assert (iv.low, iv.high) == (pytest.approx(0.92 - half), pytest.approx(0.92 + half))


def test_one_seed_has_no_interval():
    iv = seed_interval([0.61])
    assert iv.estimate == 0.61 and math.isnan(iv.low) and math.isnan(iv.high)
    assert verdict(iv.low, iv.high, +1) == "cannot tell"


def test_seed_difference_matches_scipy_t_tests():
    a, b = [0.931, 0.934, 0.929, 0.936], [0.925, 0.921, 0.930]
    welch = seed_difference(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False).confidence_interval()
    assert (welch.low, welch.high) == (pytest.approx(ref.low), pytest.approx(ref.high))
    assert welch.difference == pytest.approx(np.mean(a) - np.mean(b))
    b3 = [0.925, 0.921, 0.930, 0.928]
    paired = seed_difference(a, b3, paired=True)
    ref = sps.ttest_rel(a, b3).confidence_interval()
    assert (paired.low, paired.high) == (pytest.approx(ref.low), pytest.approx(ref.high))


def test_seed_difference_needs_two_seeds_each_side():
    with pytest.raises(ValueError, match="at least 2"):
        seed_difference([0.9], [0.8, 0.85])
    with pytest.raises(ValueError, match="one value per seed"):
        seed_difference([0.9, 0.91, 0.92], [0.8, 0.85], paired=True)


# --- verdicts ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "low, high, sign, expected",
    [
        (0.004, 0.020, +1, "confirmed"),
        (-0.020, -0.004, +1, "refuted"),
        (-0.012, 0.008, +1, "cannot tell"),
        (-0.020, -0.004, -1, "confirmed"),
        (0.0, 0.020, +1, "cannot tell"),  # touching 0 does not separate
        (math.nan, math.nan, +1, "cannot tell"),
    ],
)
def test_verdict(low, high, sign, expected):
    assert verdict(low, high, sign) == expected


CLAIM = [["SE-ResNet"], ["ResNet", "DenseNet"]]


def _c(estimate, low, high):
    return {"estimate": estimate, "low": low, "high": high}


def test_ranking_confirmed_when_every_strict_pair_is():
    pairwise = {("A", "B"): _c(0.02, 0.01, 0.03), ("B", "C"): _c(0.02, 0.01, 0.03), ("C", "A"): _c(-0.04, -0.05, -0.03)}
    out = ranking_verdict([["A"], ["B"], ["C"]], pairwise)
    assert out.verdict == "confirmed"
    assert list(out.table["pair"]) == ["A − B", "A − C", "B − C"]
    row = out.table.set_index("pair").loc["A − C"]  # given as C − A, flipped
    assert (row["estimate"], row["low"], row["high"]) == (0.04, 0.03, 0.05)


def test_ranking_refuted_by_a_reversed_strict_pair():
    pairwise = {("SE-ResNet", "ResNet"): _c(-0.02, -0.03, -0.01), ("SE-ResNet", "DenseNet"): _c(0.01, -0.01, 0.03),
                ("ResNet", "DenseNet"): _c(0.0, -0.01, 0.01)}  # fmt: skip
    out = ranking_verdict(CLAIM, pairwise)
    assert out.verdict == "refuted"


def test_ranking_refuted_by_a_separated_tie():
    pairwise = {("SE-ResNet", "ResNet"): _c(0.05, 0.04, 0.06), ("SE-ResNet", "DenseNet"): _c(0.08, 0.07, 0.09),
                ("ResNet", "DenseNet"): _c(0.03, 0.02, 0.04)}  # fmt: skip
    out = ranking_verdict(CLAIM, pairwise)
    assert out.verdict == "refuted"
    assert out.table.set_index("pair").loc["ResNet − DenseNet", "verdict"] == "refuted"


def test_ranking_with_an_open_tie_cannot_tell():
    tie = {"estimate": -0.002, "low": -0.012, "high": 0.008, "confidence": 0.95}
    pairwise = {("SE-ResNet", "ResNet"): _c(0.05, 0.04, 0.06), ("SE-ResNet", "DenseNet"): _c(0.05, 0.04, 0.06),
                ("ResNet", "DenseNet"): tie}  # fmt: skip
    assert ranking_verdict(CLAIM, pairwise, tie_margin=0.015).verdict == "confirmed"  # inside ±1.5 points
    assert ranking_verdict(CLAIM, pairwise, tie_margin=0.005).verdict == "cannot tell"
    out = ranking_verdict(CLAIM, pairwise)  # the default margin, ±1 point: [-1.2, +0.8] is neither inside nor outside
    assert out.verdict == "cannot tell" and out.table.set_index("pair").loc["ResNet − DenseNet", "verdict"] == (
        "cannot tell")


def test_ranking_from_paired_comparisons():
    se_pred, res_pred, labels = paired_predictions(both=8800, a_only=540, b_only=200, neither=460)
    dense_pred = res_pred.copy()  # DenseNet == ResNet: a tie that no interval can confirm

    def paired(a, b):
        cmp = paired_difference(a, b, labels)
        return _c(cmp.difference, cmp.low, cmp.high)

    pairwise = {("SE-ResNet", "ResNet"): paired(se_pred, res_pred),
                ("SE-ResNet", "DenseNet"): paired(se_pred, dense_pred),
                ("ResNet", "DenseNet"): paired(res_pred, dense_pred)}  # fmt: skip
    out = ranking_verdict(CLAIM, pairwise)  # against the stated margin, identical predictions are a tie
    assert out.verdict == "confirmed" and list(out.table["verdict"]) == ["confirmed"] * 3


def test_ranking_needs_every_pair():
    with pytest.raises(ValueError, match="ResNet vs DenseNet"):
        ranking_verdict(CLAIM, {("SE-ResNet", "ResNet"): _c(0.1, 0.05, 0.15), ("SE-ResNet", "DenseNet"): _c(0, 0, 0)})


# --- bounded intervals ------------------------------------------------------------------------------------------------


def test_bounded_interval_of_a_correlation_is_fishers_z_transformed_back():
    r = np.array([0.33, 0.75, 0.93])  # a lag-1 autocorrelation over 3 seeds: the plain t-interval leaves [-1, 1]
    plain = seed_interval(r)
    assert plain.high > 1
    iv = seed_interval(r, bounds=(-1, 1))
    z = np.arctanh(r)
    half = sps.t.ppf(0.975, 2) * z.std(ddof=1) / math.sqrt(3)
    assert (iv.low, iv.high) == (pytest.approx(np.tanh(z.mean() - half)), pytest.approx(np.tanh(z.mean() + half)))
    assert -1 < iv.low < iv.estimate < iv.high < 1 and iv.estimate == pytest.approx(0.67)  # estimate: the mean


def test_bounded_interval_of_an_accuracy_is_on_the_logit_scale():
    acc = np.array([0.90, 0.92, 0.94])
    iv = seed_interval(acc, bounds=(0, 1))
    y = np.log(acc / (1 - acc))
    half = sps.t.ppf(0.975, 2) * y.std(ddof=1) / math.sqrt(3)
    assert (iv.low, iv.high) == (pytest.approx(sps.logistic.cdf(y.mean() - half)),
                                 pytest.approx(sps.logistic.cdf(y.mean() + half)))  # fmt: skip
    assert iv.high < 1
    near_half = seed_interval([0.50, 0.51, 0.52], bounds=(0, 1))  # far from the bounds: close to the plain t-interval
    plain = seed_interval([0.50, 0.51, 0.52])
    assert near_half.low == pytest.approx(plain.low, abs=5e-4) and near_half.high == pytest.approx(plain.high, abs=5e-4)


def test_bounded_intervals_never_leave_the_feasible_range():
    rng = np.random.default_rng(0)
    for _ in range(200):
        lo, hi = ((0, 1), (-1, 1))[rng.integers(2)]
        v = rng.uniform(lo, hi, rng.integers(2, 6))
        for conf in (0.5, 0.95, 0.9999):
            iv = seed_interval(v, bounds=(lo, hi), confidence=conf)
            assert lo <= iv.low <= iv.high <= hi
        d = seed_difference(v, rng.uniform(lo, hi, 3), bounds=(lo, hi), confidence=0.999)
        assert lo - hi <= d.low <= d.high <= hi - lo


def test_a_value_on_a_bound_gives_the_clipped_t_interval():
    iv = seed_interval([1.0, 0.90, 0.95], bounds=(0, 1))
    assert iv.high == 1.0
    assert iv.low == pytest.approx(seed_interval([1.0, 0.90, 0.95]).low)
    with pytest.raises(ValueError, match="outside their feasible range"):
        seed_interval([1.2, 0.9], bounds=(0, 1))


def test_difference_of_bounded_values_is_clipped_to_its_feasible_range():
    d = seed_difference([0.1, 0.9, 0.5], [0.9, 0.1, 0.95], bounds=(0, 1))
    assert d.low == -1.0 and d.high < 1
    unclipped = seed_difference([0.1, 0.9, 0.5], [0.9, 0.1, 0.95])
    assert unclipped.low < -1 and d.high == pytest.approx(unclipped.high)


def test_welch_contrast_of_two_samples_is_welchs_t_and_of_four_uses_welch_satterthwaite():
    a, b = [0.931, 0.934, 0.929, 0.936], [0.925, 0.921, 0.930]
    ev = welch_contrast([a, b], [1, -1])
    ref = sps.ttest_ind(a, b, equal_var=False).confidence_interval()
    assert ev.interval(0.95) == (pytest.approx(ref.low), pytest.approx(ref.high))
    groups = [[0.2, 0.3, 0.25], [0.5, 0.52, 0.51], [0.3, 0.5, 0.4], [0.6, 0.61, 0.62]]
    ev = welch_contrast(groups, [1, -1, -1, 1])
    terms = [np.var(g, ddof=1) / 3 for g in groups]
    df = sum(terms) ** 2 / sum(t * t / 2 for t in terms)
    half = sps.t.ppf(0.975, df) * math.sqrt(sum(terms))
    est = 0.25 - 0.51 - 0.4 + 0.61
    assert ev.estimate == pytest.approx(est)
    assert ev.interval(0.95) == (pytest.approx(est - half), pytest.approx(est + half))


def test_welch_contrast_clips_to_the_range_each_sample_can_reach():
    # two seeds a side: about one degree of freedom, so the raw interval runs far past what is feasible
    a, b = [0.70, 0.62], [0.02, 0.03]
    raw = welch_contrast([a, b], [1, -1]).interval(0.95)
    assert raw[1] > 1.0
    one = welch_contrast([a, b], [1, -1], bounds=(-1, 1)).interval(0.95)
    assert one[1] == pytest.approx(min(raw[1], 2.0))  # one range for both: a - b within [-2, 2]
    each = welch_contrast([a, b], [1, -1], bounds=[(-0.15, 0.85), (-0.1, 0.9)]).interval(0.95)
    assert each == (pytest.approx(raw[0]), pytest.approx(0.85 + 0.1))  # a at most 0.85, b at least -0.1
    with pytest.raises(ValueError, match="outside their feasible range"):
        welch_contrast([a, b], [1, -1], bounds=[(-0.15, 0.6), (-0.1, 0.9)])
    with pytest.raises(ValueError, match="one \\(low, high\\) per sample"):
        welch_contrast([a, b], [1, -1], bounds=[(-1, 1)] * 3)


# --- Holm -------------------------------------------------------------------------------------------------------------


def test_holm_against_a_hand_computed_example():
    # sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> running max 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.4]), [0.8, 0.8])
    np.testing.assert_allclose(holm([0.6, 0.9]), [1.0, 1.0])  # capped at 1
    out = holm([0.01, np.nan, 0.02])  # an untested claim does not count in k
    assert math.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02)


def test_decision_p_of_a_sign_claim_is_the_t_tests_p_value():
    v = [0.01, 0.03, 0.02, 0.04]
    assert decision_p(seed_evidence(v), sign_decided) == pytest.approx(sps.ttest_1samp(v, 0).pvalue, rel=1e-6)
    assert decision_p(seed_evidence([0.02, 0.02]), sign_decided) == 0.0  # no spread: settled at every level
    assert decision_p(seed_evidence([-0.01, 0.01]), sign_decided) == 1.0  # mean 0: settled at no level


def test_holm_levels_make_each_interval_decide_exactly_when_its_adjusted_p_is_below_alpha():
    samples = [[0.010, 0.012, 0.011], [0.02, -0.01, 0.03], [0.004, 0.006, 0.0055], [0.05, 0.01, 0.02]]
    evs = [seed_evidence(v) for v in samples]
    out = holm_adjust([(ev, sign_decided) for ev in evs] + [(None, sign_decided)])
    assert out[-1] is None
    p = [sps.ttest_1samp(v, 0).pvalue for v in samples]
    np.testing.assert_allclose([a.p for a in out[:-1]], p, rtol=1e-6)
    np.testing.assert_allclose([a.p_holm for a in out[:-1]], holm(p), rtol=1e-6)
    for a in out[:-1]:
        assert sign_decided(a.low, a.high) == (a.p_holm < 0.05)
    smallest = int(np.argmin(p))
    assert out[smallest].confidence == pytest.approx(1 - 0.05 / 4)  # the first Holm step tests at alpha / k
    assert all(a.confidence >= 0.95 for a in out[:-1])


def test_bootstrap_evidence_reproduces_the_percentile_interval():
    cmp = paired_difference(*paired_predictions(700, 90, 70, 140))
    ev = bootstrap_evidence(cmp)
    assert ev.interval(0.95) == (pytest.approx(cmp.low), pytest.approx(cmp.high))
    wide = ev.interval(0.99)
    assert wide[0] < cmp.low and cmp.high < wide[1]


# --- ties against a margin --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "low, high, expected",
    [
        (-0.006, 0.008, "confirmed"),  # wholly inside ±1 point
        (0.012, 0.030, "refuted"),  # wholly above +1 point
        (-0.040, -0.015, "refuted"),  # wholly below -1 point
        (-0.004, 0.015, "cannot tell"),  # inside and beyond
        (0.004, 0.020, "cannot tell"),  # excludes 0 but reaches inside the margin: no refutation
        (math.nan, math.nan, "cannot tell"),
    ],
)
def test_tie_verdict_against_the_stated_margin(low, high, expected):
    assert TIE_MARGIN == 0.01
    assert tie_verdict(low, high) == expected


def test_ranking_ties_use_the_stated_margin_by_default():
    strict = _c(0.05, 0.04, 0.06)

    def tie(low, high):
        pairwise = {("SE-ResNet", "ResNet"): strict, ("SE-ResNet", "DenseNet"): strict,
                    ("ResNet", "DenseNet"): _c(0.0, low, high)}  # fmt: skip
        return ranking_verdict(CLAIM, pairwise)

    assert tie(-0.006, 0.008).verdict == "confirmed"
    assert tie(0.012, 0.030).verdict == "refuted"
    assert tie(-0.004, 0.015).verdict == "cannot tell"
