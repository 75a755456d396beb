"""The original report's plain CNN (a LeNet-5 variant, LeCun et al. 1998)."""

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register


class SeedCNN(nn.Module):
    """LeNet-style CNN exactly as the original ran it.

    The original also defined ``short_cut1 = Conv2d(3, 6, 19)`` and never used
    it; it is left out (it added parameters but no computation).
    """

    stages = ("conv1", "conv2", "conv3", "fc1", "fc2", "fc3")

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.pool2 = nn.MaxPool2d(2, 2)  # the original reused one pool; a second costs nothing
        self.conv3 = nn.Conv2d(16, 16, 1)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(F.relu(self.conv1(x)))  # (B, 6, 14, 14)
        x = self.pool2(F.relu(self.conv2(x)))  # (B, 16, 5, 5)
        x = torch.flatten(F.relu(self.conv3(x)), 1)  # (B, 400)
        x = F.relu(self.fc2(F.relu(self.fc1(x))))
        return self.fc3(x)


@register(depth=6, connections="plain")
def seed_cnn(*, num_classes: int = 10) -> nn.Module:
    """The original report's plain CNN: 3 convs, 3 linears, 62k parameters."""
    return SeedCNN(num_classes)
