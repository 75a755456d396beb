"""The GPU run cannot be refused or break on the device: size, the device's Python, a dry run.

The GPU machine takes at most 64 MiB of files with a command and returns at most 8 files
of 16 MiB; its Python lacks torchinfo, seaborn, matplotlib, IPython and jupyter
(``tests/device_image`` imitates that). These tests check all of it on the CPU.
"""

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from cnnlib.plan import plan

REPO = Path(__file__).resolve().parent.parent
DEVICE_IMAGE = Path(__file__).parent / "device_image"
MiB = 2**20


def _data_tarball() -> Path | None:
    for folder in (os.environ.get("CNNLIB_DATA"), REPO / "data"):
        if folder and (path := Path(folder) / "cifar10-jpg.tar.gz").is_file():
            return path
    return None


def test_tracked_files_and_the_data_fit_in_what_a_gpu_run_takes():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    paths = [REPO / p for p in files.decode().split("\0") if p]
    tracked = sum(p.stat().st_size for p in paths if p.is_file())
    tarball = _data_tarball()
    data = tarball.stat().st_size if tarball else 19_400_000  # the JPEG copy: 18.5 MiB
    assert not [p for p in paths if p.suffix in (".pt", ".pth", ".ckpt")], "weights are never tracked"
    assert tracked + data <= 40 * MiB, f"tracked {tracked / MiB:.1f} MiB + data {data / MiB:.1f} MiB > 40 MiB"


def _device_env(tmp_path: Path, **extra) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(DEVICE_IMAGE), str(Path(__file__).parent)]),
               CNNLIB_RESULTS=str(tmp_path / "results"), CNNLIB_CHECKPOINTS=str(tmp_path / "checkpoints"),
               CNNLIB_WEIGHTS=str(tmp_path / "weights"), CNNLIB_DOWNLOAD="0")  # fmt: skip
    return env | extra


TRAIN_ON_THE_DEVICE_IMAGE = """
import sys
from synthetic import synthetic_cifar
import cnnlib.__main__, cnnlib.plan, cnnlib.mechanisms
from cnnlib.results import fit_or_load
from cnnlib.config import make_config
for name in ("torchinfo", "seaborn", "matplotlib", "IPython", "jupyter"):
    try:
        __import__(name)
    except ModuleNotFoundError:
        continue
    sys.exit(f"{name} is importable: the device image is not imitated")
run = fit_or_load(make_config("resnet20", "smoke", epochs=1, train_subset=100, test_subset=50),
                  data=synthetic_cifar(20, 10), device="cpu", verbose=False)
print("trained", run.config.run_id, sorted(p.name for p in run.path.iterdir()))
"""


def test_the_device_path_imports_and_trains_without_the_notebook_packages(tmp_path):
    env = _device_env(tmp_path)
    proc = subprocess.run([sys.executable, "-c", TRAIN_ON_THE_DEVICE_IMAGE], env=env, capture_output=True,
                          text=True, timeout=300, cwd=REPO)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "trained resnet20-smoke-s0" in proc.stdout and "responses.csv" in proc.stdout
    for args in (["-m", "cnnlib", "train-missing", "--help"], ["benchmarks/throughput.py", "--help"]):
        proc = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
        assert proc.returncode == 0, proc.stdout + proc.stderr


NAME = re.compile(r"^[A-Za-z0-9._-]+$")


@pytest.mark.skipif(_data_tarball() is None, reason="needs the CIFAR-10 tarball (CNNLIB_DATA or data/)")
def test_gpu_run_dry_run_returns_what_the_device_can_send_back(tmp_path):
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    # the smallest units (seed_cnn, every seed of the smoke plan: seconds each), and a budget generous enough for a
    # loaded machine: the script ends when they are trained, so a fast machine does not wait for it. What a GPU
    # run of the thin nets stores (tables, weights) is the device-image test's above.
    # the committed runs count as done (a copy, see conftest): the user's own runs in results/ change nothing here
    env = _device_env(tmp_path, OUT=str(out), SCRATCH=str(scratch), PROFILE="smoke", SKIP_GPU_CHECK="1",
                      KNOWN_RESULTS=os.environ["CNNLIB_RESULTS"],
                      MODELS="seed_cnn", COMMAND_S="400", SPARE_S="25", BENCH_S="0",
                      CHECKPOINT_EVERY_S="0", PYTHON=sys.executable,
                      CNNLIB_DATA=str(_data_tarball().parent))  # fmt: skip
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_run.sh")], env=env, capture_output=True,
                          text=True, timeout=500)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert 0 < len(files) <= 8 and all(p.parent == out for p in files), files
    assert all(NAME.match(p.name) and p.stat().st_size < 16 * MiB for p in files), files
    assert {"results.tar.gz", "log.txt"} <= {p.name for p in files}
    unpacked = tmp_path / "unpacked"
    for archive in out.glob("*.tar.gz"):
        with tarfile.open(archive) as tar:
            tar.extractall(unpacked, filter="data")
    runs = sorted(p.name for p in (unpacked / "results").iterdir())
    assert runs == sorted(c.run_id for c in plan("smoke") if c.model == "seed_cnn"), proc.stdout[-3000:]
    assert {p.parent.name for p in (unpacked / "weights").rglob("model.pt")} == set(runs)  # small: weights kept
    assert all((unpacked / "results" / r / "run.json").is_file() for r in runs)
    tops = {p.name for p in unpacked.iterdir()}
    assert tops <= {"results", "benchmarks", "weights"}, tops
    assert {p.parent.name for p in (unpacked / "benchmarks").rglob("*") if p.is_file()} <= {
        p.name for p in (unpacked / "benchmarks" / "gpu_runs").iterdir()}
    assert not (REPO / "scratch").exists() or scratch != REPO / "scratch"
