"""DenseNet-BC for CIFAR (Huang et al., "Densely Connected Convolutional Networks", CVPR 2017).

``densenet121``: growth rate k = 32, dense blocks of 6/12/24/16 bottleneck
layers, compression 0.5 at each transition, and a 3x3 stride-1 stem of 2k
channels in place of the ImageNet 7x7 stem + max-pool, so the first block
runs at 32x32 like the controlled ResNets' first stage.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register


class DenseLayer(nn.Module):
    """Bottleneck layer: BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k), output concatenated to input."""

    def __init__(self, c_in: int, growth: int, bottleneck: int = 4):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, bottleneck * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(bottleneck * growth)
        self.conv2 = nn.Conv2d(bottleneck * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))
        return torch.cat((x, out), dim=1)


class Transition(nn.Sequential):
    """BN-ReLU-Conv1x1 to compress channels, then 2x2 average pooling."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(
            nn.BatchNorm2d(c_in), nn.ReLU(), nn.Conv2d(c_in, c_out, 1, bias=False), nn.AvgPool2d(2)
        )


class DenseNet(nn.Module):
    """Stem, four stages (dense block + transition, the last with a final BN-ReLU), head."""

    def __init__(
        self,
        depths: tuple[int, ...] = (6, 12, 24, 16),
        *,
        growth: int = 32,
        compression: float = 0.5,
        num_classes: int = 10,
    ):
        super().__init__()
        if len(depths) != 4:
            raise ValueError(f"a DenseNet has four dense blocks, got depths {depths}")
        c = 2 * growth
        self.stem = nn.Conv2d(3, c, 3, padding=1, bias=False)
        names = []
        for i, depth in enumerate(depths):
            layers: list[nn.Module] = []
            for _ in range(depth):
                layers.append(DenseLayer(c, growth))
                c += growth
            if i < len(depths) - 1:
                c_out = int(c * compression)
                layers.append(Transition(c, c_out))
                c = c_out
            else:
                layers += [nn.BatchNorm2d(c), nn.ReLU()]
            names.append(f"layer{i + 1}")
            self.add_module(names[-1], nn.Sequential(*layers))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))
        self.stages = ("stem", *names, "head")
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, 2 * growth, 32, 32)
        x = self.layer1(x)  # (B, ., 16, 16): a dense block, then a transition
        x = self.layer2(x)  # (B, ., 8, 8)
        x = self.layer3(x)  # (B, ., 4, 4)
        x = self.layer4(x)  # the last dense block, then BN-ReLU
        return self.head(x)  # (B, num_classes)


@register(depth=121, connections="dense")
def densenet121(*, num_classes: int = 10) -> nn.Module:
    """CIFAR DenseNet-BC-121: growth 32, blocks 6/12/24/16, compression 0.5."""
    return DenseNet((6, 12, 24, 16), growth=32, compression=0.5, num_classes=num_classes)
