"""The original report's small DenseNet (after Huang et al., "Densely Connected
Convolutional Networks", CVPR 2017).

Built from the structure the original *printed*: its source listing has typos
that cannot run (the stem is assigned to ``nn.sovleinput`` inside a tuple, the
classifier's input size disagrees with the feature map).
"""

import torch
from torch import nn

from ._registry import register


class SeedDenseLayer(nn.Module):
    """BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k), concatenated to its input."""

    def __init__(self, c_in: int, growth: int):
        super().__init__()
        self.layer = nn.Sequential(
            nn.BatchNorm2d(c_in),
            nn.ReLU(),
            nn.Conv2d(c_in, 4 * growth, 1),
            nn.BatchNorm2d(4 * growth),
            nn.ReLU(),
            nn.Conv2d(4 * growth, growth, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.layer(x)), dim=1)


def _dense_block(c_in: int, growth: int, num_layers: int) -> nn.Sequential:
    return nn.Sequential(*(SeedDenseLayer(c_in + i * growth, growth) for i in range(num_layers)))


class SeedDenseNet(nn.Module):
    """Two dense blocks of 6 layers at 8x8, no pooling transition, a 16M-parameter classifier."""

    stages = ("stem", "denseblock1", "transition1", "denseblock2", "fc")

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 7, 2, 3),  # (B, 32, 16, 16)
            nn.BatchNorm2d(32),
            nn.MaxPool2d(2),  # (B, 32, 8, 8)
            nn.ReLU(),
        )
        self.denseblock1 = _dense_block(32, 32, 6)  # (B, 224, 8, 8)
        # The original's "transition": BN then a 3x3 conv, no ReLU, no pooling.
        self.transition1 = nn.Sequential(nn.BatchNorm2d(224), nn.Conv2d(224, 64, 3, padding=1))
        self.denseblock2 = _dense_block(64, 64, 6)  # (B, 448, 8, 8)
        self.fc = nn.Sequential(
            nn.Flatten(),  # (B, 28672)
            nn.Linear(448 * 8 * 8, 512),
            nn.ReLU(),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.denseblock2(self.transition1(self.denseblock1(self.stem(x))))
        return self.fc(x)


@register(depth=28, connections="dense")
def seed_densenet(*, num_classes: int = 10) -> nn.Module:
    """The original report's small DenseNet: 2 blocks x 6 bottleneck layers (28 weight layers), 16.4M parameters."""
    return SeedDenseNet(num_classes)
