"""The original report's SE-ResNet18 (Hu et al., "Squeeze-and-Excitation
Networks", CVPR 2018, on the pre-activation ResNet of He et al., ECCV 2016)."""

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register


class SeedSEBlock(nn.Module):
    """Pre-activation basic block with squeeze-and-excitation, as the original wrote it."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.prepare = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU())
        self.conv1 = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
        )
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = (
            nn.Conv2d(c_in, c_out, 1, stride, bias=False) if stride != 1 or c_in != c_out else None
        )
        self.fc1 = nn.Conv2d(c_out, c_out // 16, 1)
        self.fc2 = nn.Conv2d(c_out // 16, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.prepare(x)
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv2(self.conv1(pre))
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(out, 1)))))  # (B, C, 1, 1)
        return out * w + shortcut


class SeedSENet18(nn.Module):
    """SE-ResNet18 exactly as the original ran it (no final BN-ReLU after the last block)."""

    stages = ("stem", "layer1", "layer2", "layer3", "layer4", "head")

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.layer1 = nn.Sequential(SeedSEBlock(64, 64), SeedSEBlock(64, 64))
        self.layer2 = nn.Sequential(SeedSEBlock(64, 128, 2), SeedSEBlock(128, 128))
        self.layer3 = nn.Sequential(SeedSEBlock(128, 256, 2), SeedSEBlock(256, 256))
        self.layer4 = nn.Sequential(SeedSEBlock(256, 512, 2), SeedSEBlock(512, 512))
        # The original's avg_pool2d(out, 4) is global pooling for 32x32 inputs.
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.head(x)


@register(depth=18, connections="residual")
def seed_senet18(*, num_classes: int = 10) -> nn.Module:
    """The original report's pre-activation SE-ResNet18: 11,260,354 parameters."""
    return SeedSENet18(num_classes)
