"""Where things live: an environment variable, else a folder of the project.

Defaults are anchored at the project root rather than the working directory,
so a notebook running in ``notebooks/`` finds the same results as the CLI.
"""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def project_path(env: str, default: str) -> Path:
    """``$env`` if set, else ``<project root>/<default>``."""
    value = os.environ.get(env)
    return Path(value).expanduser() if value else PROJECT_ROOT / default
