"""Static scales for int8 (and fp8) stages, calibrated on data instead of taken from each tensor's own amax.

A calibrated scale is fixed at deployment: the activations' V = BT d B gets one scale per Winograd tap
(from calibration data), the weights' U = G g Gᵀ one per output channel and tap (from the weights), the
input x one per tensor.  Three ways to pick a scale from samples of |v|:

- "max": the largest |v| seen (nothing clips on the calibration data);
- "percentile": the given percentile of |v| (clips rare outliers, finer steps for the rest);
- "mse": the clip value, among 64 fractions of the max, that minimises the mean squared quantization
  error over the samples;

optionally rounded up to a power of two (`pow2`) for hardware that scales by shifts only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from novagen.errors import InputError
from novagen.precision.formats import INT8_MAX

METHODS = ("max", "percentile", "mse")


def _to_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().double().numpy() if hasattr(x, "detach") else np.asarray(x, dtype=np.float64)


def _pick(samples: np.ndarray, method: str, percentile: float, top: float) -> float:
    """The clip value of one set of |v| samples."""
    if samples.size == 0:
        return 0.0
    amax = float(samples.max())
    if method == "max" or amax == 0:
        return amax
    if method == "percentile":
        return float(np.percentile(samples, percentile))
    best, best_err = amax, np.inf
    for frac in np.linspace(1 / 64, 1, 64):
        clip = amax * frac
        s = clip / top
        q = np.clip(np.rint(samples / s), -top, top) * s
        err = float(np.mean((q - samples) ** 2))
        if err < best_err:
            best, best_err = clip, err
    return best


def scale_of(clip: float, top: float = INT8_MAX, pow2: bool = False) -> float:
    """The scale that maps `clip` to the format's largest value (rounded up to a power of two with pow2)."""
    s = clip / top if clip > 0 else 1.0
    return float(2.0 ** np.ceil(np.log2(s))) if pow2 else s


class TapStatistics:
    """Samples of |v| per Winograd tap over calibration batches (at most `keep` per tap, chosen by a seeded
    generator, so a calibration is deterministic given its data and seed)."""

    def __init__(self, taps: Sequence[int], keep: int = 200_000, seed: int = 0) -> None:
        self.taps = tuple(taps)
        self.keep = keep
        self.rng = np.random.default_rng(seed)
        self.samples: list[np.ndarray] = []
        self.amax = np.zeros(self.taps)

    def add(self, v: Any) -> None:
        """Values (..., *taps)."""
        a = np.abs(_to_numpy(v)).reshape(-1, int(np.prod(self.taps)))
        self.amax = np.maximum(self.amax, a.max(axis=0).reshape(self.taps))
        if a.shape[0] > self.keep:
            a = a[self.rng.choice(a.shape[0], self.keep, replace=False)]
        self.samples.append(a)

    def scales(self, method: str = "max", percentile: float = 99.99, pow2: bool = False,
               top: float = INT8_MAX) -> np.ndarray:
        """One scale per tap."""
        if method not in METHODS:
            raise InputError(f"calibration method '{method}' is not one of {', '.join(METHODS)}")
        if not self.samples:
            raise InputError("no calibration data was seen")
        a = np.concatenate(self.samples)
        if a.shape[0] > self.keep:
            a = a[self.rng.choice(a.shape[0], self.keep, replace=False)]
        flat = [self.amax.reshape(-1)[t] if method == "max" else _pick(a[:, t], method, percentile, top)
                for t in range(a.shape[1])]
        return np.array([scale_of(c, top, pow2) for c in flat]).reshape(self.taps)


def tensor_scale(x: Any, method: str = "max", percentile: float = 99.99, pow2: bool = False,
                 top: float = INT8_MAX, keep: int = 200_000, seed: int = 0) -> float:
    """One scale for a whole tensor (the input x)."""
    a = np.abs(_to_numpy(x)).reshape(-1)
    if a.size > keep:
        a = a[np.random.default_rng(seed).choice(a.size, keep, replace=False)]
    return scale_of(float(a.max()) if method == "max" else _pick(a, method, percentile, top), top, pow2)


def channel_tap_scales(u: Any, pow2: bool = False, top: float = INT8_MAX) -> np.ndarray:
    """Scales of transformed weights U (K, C, *taps): per output channel and tap, from their max over C;
    shape (K, 1, *taps)."""
    a = np.abs(_to_numpy(u)).max(axis=1, keepdims=True)
    s = np.where(a > 0, a / top, 1.0)
    return 2.0 ** np.ceil(np.log2(s)) if pow2 else s
