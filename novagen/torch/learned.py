"""Winograd-aware fine-tuning: a convolution whose interpolation points and power-of-two balancing are
parameters, so that training can adapt the algorithm to a low-precision datapath while it stays an exact
Winograd algorithm by construction.

Each step rebuilds AT, G and BT from the points by Cook–Toom in floating point (differentiably: the same
construction as `novagen.algebra.cook_toom`), scales the rows of G and BT by 2^b and 2^c and the columns of
AT by 2^−(b+c) (the same function for any b, c), and computes the layer with the precision's rounding as a
straight-through estimator.  `learned_algorithm` then snaps the points to rationals (scored on a loss the
caller gives), rounds b and c to integers, builds the exact algorithm and proves it with `novagen.verify`.

This module is the training surrogate (fp32 transforms, rounding only where the policy stores); the
accuracy reported for a learned algorithm comes from the exact emulator (`novagen.torch.emulated`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from novagen.algebra import Algorithm, build
from novagen.balancing import scale_taps, tap_exponents
from novagen.errors import InputError
from novagen.points import INF

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int8-tap")


def poly_from_roots(roots: torch.Tensor) -> torch.Tensor:
    """Coefficients (ascending powers) of Π (x − q) over the roots, differentiable in the roots."""
    c = torch.ones(1, dtype=roots.dtype, device=roots.device)
    for q in roots:
        c = torch.cat([-q * c[:1], c[:-1] - q * c[1:], c[-1:]]) if c.numel() > 1 else torch.stack([-q * c[0], c[0]])
    return c


def cook_toom(points: torch.Tensor, m: int, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AT (m×α), G (α×r), BT (α×α) of F(m, r) from α−1 finite points and the point at infinity, as
    `novagen.algebra.cook_toom` builds them (same normalisation), differentiable in the points."""
    alpha = m + r - 1
    n = points.numel()
    if n != alpha - 1:
        raise InputError(f"F({m},{r}) takes {alpha - 1} finite points (and infinity), got {n}")
    p = points
    rows_bt, rows_g, cols_at = [], [], []
    f0 = None
    for j in range(n):
        rest = torch.cat([p[:j], p[j + 1:]])
        fj = torch.prod(p[j] - rest)
        sign = 1.0
        if j == 0:
            f0 = fj
            sign = -1.0 if float(fj.detach()) < 0 else 1.0
        coeffs = poly_from_roots(rest) * sign
        rows_bt.append(F.pad(coeffs, (0, alpha - coeffs.numel())))
        rows_g.append(torch.stack([p[j] ** k for k in range(r)]) / (sign * fj))
        cols_at.append(torch.stack([p[j] ** i for i in range(m)]))
    assert f0 is not None
    inf_bt = F.pad(poly_from_roots(p), (0, alpha - n - 1))
    eye_g = torch.zeros(r, dtype=p.dtype, device=p.device)
    eye_g[r - 1] = 1.0
    eye_at = torch.zeros(m, dtype=p.dtype, device=p.device)
    eye_at[m - 1] = 1.0
    AT = torch.stack(cols_at + [eye_at], dim=1)
    G = torch.stack(rows_g + [eye_g])
    BT = torch.stack(rows_bt + [inf_bt])
    return AT, G, BT


def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """q in the forward pass, the identity's gradient in the backward pass."""
    return x + (q - x).detach()


def quantize(x: torch.Tensor, precision: str, taps: int = 2, scale: torch.Tensor | None = None,
             keep: tuple[int, ...] = ()) -> torch.Tensor:
    """x rounded as `precision` stores it, straight through: fp16/bf16 casts; int8 with one symmetric scale
    (per tensor, or per Winograd tap for int8-tap, the last `taps` axes, and per axis in `keep`), amax of
    this x unless a calibrated `scale` is given; clipped values pass no gradient."""
    if precision == "fp32":
        return x
    if precision in ("fp16", "bf16"):
        return _ste(x, x.to(torch.float16 if precision == "fp16" else torch.bfloat16).to(x.dtype))
    if scale is None:
        dims = [d for d in range(x.ndim) if not (precision == "int8-tap" and d >= x.ndim - taps) and d not in keep]
        amax = x.detach().abs().amax(dim=dims, keepdim=True) if dims else x.detach().abs()
        scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    xc = torch.clamp(x, -127.0 * scale, 127.0 * scale)
    return _ste(xc, torch.round(xc / scale) * scale)


class LearnedPoints(nn.Module):
    """The learnable part of an algorithm F(m, r): its α−1 finite points (the point at infinity stays) and the
    power-of-two balancing of G's and BT's rows (log2 scales, rounded when the algorithm is built).  Layers
    may share one (one learned algorithm per network) or hold their own."""

    def __init__(self, alg: Algorithm, learn: Sequence[str] = ("points", "scales")) -> None:
        super().__init__()
        bad = set(learn) - {"points", "scales"}
        if bad:
            raise InputError(f"learn {sorted(bad)}: use points, scales")
        pts = alg.points
        if pts is None or INF not in pts or len(pts) != alg.alpha:
            raise InputError(f"{alg.label}: learning starts from an algorithm of α − 1 finite points and infinity")
        self.m, self.r, self.alpha, self.source = alg.m, alg.r, alg.alpha, alg
        finite = torch.tensor([float(p) for p in pts if p is not INF], dtype=torch.float64)
        self.points = nn.Parameter(finite, requires_grad="points" in learn)
        g, b = tap_exponents(alg) or ([0] * self.alpha, [0] * self.alpha)  # a balanced start keeps its balancing
        self.log2_g = nn.Parameter(torch.tensor(g, dtype=torch.float64), requires_grad="scales" in learn)
        self.log2_b = nn.Parameter(torch.tensor(b, dtype=torch.float64), requires_grad="scales" in learn)

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """AT, G, BT from the current points and balancing (float64)."""
        AT, G, BT = cook_toom(self.points, self.m, self.r)
        g, b = 2.0 ** self.log2_g, 2.0 ** self.log2_b
        return AT / (g * b)[None, :], G * g[:, None], BT * b[:, None]

    def extra_repr(self) -> str:
        return f"F({self.m},{self.r}) from {self.source.label}, points={[round(float(p), 4) for p in self.points]}"


class FreeMatrices(nn.Module):
    """AT, G and BT themselves as parameters, started from an algorithm's matrices: training that learns the
    transforms freely (WinoTrain, 2021; the PSO-derived transforms refined in training of ECCV 2024).  Kept
    only as the comparison for learned points: after one step the matrices are floats that no longer compute
    a convolution exactly, and there are no points to snap and prove."""

    def __init__(self, alg: Algorithm) -> None:
        super().__init__()
        self.m, self.r, self.alpha, self.source = alg.m, alg.r, alg.alpha, alg
        AT, G, BT = (torch.tensor([[float(v) for v in row] for row in mat], dtype=torch.float64)
                     for mat in (alg.AT, alg.G, alg.BT))
        self.AT, self.G, self.BT = nn.Parameter(AT), nn.Parameter(G), nn.Parameter(BT)

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.AT, self.G, self.BT

    def extra_repr(self) -> str:
        return f"F({self.m},{self.r}) from {self.source.label}, free matrices (unverified)"


def learnable(alg: Algorithm, learn: Sequence[str]) -> LearnedPoints | FreeMatrices:
    """What training learns of `alg`: its points and/or balancing ("points", "scales"), or, for the
    unverified comparison only, its matrices ("matrices", alone)."""
    if "matrices" in learn:
        if set(learn) != {"matrices"}:
            raise InputError(f"learn {sorted(set(learn))}: 'matrices' (free, unverified) goes alone; exact "
                             "algorithms learn points and/or scales")
        return FreeMatrices(alg)
    return LearnedPoints(alg, learn)


class LearnedWinogradConv2d(nn.Module):
    """A 3×3 (r×r) stride-1 convolution computed by F(m, r) nested on both axes from `LearnedPoints` (its
    own, made from `alg`, or shared; or `FreeMatrices`), rounding as `precision` stores (V and U; int8
    accumulates exactly)."""

    def __init__(self, conv: nn.Conv2d, alg: Algorithm | LearnedPoints | FreeMatrices, precision: str = "int8-tap",
                 learn: Sequence[str] = ("points", "scales")) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise InputError(f"precision '{precision}' is not one of {', '.join(PRECISIONS)}")
        self.algo = alg if isinstance(alg, (LearnedPoints, FreeMatrices)) else learnable(alg, learn)
        r = self.algo.r
        if tuple(conv.kernel_size) != (r, r) or tuple(conv.stride) != (1, 1) or conv.groups != 1:
            raise InputError(f"{self.algo.source.label} needs a {r}x{r} stride-1 convolution, groups 1")
        self.m, self.r, self.alpha = self.algo.m, r, self.algo.alpha
        self.precision = precision
        self.weight = nn.Parameter(conv.weight.detach().clone())
        self.bias = nn.Parameter(conv.bias.detach().clone()) if conv.bias is not None else None
        pad = conv.padding if not isinstance(conv.padding, str) else ((r - 1) // 2,) * 2
        self.padding = (int(pad[0]), int(pad[1]))

    @property
    def points(self) -> nn.Parameter:
        return self.algo.points

    @property
    def log2_g(self) -> nn.Parameter:
        return self.algo.log2_g

    @property
    def log2_b(self) -> nn.Parameter:
        return self.algo.log2_b

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.algo.matrices()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        AT, G, BT = (t.to(x.dtype) for t in self.matrices())
        m, a = self.m, self.alpha
        ph, pw = self.padding
        n, c = x.shape[:2]
        k = self.weight.shape[0]
        oh, ow = x.shape[2] + 2 * ph - self.r + 1, x.shape[3] + 2 * pw - self.r + 1
        th, tw = -(-oh // m), -(-ow // m)
        xp = F.pad(x, (pw, pw + tw * m + self.r - 1 - (x.shape[3] + 2 * pw),
                       ph, ph + th * m + self.r - 1 - (x.shape[2] + 2 * ph)))
        d = xp.unfold(2, a, m).unfold(3, a, m)                                  # (N, C, TH, TW, α, α)
        V = quantize(BT @ d @ BT.T, self.precision)
        U = quantize(G @ self.weight @ G.T, self.precision, keep=(0,))        # (K, C, α, α)
        Vb = V.permute(4, 5, 0, 2, 3, 1).reshape(a * a, n * th * tw, c)       # per tap: tiles × channels
        Ub = U.permute(2, 3, 1, 0).reshape(a * a, c, k)                         # per tap: channels × filters
        M = torch.bmm(Vb, Ub).reshape(a, a, n, th, tw, k).permute(2, 5, 3, 4, 0, 1)
        Y = AT @ M @ AT.T                                                       # (N, K, TH, TW, m, m)
        y = Y.permute(0, 1, 2, 4, 3, 5).reshape(n, k, th * m, tw * m)[:, :, :oh, :ow]
        return y if self.bias is None else y + self.bias[None, :, None, None]

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, precision={self.precision}"


def neighbours(f: Fraction, max_denominator: int) -> tuple[Fraction, Fraction]:
    """The rationals of denominator ≤ max_denominator just below and just above f (its Farey neighbours)."""
    below = max((Fraction(math.ceil(f * q) - 1, q) for q in range(1, max_denominator + 1)), default=f - 1)
    above = min((Fraction(math.floor(f * q) + 1, q) for q in range(1, max_denominator + 1)), default=f + 1)
    return below, above


def snap(values: Sequence[float], max_denominator: int) -> list[Fraction]:
    """Each value as the nearest rational of denominator ≤ max_denominator, kept distinct (a collision moves
    to the nearer free lattice neighbour)."""
    out: list[Fraction] = []
    for v in values:
        f = Fraction(v).limit_denominator(max_denominator)
        while f in out:
            lo, hi = neighbours(f, max_denominator)
            f = lo if abs(Fraction(v) - lo) <= abs(Fraction(v) - hi) and lo not in out else hi
        out.append(f)
    return out


def learned_algorithm(module: LearnedWinogradConv2d | LearnedPoints, max_denominator: int = 16,
                      loss: Callable[[Algorithm], float] | None = None, label: str | None = None) -> Algorithm:
    """The module's points snapped to rationals (denominators ≤ max_denominator; with `loss`, each point is
    then moved to a Farey neighbour while that lowers the loss), balanced by the rounded powers of two,
    built exactly and proven by `novagen.verify` (VerificationFailed if not)."""
    from novagen import verify

    module = module.algo if isinstance(module, LearnedWinogradConv2d) else module
    pts = snap([float(p) for p in module.points.detach()], max_denominator)
    name = label or f"F({module.m},{module.r})/learned"

    def make(points: list[Fraction]) -> Algorithm:
        alg = build(f"F({module.m},{module.r})", [*points, INF])
        return Algorithm(alg.m, alg.r, alg.AT, alg.G, alg.BT, alg.points, name)

    alg = make(pts)
    if loss is not None:
        best = loss(alg)
        seen = {tuple(pts): best}  # a later sweep revisits point sets: each is scored once
        improved = True
        while improved:
            improved = False
            for i in range(len(pts)):
                for nb in neighbours(pts[i], max_denominator):
                    trial = list(pts)
                    trial[i] = nb
                    if len(set(trial)) < len(trial) or tuple(trial) in seen:
                        continue
                    cand = make(trial)
                    value = seen[tuple(trial)] = loss(cand)
                    if value < best:
                        best, pts, alg, improved = value, trial, cand, True
    g, b = learned_balancing(module)
    if any(g) or any(b):  # the learned power-of-two balancing, exactly: the same function
        alg = scale_taps(alg, g, b)
    verify(alg)
    return alg


def learned_balancing(module: LearnedPoints) -> tuple[list[int], list[int]]:
    """The power-of-two exponents of G's and BT's rows that `learned_algorithm` applies (rounded)."""
    return ([round(float(v)) for v in module.log2_g.detach()], [round(float(v)) for v in module.log2_b.detach()])
