"""Layers that point one way: the verdicts, the renderer and the README writer import no torch, and the import
contracts of pyproject.toml hold (import-linter, as ``make lint`` runs it)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIGHT = ("cnnlib.render", "cnnlib.stats", "cnnlib.verdicts", "cnnlib.summary", "cnnlib.runs", "cnnlib.report")


def test_the_text_and_verdict_modules_import_no_torch_and_no_training():
    code = ("import sys\nimport " + ", ".join(LIGHT) + "\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'torchinfo') "
            "or m in ('cnnlib.train', 'cnnlib.plan', 'cnnlib.models', 'cnnlib.data', 'cnnlib.engine')))")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"importing {', '.join(LIGHT)} imported: {proc.stdout.strip()}"


def test_the_package_still_offers_the_registry_at_its_top():
    import cnnlib

    assert "resnet20" in cnnlib.list_models() and callable(cnnlib.create_model)
    with pytest.raises(AttributeError):
        cnnlib.no_such_name  # noqa: B018


def _lint_imports() -> str | None:
    here = Path(sys.executable).parent / "lint-imports"
    return str(here) if here.exists() else shutil.which("lint-imports")


@pytest.mark.skipif(_lint_imports() is None, reason="import-linter is not installed (pip install -e '.[dev]')")
def test_the_import_contracts_hold():
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.run([_lint_imports()], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": path})  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "2 kept, 0 broken" in proc.stdout
