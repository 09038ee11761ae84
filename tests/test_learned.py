"""Winograd-aware fine-tuning: Cook–Toom rebuilt differentiably from the points equals the exact
construction, gradients reach the points (finite differences), balancing keeps the function, and a learned,
snapped algorithm is verified exact."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import novagen  # noqa: E402
from novagen.torch.learned import (  # noqa: E402
    LearnedPoints,
    LearnedWinogradConv2d,
    cook_toom,
    learned_algorithm,
    quantize,
)


@pytest.mark.parametrize("name", ["F(2,3)/classic", "F(4,3)/nova", "F(6,3)/best", "F(8,3)/best"])
def test_float_cook_toom_matches_the_exact_one(name):
    cat = novagen.algorithm(name)
    # the raw construction (catalog entries may be balanced)
    alg = novagen.algebra.build(f"F({cat.m},{cat.r})", cat.points)
    pts = torch.tensor([float(p) for p in alg.finite_points], dtype=torch.float64)
    AT, G, BT = cook_toom(pts, alg.m, alg.r)
    for got, want in zip((AT, G, BT), alg.matrices("float64")):
        assert np.allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)


def test_gradients_reach_the_points_and_match_finite_differences():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).double()
    mod = LearnedWinogradConv2d(conv.double(), novagen.algorithm("F(4,3)/nova"), "fp32").double()
    x = torch.randn(1, 3, 7, 6, dtype=torch.float64)
    probe = torch.randn(1, 4, 7, 6, dtype=torch.float64)

    def f(points):
        with torch.no_grad():
            mod.points.copy_(points)
        return (mod(x) * probe).sum()

    p0 = mod.points.detach().clone()
    mod.zero_grad()
    (mod(x) * probe).sum().backward()
    grad = mod.points.grad.clone()
    assert grad.abs().max() > 0
    eps = 1e-6
    for i in range(p0.numel()):
        e = torch.zeros_like(p0)
        e[i] = eps
        fd = (f(p0 + e) - f(p0 - e)) / (2 * eps)
        assert float(fd.detach()) == pytest.approx(float(grad[i]), rel=1e-4, abs=1e-7)


def test_any_points_and_balancing_compute_the_same_convolution_in_fp32():
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(5, 6, 3, padding=1)
    mod = LearnedWinogradConv2d(conv, novagen.algorithm("F(6,3)/best"), "fp32")
    x = torch.randn(2, 5, 13, 11)
    with torch.no_grad():
        mod.points.add_(torch.randn_like(mod.points) * 0.05)
        mod.log2_g.copy_(torch.randn_like(mod.log2_g))
        mod.log2_b.copy_(torch.randn_like(mod.log2_b))
        y, ref = mod(x), conv(x)
    assert float((y - ref).abs().max() / ref.abs().max()) < 1e-4


def test_int8_tap_quantization_is_straight_through_and_clips():
    x = torch.tensor([[0.5, -2.0], [1.0, 0.25]], requires_grad=True)
    q = quantize(x, "int8", scale=torch.tensor(1.0 / 127))
    assert torch.allclose(q.detach(), torch.tensor([[64 / 127, -1.0], [1.0, 32 / 127]]))
    q.sum().backward()
    assert torch.equal(x.grad, torch.tensor([[1.0, 0.0], [1.0, 1.0]]))  # the clipped value passes no gradient


@pytest.mark.parametrize("name", ["F(4,3)/best", "F(8,3)/best", "F(6,3)/nova"])
def test_learning_starts_from_the_algorithm_itself_balancing_included(name):
    """Before any step the parameters build the starting algorithm exactly: a balanced entry keeps its
    power-of-two row scales (learning them from zero dropped them, and with them F(8,3)/best's fp16 range)."""
    start = novagen.algorithm(name)
    lp = LearnedPoints(start)
    for got, want in zip(lp.matrices(), start.matrices("float64")):
        assert np.allclose(got.detach().numpy(), want, rtol=1e-12, atol=1e-12)
    alg = learned_algorithm(lp, max_denominator=16)
    assert (alg.AT, alg.G, alg.BT) == (start.AT, start.G, start.BT)


def test_learned_algorithm_is_snapped_and_verified():
    conv = torch.nn.Conv2d(2, 2, 3, padding=1)
    mod = LearnedWinogradConv2d(conv, novagen.algorithm("F(4,3)/nova"), "int8-tap")
    with torch.no_grad():
        mod.points.copy_(torch.tensor([0.0, 0.81, -0.86, 1.19, -1.15], dtype=torch.float64))
        mod.algo.log2_g.fill_(0.7)
    alg = learned_algorithm(mod, max_denominator=8, label="F(4,3)/learned-test")
    assert [str(p) for p in alg.finite_points] == ["0", "4/5", "-7/8", "7/6", "-8/7"] or all(
        p.denominator <= 8 for p in alg.finite_points)
    novagen.verify(alg)
    assert alg.label == "F(4,3)/learned-test"
