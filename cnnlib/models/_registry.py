"""Name -> builder registry for every model in the study."""

from collections.abc import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model builder under its function name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


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
