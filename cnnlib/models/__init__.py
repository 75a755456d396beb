"""The twelve models of the study, behind one registry.

Every model exposes ``model.stages``: the names of its top-level children in
forward order (stem first, head last). Together they own every parameter, so
per-stage diagnostics (gradient norms, activation statistics) need no
model-specific code. What the study knows of a model without building it (its family,
depth, and whether it has skip connections) is ``info(name)``, declared where it is registered.
"""

from . import densenet, resnet, seed_cnn, seed_densenet, seed_resnet, seed_senet  # noqa: F401  (registers)
from ._registry import (
           CONNECTIONS,
           FAMILIES,
           ModelInfo,
           check_model,
           create_model,
           family_of,
           info,
           list_models,
           register,
)

__all__ = ["CONNECTIONS", "FAMILIES", "ModelInfo", "check_model", "create_model", "family_of", "info", "list_models",
           "register"]
