"""Imitates the GPU machine's Python: these packages are not installed there (scipy is not known to be).

Put this folder first on PYTHONPATH and any import of them fails, as it would on the device.
"""

import sys
from importlib.abc import MetaPathFinder

ABSENT = ("torchinfo", "seaborn", "scipy", "matplotlib", "IPython", "jupyter", "jupyter_client", "nbformat",
          "nbclient", "nbconvert", "nbval", "ipykernel")


class _Absent(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r} (not on the device image)", name=name)
        return None


sys.meta_path.insert(0, _Absent())
