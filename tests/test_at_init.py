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


def test_gradient_profiles_cover_each_model_with_and_without_batchnorm(store, synthetic):
    df = at_init.gradient_profiles(["plain20", "resnet20"], images=8, data=synthetic)
    assert set(df["model"]) == {"plain20", "resnet20"} and set(df["batchnorm"]) == {"with BN", "without BN"}
    assert (df["grad_norm"] > 0).all()
    again = at_init.gradient_profiles(["plain20", "resnet20"], images=8, data=synthetic)
    pd.testing.assert_frame_equal(again, df)
