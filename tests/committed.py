"""A copy of the committed results, so that the tests (and the notebook regression) read the runs git holds,
never the user's own: ``python tests/committed.py DEST`` writes ``DEST`` (a folder of run folders).

The runs come from git's HEAD; outside a git checkout (an unpacked archive holds no runs of the user's), the
results folder as it is.
"""

import io
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def committed_results(dest: Path) -> Path:
    """Write the results that HEAD commits into ``dest`` (created; it must not exist) and return it."""
    dest = Path(dest)
    try:
        tar = subprocess.run(["git", "archive", "--format=tar", "HEAD", "results"], cwd=REPO, capture_output=True,
                             check=True, timeout=120).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        shutil.copytree(REPO / "results", dest)
        return dest
    unpacked = dest.parent / f".{dest.name}-unpacking"
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(unpacked, filter="data")
    (unpacked / "results").rename(dest)
    unpacked.rmdir()
    return dest


def fingerprint(folder: Path) -> list[tuple[str, int, int]]:
    """(path, size, mtime) of every file under ``folder``: what a test that wrote there would change."""
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.rglob("*") if p.is_file())  # fmt: skip


if __name__ == "__main__":
    committed_results(Path(sys.argv[1]))
