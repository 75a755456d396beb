"""A small, learnable stand-in for CIFAR-10, so training tests need no download."""

import torch

from cnnlib.data import CIFAR10


def synthetic_cifar(n_train_per_class: int = 100, n_test_per_class: int = 20, seed: int = 0) -> CIFAR10:
    """Each class is a fixed random colour pattern plus noise: easy, but not trivial."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(10, 3, 8, 8, generator=g)  # coarse class patterns, upsampled below

    def split(n: int):
        y = torch.arange(10).repeat_interleave(n)
        base = torch.nn.functional.interpolate(prototypes[y], size=32, mode="nearest")
        x = (base * 180 + torch.rand(len(y), 3, 32, 32, generator=g) * 75).clamp(0, 255)
        return x.to(torch.uint8), y

    train_x, train_y = split(n_train_per_class)
    test_x, test_y = split(n_test_per_class)
    return CIFAR10(train_x, train_y, test_x, test_y, source="synthetic")
