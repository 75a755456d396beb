"""Measurements at initialisation are computed once and read back, the same to the last digit."""

import numpy as np
import pandas as pd
import pytest

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


def test_gradient_traces_are_the_direct_traces_and_read_back_from_the_store(store, monkeypatch):
    import torch

    from cnnlib import mechanisms
    from cnnlib.mechanisms import gradient_trace
    from cnnlib.models import create_model

    traces = at_init.gradient_traces(["plain20", "resnet20"], points=8, seed=3)
    g = torch.Generator().manual_seed(3)
    x0, x1 = torch.randn(3, 32, 32, generator=g), torch.randn(3, 32, 32, generator=g)
    for name, trace in traces.groupby("model", sort=False):
        torch.manual_seed(3)
        direct = gradient_trace(create_model(name), x0, x1, points=8)
        np.testing.assert_array_equal(trace["gradient"].to_numpy(), direct)
        assert trace["position"].tolist() == np.linspace(0, 1, 8).tolist()
    assert list(traces["model"].unique()) == ["plain20", "resnet20"]
    monkeypatch.setattr(mechanisms, "gradient_trace", lambda *a, **kw: pytest.fail("computed again"))
    pd.testing.assert_frame_equal(at_init.gradient_traces(["plain20", "resnet20"], points=8, seed=3), traces)


def _table(store):
    """A stored table ``example`` (a column of 1 / 3, 2 / 3), and its two files."""
    at_init.stored("example", {"n": 2}, lambda: pd.DataFrame({"b": [1 / 3, 2 / 3]}))
    folder = store / "results" / "at-init"
    return folder / "example.csv", folder / "example.json"


@pytest.mark.parametrize(("damage", "said"), [
    ("csv changed", "example.csv does not match the SHA-256 that example.json records"),
    ("csv garbled", "example.csv does not match the SHA-256"),
    ("json garbled", "example.json does not parse as JSON"),
    ("json a list", "example.json does not hold a table's record"),
])  # fmt: skip
def test_a_damaged_table_stops_its_reader_with_one_line_and_is_never_computed_again(store, damage, said):
    from cnnlib.results import DamagedRunError

    csv, record = _table(store)
    if damage == "csv changed":  # parses, with other numbers: only the checksum tells
        csv.write_text(csv.read_text().replace("0.333", "0.334"))
    elif damage == "csv garbled":
        csv.write_bytes(b"\x00\xff garbage \x13\x37" * 7)
    elif damage == "json garbled":
        record.write_text(record.read_text()[:20])
    else:
        record.write_text("[1, 2]")
    calls = []
    with pytest.raises(DamagedRunError, match=said) as e:
        at_init.stored("example", {"n": 2}, lambda: calls.append(1) or pd.DataFrame({"b": [0.0]}))
    assert calls == [] and len(str(e.value).splitlines()) == 1
    assert str(e.value).endswith("remove it and its .json: the notebook that reads it computes both again "
                                 "(`cnnlib.at_init`)")  # fmt: skip


def test_verify_names_a_damaged_table_and_records_missing_checksums(store, capsys):
    import json

    from cnnlib.__main__ import main

    csv, record = _table(store)
    made = json.loads(record.read_text())
    record.write_text(json.dumps({k: v for k, v in made.items() if k != "sha256"}))  # stored before checksums
    assert main(["verify", "--record-checksums"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("all 0 stored runs and 1 tables beside them in ") and out[0].endswith(" are sound")
    assert out[1:] == ["recorded the checksums of 0 run(s) stored without them",
                       "recorded the checksums of 1 table(s) stored without them: at-init/example.csv"]
    assert json.loads(record.read_text())["sha256"] == made["sha256"]
    csv.write_text("b\n0.5\n")
    assert main(["verify"]) == 2
    out, err = capsys.readouterr()
    assert out.startswith("damaged ") and "example.csv does not match the SHA-256" in out
    assert err == "error: 0 of the 0 stored runs and 1 of the 1 tables beside them are damaged (listed above)\n"
    csv.unlink()
    assert main(["verify"]) == 2 and "example.csv is missing" in capsys.readouterr().out
