"""Trained networks for low-precision studies, built and trained here in minutes, nothing downloaded.

- `digits`: scikit-learn's 8×8 digits upsampled to 24×24 and the 4-convolution CNN of `novagen.networks`;
- `shapes`: ten classes of procedural 32×32 colour images drawn by code (disc, square, triangle, cross, ring,
  horizontal, vertical and diagonal stripes, checkerboard, dots), each at a random position, size, phase
  and colour over a noisy background, seeded with a held-out test split; and a small ResNet (a 3×3 stem,
  three stages of two basic blocks, 16/32/64 channels; 13 3×3 convolutions, 11 of them stride 1; BatchNorm
  in eval mode after training).

`trained(name)` trains the network with Adam (fixed recipe, seeded) and returns (model, data); the same
name and seed give the same weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from novagen.errors import InputError

SHAPES = ("disc", "square", "triangle", "cross", "ring", "hstripes", "vstripes", "dstripes", "checker", "dots")
NETWORKS = ("digits", "shapes")


@dataclass(frozen=True)
class Dataset:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    name: str


def _draw(kind: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """One 3×size×size image of class `kind`."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    cx, cy = rng.uniform(0.3, 0.7, 2)
    rad = rng.uniform(0.15, 0.3)
    phase, period = rng.uniform(0, 2 * math.pi), rng.uniform(0.12, 0.25)
    dx, dy = xx - cx, yy - cy
    name = SHAPES[kind]
    if name == "disc":
        mask = dx ** 2 + dy ** 2 < rad ** 2
    elif name == "square":
        mask = (abs(dx) < rad * 0.9) & (abs(dy) < rad * 0.9)
    elif name == "triangle":
        mask = (dy < rad * 0.8) & (dy > -rad * 0.8 + 2 * abs(dx) * 1.2)
    elif name == "cross":
        mask = ((abs(dx) < rad * 0.3) & (abs(dy) < rad)) | ((abs(dy) < rad * 0.3) & (abs(dx) < rad))
    elif name == "ring":
        d = np.sqrt(dx ** 2 + dy ** 2)
        mask = (d < rad) & (d > rad * 0.6)
    elif name == "hstripes":
        mask = np.sin(2 * math.pi * yy / period + phase) > 0
    elif name == "vstripes":
        mask = np.sin(2 * math.pi * xx / period + phase) > 0
    elif name == "dstripes":
        mask = np.sin(2 * math.pi * (xx + yy) / (period * 1.4) + phase) > 0
    elif name == "checker":
        mask = (np.sin(2 * math.pi * xx / period + phase) * np.sin(2 * math.pi * yy / period + phase)) > 0
    else:
        mask = (np.sin(2 * math.pi * xx / (period * 0.8) + phase) * np.sin(2 * math.pi * yy / (period * 0.8))) > 0.6
    fg, bg = rng.uniform(0.2, 1.0, 3), rng.uniform(0.0, 0.6, 3)
    img = np.where(mask[None], fg[:, None, None], bg[:, None, None])
    return img + rng.normal(0.0, 0.08, img.shape)


def shapes_data(n_train: int = 4000, n_test: int = 1000, size: int = 32, seed: int = 0) -> Dataset:
    """The procedural shapes (see the module docstring), balanced over classes, normalised to mean 0, std 1."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    labels = np.arange(n) % len(SHAPES)
    rng.shuffle(labels)
    x = np.stack([_draw(int(k), rng, size) for k in labels]).astype(np.float32)
    x = (x - x.mean()) / x.std()
    xt, yt = torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))
    return Dataset(xt[:n_train], yt[:n_train], xt[n_train:], yt[n_train:], "shapes")


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + self.short(x))


def small_resnet(width: int = 16, num_classes: int = 10) -> nn.Module:
    """A 3×3 stem and three stages of two basic blocks (width, 2·width, 4·width channels)."""
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    c = width
    for i, stride in enumerate((1, 2, 2)):
        cout = width * 2 ** i
        layers += [_Block(c, cout, stride), _Block(cout, cout, 1)]
        c = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))


def train(model: nn.Module, data: Dataset, epochs: int, lr: float = 3e-3, batch: int = 64, seed: int = 0,
          progress: Callable[[int], None] | None = None) -> nn.Module:
    """Adam with a cosine schedule, cross-entropy, seeded batches."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * math.ceil(len(data.y_train) / batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(data.y_train), generator=g)
        for i in range(0, len(perm), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            F.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()
            sched.step()
        if progress:
            progress(1)
    return model.eval()


def trained(name: str, seed: int = 0, progress: Callable[[int], None] | None = None) -> tuple[nn.Module, Dataset]:
    """(model, data) of a network of NETWORKS, trained here (digits: 12 epochs; shapes: 8 epochs)."""
    from novagen.networks import digits_cnn, digits_data

    key = name.strip().lower()
    if key == "digits":
        d = digits_data(seed=seed)
        return digits_cnn(d, seed=seed, progress=progress), Dataset(d.x_train, d.y_train, d.x_test, d.y_test, "digits")
    if key == "shapes":
        data = shapes_data(seed=seed)
        torch.manual_seed(seed)
        return train(small_resnet(), data, epochs=8, seed=seed, progress=progress), data
    raise InputError(f"network '{name}' is not one of {', '.join(NETWORKS)}")


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 250) -> float:
    """Top-1 accuracy of the model on (x, y)."""
    model.eval()
    with torch.no_grad():
        hits = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(y), batch))
    return hits / len(y)
