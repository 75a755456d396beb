"""Where things live (an environment variable, else a folder of the project),
and the one way files are written there (atomically).

Defaults are anchored at the project root rather than the working directory,
so a notebook running in ``notebooks/`` finds the same results as the CLI.
"""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def project_path(env: str, default: str) -> Path:
    """``$env`` if set, else ``<project root>/<default>``."""
    value = os.environ.get(env)
    return Path(value).expanduser() if value else PROJECT_ROOT / default


def results_root() -> Path:
    """Run folders (small tables, committed): $CNNLIB_RESULTS, else results/."""
    return project_path("CNNLIB_RESULTS", "results")


def user_cache() -> Path:
    """The user's cache folder of the project: $CNNLIB_CACHE, $XDG_CACHE_HOME/cnnlib or ~/.cache/cnnlib."""
    if os.environ.get("CNNLIB_CACHE"):
        return Path(os.environ["CNNLIB_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "cnnlib"


def checkpoint_root() -> Path:
    """Resumable training state, one folder per run (never committed): $CNNLIB_CHECKPOINTS, else
    ``checkpoints/`` in the user's cache folder (beside the decoded data), so that a fresh checkout
    of the repository does not lose the unfinished runs."""
    value = os.environ.get("CNNLIB_CHECKPOINTS")
    return Path(value).expanduser() if value else user_cache() / "checkpoints"


def weights_root() -> Path:
    """Trained weights of small models (never committed): $CNNLIB_WEIGHTS, else weights/."""
    return project_path("CNNLIB_WEIGHTS", "weights")


def figures_root() -> Path:
    """Saved figures: $CNNLIB_FIGURES, else figures/."""
    return project_path("CNNLIB_FIGURES", "figures")


def shown(path: str | Path) -> str:
    """A path as the user can type it: relative to the working folder when inside it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def atomic_write(path: Path, content: str | bytes | Callable[[BinaryIO], object]) -> None:
    """Create ``path`` with ``content`` (text as UTF-8, or what ``content(file)`` writes) so that readers see
    the old file or the new one, never half: a temporary file in the same folder, fsync, then rename.
    The temporary file is removed if anything fails or is interrupted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
