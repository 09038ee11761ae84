"""The generated C kernel as a PyTorch operator: drop-in correctness on the shapes users have, torch.compile
and torch.export through the custom operator, auto's choice behind the correctness gate, state dicts."""

from fractions import Fraction

import pytest

torch = pytest.importorskip("torch")

import novagen  # noqa: E402
import novagen.torch as ntorch  # noqa: E402
from novagen.algebra import Algorithm  # noqa: E402
from novagen.errors import InputError  # noqa: E402
from novagen.torch.fast import TORCH, KernelConv2d  # noqa: E402

torch.set_num_threads(2)


def _rel(a: "torch.Tensor", b: "torch.Tensor") -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("n,c,h,w,k,padding,bias,channels_last", [
    (1, 3, 19, 17, 8, 1, True, False),
    (2, 16, 13, 11, 24, 0, False, False),
    (3, 8, 9, 30, 70, 1, True, True),
    (1, 64, 28, 28, 64, 1, False, True),
    (2, 5, 4, 4, 3, 0, True, False),
])
@pytest.mark.parametrize("name", ["F(2,3)/classic", "F(4,3)/nova", "F(6,3)/best"])
def test_operator_matches_torch_conv2d(name, n, c, h, w, k, padding, bias, channels_last):
    torch.manual_seed(n * 1000 + c)
    conv = torch.nn.Conv2d(c, k, 3, padding=padding, bias=bias).eval()
    x = torch.randn(n, c, h, w)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    mod = KernelConv2d(conv, [novagen.algorithm(name)])
    with torch.no_grad():
        y, ref = mod(x), conv(x)
    assert y.shape == ref.shape and y.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert _rel(y, ref) < 1e-4


@pytest.mark.parametrize("k,c", [(8, 3), (40, 24), (64, 64)])
def test_operators_pass_torch_opcheck(k, c):
    """Schema, fake (meta) shapes and autograd registration agree with the real kernels: what torch.compile
    and torch.export rely on."""
    from novagen.torch.fast import register, winograd_conv2d, winograd_weights

    name = register(novagen.algorithm("F(4,3)/nova"))
    w = torch.randn(k, c, 3, 3)
    torch.library.opcheck(winograd_weights, (w, name))
    u = winograd_weights(w, name)
    x = torch.randn(2, c, 11, 9)
    torch.library.opcheck(winograd_conv2d, (x, u, torch.randn(k), name, [1, 1], k))
    torch.library.opcheck(winograd_conv2d, (x.contiguous(memory_format=torch.channels_last), u, None, name, [0, 0], k))


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = torch.nn.Conv2d(16, 32, 3, padding=1, bias=False)
        self.down = torch.nn.Conv2d(32, 32, 3, stride=2, padding=1)
        self.c3 = torch.nn.Conv2d(32, 32, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        return self.c3(torch.relu(self.down(x)))


def test_replace_compile_export_and_state_dict():
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(2, 3, 21, 15)
    fast, report = ntorch.replace_conv2d(model, "F(4,3)/nova", backend="c", return_report=True)
    assert report.replaced == ["c1", "c2", "c3"] and [n for n, _ in report.skipped] == ["down"]
    with torch.no_grad():
        ref = model(x)
        assert _rel(fast(x), ref) < 1e-4
        assert _rel(torch.compile(fast)(x), ref) < 1e-4
    ep = torch.export.export(ntorch.replace_conv2d(model, "F(4,3)/nova", backend="c"), (x,))
    assert sum("novagen.winograd_conv2d" in str(node.target) for node in ep.graph.nodes) == 3
    with torch.no_grad():
        assert _rel(ep.module()(x), ref) < 1e-4
    # the state dict has the original keys; loading new weights is seen on the next call
    assert set(fast.state_dict()) == set(model.state_dict())
    other = Net().eval()
    fast.load_state_dict(other.state_dict())
    with torch.no_grad():
        assert _rel(fast(x), other(x)) < 1e-4


def test_auto_chooses_per_shape_and_never_a_wrong_kernel(tmp_path, monkeypatch):
    monkeypatch.setenv("NOVAGEN_CACHE_DIR", str(tmp_path / "cache"))
    good = novagen.algorithm("F(2,3)/classic")
    AT = [list(row) for row in good.AT]
    AT[0][0] += Fraction(1, 2)  # a wrong algorithm: compiles and runs, off by O(1)
    wrong = Algorithm(good.m, good.r, tuple(map(tuple, AT)), good.G, good.BT, None, "F(2,3)/wrong")
    conv = torch.nn.Conv2d(32, 32, 3, padding=1).eval()
    mod = KernelConv2d(conv, [wrong, novagen.algorithm("F(4,3)/best")])
    x = torch.randn(1, 32, 20, 20)
    with torch.no_grad():
        choice = mod.decide(x)
    decision = mod.decisions[0]
    assert choice != wrong.content_hash and "F(2,3)/wrong" in decision["failed"]
    assert set(decision["times_ms"]) == {"F(2,3)/wrong", "F(4,3)/best", TORCH}
    assert decision["errors"]["F(4,3)/best"] < 1e-5 and decision["errors"]["F(2,3)/wrong"] > 0.01
    assert decision["why"].endswith("(cold weights)")  # timed as inside a model: weights evicted each run
    resident = mod.resident()
    assert resident[0] is mod.weight and len(resident) >= 4  # weight, bias, both U, a workspace
    with torch.no_grad():
        assert _rel(mod(x), conv(x)) < 1e-4
        mod(torch.randn(2, 32, 20, 20))  # another shape: decided again
    assert len(mod.decisions) == 2
    # the disk cache answers the same question without measuring
    again = KernelConv2d(conv, [wrong, novagen.algorithm("F(4,3)/best")])
    with torch.no_grad():
        again.decide(x)
    assert again.decisions[0]["cached"] and again.decisions[0]["choice"] == decision["choice"]


def test_replace_auto_with_example_inputs_reports_choices(tmp_path, monkeypatch):
    monkeypatch.setenv("NOVAGEN_CACHE_DIR", str(tmp_path / "cache"))
    model = Net().eval()
    x = torch.randn(1, 3, 24, 24)
    fast, report = ntorch.replace_conv2d(model, "auto", backend="c", example_inputs=(x,), return_report=True)
    rows = report.choices()
    assert [r["layer"] for r in rows] == ["c1", "c2", "c3"]
    assert all(r["label"] in ("torch", "F(2,3)/best", "F(4,3)/best", "F(6,3)/best") and r["why"] for r in rows)
    with torch.no_grad():
        assert _rel(fast(x), model(x)) < 1e-4


def test_bad_input():
    model = Net().eval()
    with pytest.raises(InputError, match="backend 'gpu'"):
        ntorch.replace_conv2d(model, "auto", backend="gpu")
    with pytest.raises(InputError, match="computes in fp32"):
        ntorch.replace_conv2d(model, "F(4,3)/nova", "fp16", backend="c")
    with pytest.raises(InputError, match="1D algorithm"):
        ntorch.replace_conv2d(model, "direct", backend="c")
    with pytest.raises(InputError, match="needs a 5x5 kernel"):
        KernelConv2d(torch.nn.Conv2d(4, 4, 3), [novagen.algorithm("F(2,5)")])
