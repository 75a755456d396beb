"""The original report's ResNet18 (after He et al., "Deep Residual Learning", CVPR 2016).

It keeps the ImageNet stem (7x7 stride-2 conv, 3x3 stride-2 max-pool) on 32x32
inputs, so the residual stages run at 8x8 down to 1x1.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register


class SeedBlock(nn.Module):
    """conv3x3-BN-conv3x3-BN (no ReLU between), plus the shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1),
            nn.BatchNorm2d(c_out),
            nn.Conv2d(c_out, c_out, 3, 1, 1),
            nn.BatchNorm2d(c_out),
        )
        # The original built this 1x1 conv inside forward(): fresh random,
        # never-trained weights on every call. Built once here, it trains.
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class SeedResNet18(nn.Module):
    """ResNet18 exactly as the original ran it, with two bugs fixed.

    Fixed: (a) the three projection shortcuts were created inside forward(),
    so they were untrained random weights, new on every call; they are now
    modules (3 x 1x1 convs with bias, no BN, +172,928 parameters). (b) Blocks 1
    and 2 both called ``layer1``, sharing its weights; block 2 now has its own.
    Kept as in the original: no ReLU in the stem, no ReLU between a block's
    two convs, default conv biases.
    """

    stages = ("stem", "layer1", "layer2", "layer3", "layer4", "head")

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3),  # (B, 64, 16, 16)
            nn.BatchNorm2d(64),
            nn.MaxPool2d(3, 2, 1),  # (B, 64, 8, 8)
        )
        self.layer1 = nn.Sequential(SeedBlock(64, 64), SeedBlock(64, 64))
        self.layer2 = nn.Sequential(SeedBlock(64, 128, 2), SeedBlock(128, 128))  # 4x4
        self.layer3 = nn.Sequential(SeedBlock(128, 256, 2), SeedBlock(256, 256))  # 2x2
        self.layer4 = nn.Sequential(SeedBlock(256, 512, 2), SeedBlock(512, 512))  # 1x1
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.head(x)


@register(depth=18, connections="residual")
def seed_resnet18(*, num_classes: int = 10) -> nn.Module:
    """The original report's ResNet18: ImageNet stem on 32x32, bugs fixed."""
    return SeedResNet18(num_classes)
