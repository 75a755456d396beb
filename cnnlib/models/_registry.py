"""Name -> builder registry for every model in the study, with each model's metadata.

What the study needs to know of a model besides its weights lives here, next to its builder,
and nothing parses a model's name for it (``info``): its family (``FAMILIES``, which also fixes
the order the report presents the models in), its depth and the connections its blocks have.
"""

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

# How a model's blocks pass their input on: "plain" (only through their layers), "residual" (a
# shortcut added to the block's output, identity or projection; SE blocks are residual blocks) or
# "dense" (every layer's input concatenated to its output, Huang et al.). Residual and dense blocks
# are the study's skip connections.
CONNECTIONS = ("plain", "residual", "dense")


@dataclass(frozen=True)
class ModelInfo:
    """What the study knows of a registered model without building it."""

    name: str
    family: str | None  # key of FAMILIES; None for a model outside the study's families
    depth: int | None  # weight layers (convolutions and linear layers) on the longest path, as the paper counts
    connections: str | None  # one of CONNECTIONS; None where a model was registered without it

    @property
    def shortcut(self) -> bool | None:
        """Whether the model has skip connections (residual or dense), None if not declared."""
        return None if self.connections is None else self.connections != "plain"


_MODELS: dict[str, Callable[..., nn.Module]] = {}
_INFO: dict[str, tuple[int | None, str | None]] = {}  # name -> (depth, connections), as registered


def register(fn: Callable[..., nn.Module] | None = None, *, depth: int | None = None,
             connections: str | None = None) -> Callable:  # fmt: skip
    """Register a model builder under its function name, with its depth and connections (see
    ``ModelInfo``): ``@register(depth=20, connections="plain")``. A bare ``@register`` leaves them
    undeclared (for models outside the study, such as a test's)."""
    if connections is not None and connections not in CONNECTIONS:
        raise ValueError(f"connections must be one of {CONNECTIONS}, got {connections!r}")

    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if fn.__name__ in _MODELS:
            raise ValueError(f"model {fn.__name__!r} is registered twice")
        _MODELS[fn.__name__] = fn
        _INFO[fn.__name__] = (depth, connections)
        return fn

    return add if fn is None else add(fn)


def check_model(name: str) -> None:
    """ValueError, with the list of names, unless ``name`` is a registered model."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(list_models())} "
                         "(see python -m cnnlib list)")


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model by name, e.g. ``create_model("resnet18")``."""
    check_model(name)
    return _MODELS[name](**kwargs)


# The study's three families, in the order the report presents them.
FAMILIES: dict[str, tuple[str, ...]] = {
    "seed": ("seed_cnn", "seed_resnet18", "seed_densenet", "seed_senet18"),
    "controlled": ("plainnet18", "resnet18", "se_resnet18", "densenet121"),
    "degradation": ("plain20", "plain56", "resnet20", "resnet56"),
    "depth": ("plain32", "plain44", "resnet32", "resnet44"),  # He et al. Fig. 6, with 20 and 56
}


def list_models() -> list[str]:
    """Names of all registered models: the families in report order, then any others."""
    ordered = [name for names in FAMILIES.values() for name in names if name in _MODELS]
    return ordered + sorted(set(_MODELS) - set(ordered))


def family_of(name: str) -> str | None:
    """The family ("seed", "controlled", "degradation", "depth") a model belongs to, if any."""
    return next((fam for fam, names in FAMILIES.items() if name in names), None)


def info(name: str) -> ModelInfo:
    """A registered model's metadata, e.g. ``info("plain56")``: family "degradation", depth 56,
    connections "plain" (no shortcut)."""
    check_model(name)
    depth, connections = _INFO[name]
    return ModelInfo(name, family_of(name), depth, connections)
