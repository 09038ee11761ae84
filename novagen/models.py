"""ImageNet-shaped models built in code (nothing downloaded), for whole-model benchmarks: ResNet-18,
ResNet-50 and VGG-16 with torchvision's layer shapes and module names, seeded He-initialised weights and
BatchNorm statistics calibrated on seeded images, so that activations look like a trained model's."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from novagen.errors import InputError
from novagen.limits import seed as limits_seed

INPUT = (1, 3, 224, 224)


class Basic(nn.Module):
    """ResNet basic block (ResNet-18/34)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _shortcut(cin, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.downsample(x))


class Bottleneck(nn.Module):
    """ResNet bottleneck block (ResNet-50 and deeper), stride on the 3×3 convolution as torchvision has it."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = _shortcut(cin, planes * 4, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.downsample(x))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    def __init__(self, block: type[Basic] | type[Bottleneck], counts: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, count in enumerate(counts):
            planes = 64 * 2**i
            blocks = []
            for j in range(count):
                blocks.append(block(cin, planes, 2 if (j == 0 and i > 0) else 1))
                cin = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class VGG16(nn.Module):
    """torchvision's VGG-16 (no BatchNorm): 13 3×3 convolutions with bias and ReLU, three linear layers."""

    CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in self.CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.ReLU()]
                c = int(v)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
                                        nn.Linear(4096, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 7)
        return self.classifier(torch.flatten(x, 1))


BUILDERS: dict[str, Callable[[int], nn.Module]] = {
    "resnet18": lambda n: ResNet(Basic, (2, 2, 2, 2), n),
    "resnet50": lambda n: ResNet(Bottleneck, (3, 4, 6, 3), n),
    "vgg16": VGG16,
}


def imagenet_model(name: str, seed: int = 0, num_classes: int = 1000, calibration: int = 4) -> nn.Module:
    """A model in eval mode with seeded weights (He-normal convolutions scaled to keep activations O(1),
    BatchNorm statistics from `calibration` seeded 224×224 images)."""
    key = name.strip().lower().replace("-", "")
    if key not in BUILDERS:
        raise InputError(f"model '{name}' is not known: use one of {', '.join(BUILDERS)}")
    g = torch.Generator().manual_seed(limits_seed(seed))
    model = BUILDERS[key](num_classes)
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, nonlinearity="relu", generator=g)
            if mod.bias is not None:
                nn.init.normal_(mod.bias, 0.0, 0.05, generator=g)
        elif isinstance(mod, nn.BatchNorm2d):
            nn.init.uniform_(mod.weight, 0.5, 1.0, generator=g)
            nn.init.normal_(mod.bias, 0.0, 0.1, generator=g)
            mod.momentum = None
        elif isinstance(mod, nn.Linear):
            nn.init.normal_(mod.weight, 0.0, (1.0 / mod.in_features) ** 0.5, generator=g)
            nn.init.zeros_(mod.bias)
    if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        model.train()
        with torch.no_grad():
            model(torch.randn(calibration, *INPUT[1:], generator=g))
    return model.eval()


def example_input(batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A seeded ImageNet-sized input (N, 3, 224, 224)."""
    return torch.randn(batch, *INPUT[1:], generator=torch.Generator().manual_seed(limits_seed(seed) + 1))
