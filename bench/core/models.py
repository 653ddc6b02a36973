"""Model registry: small readable definitions of LeNet-5, CIFAR-style VGG (with BN) and ResNet-20/56.

Every model takes `in_channels` (1 or 3), `input_size` (28 or 32) and `num_classes`, so any model
can run on any dataset; the harness builds them with `build_for`, which reads all three from the
dataset's registry entry (no silent 10 outputs on a 3-class dataset). Modules are plain
`nn.Conv2d` / `nn.BatchNorm2d` / `nn.Linear` so that the surgery (torch-pruning) sees every
coupling through tracing.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from bench.core.datasets import DatasetInfo
from bench.errors import ConfigError

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: `@register_model("vgg") def vgg(in_channels, input_size, num_classes, ...)`."""
    def deco(fn):
        MODELS[name] = fn
        return fn
    return deco


def build(name: str, in_channels: int, input_size: int, num_classes: int, **args) -> nn.Module:
    """Instantiate a registered model; unknown names or arguments raise ConfigError."""
    if name not in MODELS:
        raise ConfigError(f"model '{name}' is unknown; allowed: {', '.join(sorted(MODELS))}")
    try:
        return MODELS[name](in_channels=in_channels, input_size=input_size, num_classes=num_classes, **args)
    except TypeError as e:
        raise ConfigError(f"model '{name}': bad arguments {args} ({e})") from e


def build_for(name: str, info: DatasetInfo, model_args: tuple | dict = ()) -> nn.Module:
    """Model `name` for dataset `info`: its channels, image size and classes come from the entry."""
    c, h, _ = info.shape
    return build(name, c, h, info.num_classes, **dict(model_args))


class LeNet5(nn.Module):
    """LeNet-5 style: conv6(5x5)-pool-conv16(5x5)-pool-fc120-fc84-fc(classes), ReLU, no BN."""

    def __init__(self, in_channels: int = 1, input_size: int = 28, num_classes: int = 10):
        super().__init__()
        pad = 2 if input_size == 28 else 0  # 28x28 MNIST padded to the classic 32x32 geometry
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=pad), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(inplace=True),
            nn.Linear(120, 84), nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model("lenet5")
def lenet5(in_channels: int, input_size: int, num_classes: int) -> nn.Module:
    return LeNet5(in_channels, input_size, num_classes)


VGG_LAYOUTS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """CIFAR VGG with BN (Zagoruyko / Li et al. variant): convs then Linear(c,c)+BN1d+ReLU+Linear(c,classes)."""

    def __init__(self, layout: list, in_channels: int = 3, input_size: int = 32, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        c, size = in_channels, input_size
        for v in layout:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                size //= 2
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * size * size, c), nn.BatchNorm1d(c), nn.ReLU(inplace=True),
            nn.Linear(c, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model("vgg")
def vgg(in_channels: int, input_size: int, num_classes: int, depth: int = 16, width: float = 1.0) -> nn.Module:
    """`depth` in 11/13/16/19 picks the layout; `width` scales every conv (0.25 gives a CPU-sized net)."""
    if depth not in VGG_LAYOUTS:
        raise ConfigError(f"vgg depth {depth} is unknown; allowed: {', '.join(map(str, VGG_LAYOUTS))}")
    layout = [v if v == "M" else max(1, int(round(v * width))) for v in VGG_LAYOUTS[depth]]
    if input_size == 28:  # one pool fewer keeps 28x28 inputs above 1x1
        layout = layout[:-1]
    return VGG(layout, in_channels, input_size, num_classes)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        # Projection shortcut (option B) where the shape changes. Deviation from the zero-padded
        # option-A shortcut of He et al.'s CIFAR nets: a padded identity is not a module that a
        # dependency graph can prune through, and option B costs <1% extra MACs.
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al. CIFAR ResNet-(6n+2): 3 stages of n basic blocks, widths 16/32/64 (x width)."""

    def __init__(self, depth: int, in_channels: int = 3, num_classes: int = 10, width: float = 1.0):
        super().__init__()
        if (depth - 2) % 6:
            raise ConfigError(f"resnet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        widths = [max(1, int(round(w * width))) for w in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        blocks, cin = [], widths[0]
        for stage, w in enumerate(widths):
            for i in range(n):
                blocks.append(BasicBlock(cin, w, 2 if (stage > 0 and i == 0) else 1))
                cin = w
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model("resnet20")
def resnet20(in_channels: int, input_size: int, num_classes: int, width: float = 1.0) -> nn.Module:
    return CifarResNet(20, in_channels, num_classes, width)


@register_model("resnet56")
def resnet56(in_channels: int, input_size: int, num_classes: int, width: float = 1.0) -> nn.Module:
    return CifarResNet(56, in_channels, num_classes, width)


def init_weights(model: nn.Module) -> None:
    """Kaiming init for convs/linears, BN to identity: the usual CIFAR recipe."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out" if isinstance(m, nn.Conv2d) else "fan_in",
                                    nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
