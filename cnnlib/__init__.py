"""cnnlib: plain CNN, ResNet, DenseNet and SE-ResNet on CIFAR-10, and how skip
connections change training."""

from .models import FAMILIES, create_model, list_models

__all__ = ["FAMILIES", "create_model", "list_models"]
__version__ = "0.1.0"
