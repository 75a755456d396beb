"""Measurements at initialisation are computed once and read back, the same to the last digit."""

import numpy as np
import pandas as pd

from cnnlib import at_init
from cnnlib.mechanisms import shattering_table


def test_a_stored_table_is_read_back_while_its_settings_hold(store):
    calls = []

    def compute():
        calls.append(1)
        return pd.DataFrame({"a": [1, 2], "b": [np.pi, 1 / 3]})

    first = at_init.stored("example", {"n": 2}, compute)
    again = at_init.stored("example", {"n": 2}, compute)
    assert len(calls) == 1 and again.equals(first) and first["b"].tolist() == [np.pi, 1 / 3]
    assert (store / "results" / "at-init" / "example.json").exists()
    at_init.stored("example", {"n": 3}, compute)  # other settings: computed again
    assert len(calls) == 2


def test_shattering_tables_match_the_direct_measurement_seed_by_seed(store):
    tables = at_init.shattering_tables(depths=(8,), points=16, seeds=(0, 1))
    for seed, table in zip((0, 1), tables, strict=True):
        direct = shattering_table(depths=(8,), points=16, seed=seed)
        pd.testing.assert_frame_equal(table, direct, check_dtype=False)


def test_backward_profiles_use_a_balanced_batch_and_several_initialisations(store, synthetic, monkeypatch):
    from cnnlib import diagnostics

    seen = []
    measure = diagnostics.backward_signal

    def spy(model, x, y, **kw):
        seen.append(y.clone())
        return measure(model, x, y, **kw)

    monkeypatch.setattr(diagnostics, "backward_signal", spy)
    df = at_init.backward_profiles(["plain20", "resnet20"], images=20, inits=3, data=synthetic)
    assert len(seen) == 2 * 2 * 3  # BatchNorm or not x models x initialisations
    assert all(np.bincount(y.numpy(), minlength=10).tolist() == [2] * 10 for y in seen)  # every class alike
    assert set(df["init_seed"]) == {0, 1, 2} and set(df["batchnorm"]) == {"with BN", "without BN"}
    assert (df["per_image"] > 0).all()
    # other initialisations give other signals; the same seed the same one
    one = df[(df["model"] == "plain20") & (df["batchnorm"] == "with BN")]
    first = one[one["index"] == 1].set_index("init_seed")["per_image"]
    assert first.nunique() == 3
    again = at_init.backward_profiles(["plain20", "resnet20"], images=20, inits=3, data=synthetic)
    pd.testing.assert_frame_equal(again, df)
    assert len(seen) == 12  # read back from the store, not measured again


def test_signal_ratios_read_first_over_last_body_block_and_the_growth_per_block():
    rows = []
    for seed, first in ((0, 100.0), (1, 1000.0)):
        for i, (block, v) in enumerate([("stem", 5.0), ("b1", first), ("b2", 10.0), ("b3", 1.0), ("head", 0.5)]):
            rows.append(dict(block=block, index=i, per_image=v, model="m", batchnorm="with BN", init_seed=seed))
    ratios = at_init.signal_ratios(pd.DataFrame(rows))
    assert ratios["log10_first_last"].tolist() == [2.0, 3.0] and ratios["blocks"].tolist() == [3, 3]
    assert ratios["growth_per_block"].tolist() == [10.0, 10 ** 1.5]


def test_shattering_over_twenty_initialisations_reads_as_one_verdict_per_depth(store):
    from cnnlib import verdicts

    tables = at_init.shattering_tables(depths=(8,), points=16, seeds=range(20))
    assert len(tables) == 20
    sh = verdicts.shattering(tables)
    assert sh.set_index("id").loc["shattering.d8", "n"] == 20
    stored = pd.read_csv(store / "results" / "at-init" / "shattering.csv")
    assert sorted(stored["init_seed"].unique()) == list(range(20))
