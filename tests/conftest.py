import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for tests/synthetic.py

from committed import committed_results, fingerprint  # noqa: E402
from synthetic import synthetic_cifar  # noqa: E402


@pytest.fixture(scope="session")
def synthetic():
    return synthetic_cifar()


@pytest.fixture(scope="session")
def _committed_results(tmp_path_factory):
    """The committed runs, copied once per session; the session fails if a test changed them."""
    folder = committed_results(tmp_path_factory.mktemp("committed") / "results")
    before = fingerprint(folder)
    yield folder
    assert fingerprint(folder) == before, "a test wrote into the committed results; give it the store fixture"


@pytest.fixture(autouse=True)
def _the_users_files_stay_out_of_the_tests(_committed_results, tmp_path_factory, monkeypatch):
    """No test reads or writes the user's results, checkpoints, weights or figures: the results are a copy of the
    committed ones (so a run the user trained, or retrained, never changes a test's outcome), the rest fresh
    temporary folders. The ``store`` fixture replaces the results with an empty folder. Commands that tests start
    as subprocesses inherit all of it."""
    scratch = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("CNNLIB_RESULTS", str(_committed_results))
    for env, name in (("CNNLIB_CHECKPOINTS", "checkpoints"), ("CNNLIB_WEIGHTS", "weights"),
                      ("CNNLIB_FIGURES", "figures")):  # fmt: skip
        monkeypatch.setenv(env, str(scratch / name))
    monkeypatch.delenv("CNNLIB_PROFILE", raising=False)


@pytest.fixture
def store(tmp_path, monkeypatch):
    """Point results and checkpoints at a fresh temporary folder."""
    monkeypatch.setenv("CNNLIB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("CNNLIB_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("CNNLIB_WEIGHTS", str(tmp_path / "weights"))
    return tmp_path


@pytest.fixture(scope="session")
def _engine_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("engine")


@pytest.fixture(autouse=True)
def _engine_checks_stay_in_the_test_session(_engine_cache, monkeypatch):
    """The engine's measured checks of tests (tiny models, loaded machine) never reach the user's cache,
    whose rates the plan's estimates read; a test that points CNNLIB_CACHE somewhere gets it there. The
    commands that tests start as subprocesses inherit CNNLIB_ENGINE_CACHE, which keeps theirs out too."""
    from cnnlib import engine

    monkeypatch.setenv("CNNLIB_ENGINE_CACHE", str(_engine_cache / "engine.json"))
    monkeypatch.setattr(engine, "_cache_path",
                        lambda: Path(os.environ.get("CNNLIB_CACHE") or _engine_cache) / "engine.json")  # fmt: skip


@pytest.fixture(scope="session")
def _committed_choices():
    """The recorded recipe choices as committed; the session fails if a test changed the package's file."""
    from cnnlib import config

    before = config.RECIPE_CHOICE.read_bytes()
    yield before
    assert config.RECIPE_CHOICE.read_bytes() == before, "a test wrote the package's recipe_choice.json"


@pytest.fixture(autouse=True)
def _recorded_choices_are_a_copy(_committed_choices, tmp_path_factory, monkeypatch):
    """Each test reads and records recipe choices in its own copy of the committed ``recipe_choice.json``, so
    a test that records a check's choice (``recipe.record``) never changes what the full profile trains."""
    from cnnlib import config

    copy = tmp_path_factory.mktemp("choices") / "recipe_choice.json"
    copy.write_bytes(_committed_choices)
    monkeypatch.setattr(config, "RECIPE_CHOICE", copy)
