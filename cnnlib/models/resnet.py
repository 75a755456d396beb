"""Plain and residual networks on one CIFAR skeleton (He et al., "Deep Residual
Learning for Image Recognition", CVPR 2016; SE blocks after Hu et al., CVPR 2018).

One ``BasicBlock`` serves every network: ``shortcut=False`` gives the plain
block, ``attn=SqueezeExcite`` the SE block, so two models differ in exactly
the argument that names them.

Two families:

* the controlled family (``plainnet18``, ``resnet18``, ``se_resnet18``): 3x3
  stride-1 stem, stages 64/128/256/512 x 2 blocks, projection shortcuts
  (option B: 1x1 conv + BN) where the shape changes;
* the degradation family of He et al. section 4.2 (``plain20/56``,
  ``resnet20/56``): 16/32/64 channels, three stages of n = 3 or 9 blocks.
  Shortcuts use option A (identity, zero-padded channels, subsampled space),
  as in the paper's CIFAR experiments: it adds no parameters, so each plain
  net and its residual twin have exactly the same weights and FLOPs and
  differ only by the additions.
"""

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register
from .squeeze_excite import SqueezeExcite


def _norm(channels: int, enabled: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if enabled else nn.Identity()


class PadShortcut(nn.Module):
    """Option A shortcut: subsample by ``stride`` and zero-pad the new channels."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.stride, self.pad = stride, c_out - c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.pad))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers. ``shortcut=False`` gives the plain block.

    ``attn`` (e.g. SqueezeExcite) acts on the residual branch before the
    addition, as in Hu et al.; its output is the branch output F(x), a
    convenient hook point for layer-response statistics.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        stride: int = 1,
        *,
        shortcut: bool = True,
        attn: type[nn.Module] | None = None,
        norm: bool = True,
        option: str = "B",
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=not norm)
        self.bn1 = _norm(c_out, norm)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=not norm)
        self.bn2 = _norm(c_out, norm)
        self.attn = attn(c_out) if attn is not None else nn.Identity()
        if not shortcut:
            self.shortcut = None
        elif stride == 1 and c_in == c_out:
            self.shortcut = nn.Identity()
        elif option == "A":
            self.shortcut = PadShortcut(c_in, c_out, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=not norm), _norm(c_out, norm)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.attn(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return F.relu(out if self.shortcut is None else out + self.shortcut(x))


class ResNet(nn.Module):
    """3x3 stem, then one stage of ``depths[i]`` blocks per width (three: the CIFAR nets, or four: the
    wide nets), global pool, linear."""

    def __init__(
        self,
        widths: tuple[int, ...],
        depths: tuple[int, ...],
        *,
        num_classes: int = 10,
        shortcut: bool = True,
        attn: type[nn.Module] | None = None,
        norm: bool = True,
        option: str = "B",
    ):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, 1, 1, bias=not norm), _norm(widths[0], norm), nn.ReLU()
        )
        block = partial(BasicBlock, shortcut=shortcut, attn=attn, norm=norm, option=option)
        c_in, names = widths[0], []
        for i, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            strides = [1 if i == 0 else 2] + [1] * (depth - 1)
            blocks = []
            for stride in strides:
                blocks.append(block(c_in, width, stride))
                c_in = width
            names.append(f"layer{i + 1}")
            self.add_module(names[-1], nn.Sequential(*blocks))
        if len(widths) == 3:
            self.layer4 = None  # the CIFAR nets end at 8x8
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))
        self.stages = ("stem", *names, "head")
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He init keeps activation variance constant through ReLU layers.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, widths[0], 32, 32)
        x = self.layer1(x)
        x = self.layer2(x)  # (B, widths[1], 16, 16)
        x = self.layer3(x)  # (B, widths[2], 8, 8)
        if self.layer4 is not None:
            x = self.layer4(x)  # (B, widths[3], 4, 4)
        return self.head(x)  # (B, num_classes)


_WIDE = (64, 128, 256, 512)
_THIN = (16, 32, 64)


@register(depth=18, connections="plain")
def plainnet18(*, num_classes: int = 10) -> nn.Module:
    """ResNet18's CIFAR skeleton with every shortcut removed (18 weight layers)."""
    return ResNet(_WIDE, (2, 2, 2, 2), num_classes=num_classes, shortcut=False)


@register(depth=18, connections="residual")
def resnet18(*, num_classes: int = 10) -> nn.Module:
    """CIFAR ResNet18: 3x3 stem, 64-512 channels, projection shortcuts."""
    return ResNet(_WIDE, (2, 2, 2, 2), num_classes=num_classes)


@register(depth=18, connections="residual")
def se_resnet18(*, num_classes: int = 10) -> nn.Module:
    """CIFAR ResNet18 with squeeze-and-excitation (reduction 16) before each residual add."""
    return ResNet(_WIDE, (2, 2, 2, 2), num_classes=num_classes, attn=SqueezeExcite)


def thin_net(depth: int, *, shortcut: bool, num_classes: int = 10, norm: bool = True) -> nn.Module:
    """He et al.'s CIFAR net of ``depth = 6n + 2`` weight layers (16/32/64 channels, three
    stages of n blocks), plain or with option-A identity shortcuts. The registered
    ``plain20/32/44/56`` and ``resnet20/32/44/56`` are this function at fixed depths; other
    depths (e.g. 8 or 110) serve the mechanism experiments without being registered."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n + 2 with n >= 1 (8, 14, 20, ...), got {depth}")
    n = (depth - 2) // 6
    return ResNet(_THIN, (n, n, n), num_classes=num_classes, shortcut=shortcut, norm=norm, option="A")


def _register_thin(depth: int, shortcut: bool) -> None:
    kind = "resnet" if shortcut else "plain"

    def builder(*, num_classes: int = 10, norm: bool = True) -> nn.Module:
        return thin_net(depth, shortcut=shortcut, num_classes=num_classes, norm=norm)

    builder.__name__ = builder.__qualname__ = f"{kind}{depth}"
    builder.__doc__ = (
        f"He et al.'s {depth}-layer {'residual (option A identity shortcuts)' if shortcut else 'plain'} "
        f"CIFAR net: 16/32/64 channels, three stages of {(depth - 2) // 6} blocks."
    )
    register(builder, depth=depth, connections="residual" if shortcut else "plain")


# The degradation family (20 and 56 layers) and the depth sweep of He et al. Fig. 6 (32, 44).
for _depth in (20, 56, 32, 44):
    for _shortcut in (False, True):
        _register_thin(_depth, _shortcut)
