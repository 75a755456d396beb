"""cnnlib: plain CNN, ResNet, DenseNet and SE-ResNet on CIFAR-10, and how skip connections change training."""

import os

# Idle OpenMP threads sleep instead of spinning: on a small, shared CPU spinning
# threads steal the cores that do the work (measured: 1.5-4x slower training).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["FAMILIES", "create_model", "list_models"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """``cnnlib.create_model`` and the rest of the registry, imported on first use: importing a module of
    the package that needs no torch (``cnnlib.render``, ``cnnlib.verdicts``) does not import it."""
    if name in __all__:
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'cnnlib' has no attribute {name!r}")
