import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for tests/synthetic.py

from synthetic import synthetic_cifar  # noqa: E402


@pytest.fixture(scope="session")
def synthetic():
    return synthetic_cifar()


@pytest.fixture
def store(tmp_path, monkeypatch):
    """Point results and checkpoints at a fresh temporary folder."""
    monkeypatch.setenv("CNNLIB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("CNNLIB_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("CNNLIB_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.delenv("CNNLIB_RETRAIN", raising=False)
    return tmp_path
