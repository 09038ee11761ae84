"""Network studies: how an algorithm and a precision change a whole network's answers.

- `vgg16` and `resnet18`: the two architectures (CIFAR-style stems for small inputs, a width factor
  for quick runs) with seeded random weights; BatchNorm statistics are calibrated on seeded images so
  activations have the scale of a trained network, then folded into the convolutions.
- `network_error`: top-1 agreement with the fp32 model and the logit error over seeded inputs.
- `digits_cnn`: a small CNN trained in seconds on scikit-learn's digits (8×8 upsampled so that large
  tiles apply); `digits_accuracy` gives its real test accuracy under an algorithm and precision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from novagen.accuracy import ErrorReport, Policy, error_metrics, policy, resolve_algorithm
from novagen.algebra import AnyAlgorithm
from novagen.errors import InputError
from novagen.torch import overflow_counts, replace_conv2d

VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                                    512, 512, 512, "M")
NETWORKS = ("vgg16", "resnet18")


class ConvBN(nn.Sequential):
    """Convolution followed by BatchNorm, folded into one biased convolution by `fold_batchnorm`."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 ConvBN, identity or 1×1 strided shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(cin, cout, 3, stride)
        self.conv2 = ConvBN(cout, cout, 3, 1)
        self.shortcut: nn.Module = ConvBN(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))


def _w(channels: int, width: float) -> int:
    return max(4, int(round(channels * width)))


def vgg16_arch(num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> nn.Module:
    """VGG-16 (13 3×3 convolutions with BatchNorm) for small images: global pooling, one classifier."""
    layers: list[nn.Module] = []
    c = in_channels
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [ConvBN(c, _w(int(v), width)), nn.ReLU()]
            c = _w(int(v), width)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))


def resnet18_arch(num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> nn.Module:
    """ResNet-18 with a CIFAR stem (3×3 stride-1, no max-pool): 16 3×3 convolutions, 3 strided."""
    c = _w(64, width)
    layers: list[nn.Module] = [ConvBN(in_channels, c), nn.ReLU()]
    for i, stride in enumerate((1, 2, 2, 2)):
        cout = _w(64 * 2**i, width)
        layers += [BasicBlock(c, cout, stride), BasicBlock(cout, cout, 1)]
        c = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))


def seeded_images(n: int, size: int = 32, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Smooth random images, normalised per channel like ImageNet inputs (mean 0, std 1)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, channels, max(2, size // 8), max(2, size // 8), generator=g)
    img = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    img = img + 0.3 * torch.randn(n, channels, size, size, generator=g)
    return (img - img.mean(dim=(0, 2, 3), keepdim=True)) / img.std(dim=(0, 2, 3), keepdim=True)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every ConvBN (in eval statistics) by one convolution with bias, in place."""
    from novagen.torch.fast import folded_weights

    for name, mod in list(model.named_modules()):
        if isinstance(mod, ConvBN):
            conv, bn = mod[0], mod[1]
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                              bias=True)
            with torch.no_grad():
                w, b = folded_weights(conv.weight, conv.bias, bn)
                fused.weight.copy_(w)
                fused.bias.copy_(b)
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, fused)
    return model


def seeded_network(name: str, seed: int = 0, width: float = 1.0, size: int = 32, num_classes: int = 10,
                   calibration: int = 64) -> nn.Module:
    """A VGG-16 or ResNet-18 with He-initialised weights, BatchNorm calibrated on seeded images and folded."""
    builders: dict[str, Callable[..., nn.Module]] = {"vgg16": vgg16_arch, "resnet18": resnet18_arch}
    key = name.strip().lower().replace("-", "")
    if key not in builders:
        raise InputError(f"network '{name}' is not known: use one of {', '.join(NETWORKS)}")
    torch.manual_seed(seed)
    model = builders[key](num_classes, width)
    g = torch.Generator().manual_seed(seed + 1)
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, nonlinearity="relu", generator=g)
        elif isinstance(mod, nn.BatchNorm2d):
            nn.init.uniform_(mod.weight, 0.5, 1.5, generator=g)
            nn.init.normal_(mod.bias, 0.0, 0.2, generator=g)
            mod.momentum = None
    model.train()
    with torch.no_grad():
        model(seeded_images(calibration, size, seed=seed + 2))
    model.eval()
    return fold_batchnorm(model)


@dataclass(frozen=True)
class Predictions:
    logits: torch.Tensor
    overflows: dict[str, int]


def run_model(model: nn.Module, inputs: torch.Tensor, batch: int = 64,
              progress: Callable[[int], None] | None = None) -> Predictions:
    """Logits of a model over inputs in batches, with the overflow counts of its emulated layers."""
    overflow_counts(model, reset=True)
    outs = []
    with torch.no_grad():
        for i in range(0, len(inputs), batch):
            outs.append(model(inputs[i:i + batch]).double())
            if progress:
                progress(min(batch, len(inputs) - i))
    return Predictions(torch.cat(outs), overflow_counts(model, reset=True))


def compare_logits(ref: torch.Tensor, got: Predictions, algorithm: str, precision: str, target: str,
                   labels: torch.Tensor | None = None) -> ErrorReport:
    """Logit error and top-1 agreement (an input with a non-finite logit never agrees)."""
    finite = torch.isfinite(got.logits).all(dim=1)
    agree = (got.logits.argmax(1) == ref.argmax(1)) & finite
    rel, mx, snr, bad = error_metrics(got.logits.numpy(), ref.numpy())
    extra: dict[str, Any] = {"top1_agreement": float(agree.double().mean())}
    if labels is not None:
        extra["accuracy"] = float(((got.logits.argmax(1) == labels) & finite).double().mean())
    return ErrorReport(algorithm, precision, target, rel, mx, snr, bad, got.overflows, extra)


def _label(alg: str | AnyAlgorithm) -> str:
    return alg if isinstance(alg, str) else alg.label


def network_error(network: str | nn.Module, algorithm: str | AnyAlgorithm, precision: str | Policy = "fp16", *,
                  inputs: int = 256, size: int = 32, width: float = 1.0, seed: int = 0, balanced: bool = False,
                  progress: Callable[[int], None] | None = None) -> ErrorReport:
    """Top-1 agreement and logit error of a network whose 3×3 stride-1 convolutions run `algorithm`
    under `precision` (other convolutions directly in the same precision), against the fp32 model."""
    model = network if isinstance(network, nn.Module) else seeded_network(network, seed, width, size)
    target = network if isinstance(network, str) else type(network).__name__
    x = seeded_images(inputs, size, seed=seed + 3)
    ref = run_model(model, x).logits
    pol = policy(precision)
    alg = resolve_algorithm(algorithm, balanced)
    got = run_model(replace_conv2d(model, alg, pol, others="direct"), x, progress=progress)
    return compare_logits(ref, got, _label(alg), pol.name, f"{target} ({inputs} inputs)")


# ---------------------------------------------------------------------------------------------------
# Digits: a CNN trained for real


@dataclass(frozen=True)
class Digits:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def digits_data(size: int = 24, seed: int = 0, test_fraction: float = 0.2) -> Digits:
    """scikit-learn's 8×8 digits in [0, 1], upsampled bilinearly to size×size, split by seed."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(y) * test_fraction))
    te, tr = perm[:n_test], perm[n_test:]
    return Digits(x[tr], y[tr], x[te], y[te])


def digits_arch(width: int = 16) -> nn.Module:
    """Four 3×3 convolutions (all Winograd-eligible), two max-pools, global pooling, a linear head."""
    w = width
    return nn.Sequential(
        nn.Conv2d(1, w, 3, padding=1), nn.ReLU(),
        nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * w, 10),
    )


def digits_cnn(data: Digits, epochs: int = 12, seed: int = 0, width: int = 16,
               progress: Callable[[int], None] | None = None) -> nn.Module:
    """Train `digits_arch` with Adam in fp32 (seeded: same data and seed give the same weights)."""
    torch.manual_seed(seed)
    model = digits_arch(width)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    n = len(data.y_train)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            F.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()
        if progress:
            progress(1)
    return model.eval()


def digits_accuracy(model: nn.Module, data: Digits, algorithm: str | AnyAlgorithm,
                    precision: str | Policy, balanced: bool = False) -> ErrorReport:
    """Real test accuracy of the trained CNN with its convolutions run by `algorithm` under `precision`
    (agreement and logit error against the fp32 direct model as well)."""
    ref = run_model(model, data.x_test).logits
    pol = policy(precision)
    alg = resolve_algorithm(algorithm, balanced)
    got = run_model(replace_conv2d(model, alg, pol, others="direct"), data.x_test)
    return compare_logits(ref, got, _label(alg), pol.name, f"digits CNN ({len(data.y_test)} test images)",
                          data.y_test)


def fp32_accuracy(model: nn.Module, data: Digits) -> float:
    """Test accuracy of the model as trained (fp32, PyTorch's own convolution)."""
    with torch.no_grad():
        return float((model(data.x_test).argmax(1) == data.y_test).double().mean())

