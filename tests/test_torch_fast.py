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


@pytest.mark.parametrize("n,c,h,w,k,r,padding,bias,relu,channels_last", [
    (1, 3, 224, 224, 64, 3, 1, True, False, False),   # VGG's first layer
    (1, 3, 19, 17, 8, 3, 1, True, True, False),
    (2, 1, 9, 30, 13, 3, 0, False, False, False),      # one channel; 13 filters: a ragged channel block
    (3, 16, 13, 11, 7, 3, 1, True, True, True),       # channels_last in, channels_last out
    (1, 5, 4, 50, 24, 5, 2, True, False, False),      # a 5x5 kernel
    (2, 4, 3, 3, 5, 3, 1, False, False, False),       # smaller than one vector block
])
@pytest.mark.parametrize("stride", [1, 2])
def test_the_direct_kernel_matches_torch_conv2d(n, c, h, w, k, r, padding, bias, relu, channels_last, stride):
    """The direct C kernel (auto's candidate for few input channels) on its own operator: odd sizes, ragged
    column and channel blocks, padding 0 to 2, bias or not, the fused ReLU, batch > 1, channels_last, stride
    1 and 2."""
    from novagen.torch.direct import direct_conv2d

    torch.manual_seed(n * 100 + c)
    x = torch.randn(n, c, h, w)
    wt = torch.randn(k, c, r, r)
    b = torch.randn(k) if bias else None
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = direct_conv2d(x, wt, b, [padding, padding], relu, stride)
    ref = torch.nn.functional.conv2d(x.double(), wt.double(), None if b is None else b.double(), stride=stride,
                                     padding=padding)
    ref = ref.relu() if relu else ref
    assert y.shape == ref.shape and y.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert _rel(y.double(), ref) < 1e-5
    torch.library.opcheck(direct_conv2d, (x, wt, b, [padding, padding], relu, stride))


def test_auto_offers_the_direct_kernel_to_layers_with_few_channels(tmp_path, monkeypatch):
    """auto's candidates: the direct kernel joins the Winograd ones for layers of up to 16 input channels
    (not for wider layers, nor when the user named one algorithm); whichever wins, the layer matches torch,
    also compiled and exported."""
    monkeypatch.setenv("NOVAGEN_CACHE_DIR", str(tmp_path / "cache"))
    from novagen.torch.direct import DIRECT

    torch.manual_seed(0)
    model = Net().eval()
    fast = ntorch.replace_conv2d(model, "auto", backend="c")
    assert DIRECT in fast.c1.candidates and DIRECT in fast.c2.candidates and DIRECT not in fast.c3.candidates
    assert DIRECT not in ntorch.replace_conv2d(model, "F(4,3)/nova", backend="c").c1.candidates
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        assert _rel(fast(x), ref) < 1e-4
        fast.c1.choices[fast.c1.key(x)] = DIRECT  # the direct kernel in a compiled and an exported model
        assert _rel(fast(x), ref) < 1e-4
        assert _rel(torch.compile(fast)(x), ref) < 1e-4
    decision = fast.c1.decisions[0]
    assert DIRECT in decision["times_ms"] and decision["errors"][DIRECT] < 1e-5
    ep = torch.export.export(fast, (x,))
    direct = sum(DIRECT in m.choices.values() for m in (fast.c1, fast.c2, fast.c3))  # c1, and c2 if it won
    assert direct >= 1 and sum("novagen.direct_conv2d" in str(node.target) for node in ep.graph.nodes) == direct
    with torch.no_grad():
        assert _rel(ep.module()(x), ref) < 1e-4


def test_the_direct_kernel_refuses_what_it_cannot_compute():
    from novagen.backends.direct import direct_library

    with pytest.raises(InputError, match="padding \\(3, 3\\) must be from 0 to 2"):
        direct_library(3).shape(1, 3, 8, 8, 4, (3, 3))
    with pytest.raises(InputError, match="gives an empty output"):
        direct_library(3).shape(1, 3, 1, 8, 4, (0, 0))
    with pytest.raises(InputError, match="odd square kernels"):
        direct_library(4)
    with pytest.raises(InputError, match="strides 1 and 2, not 3"):
        direct_library(3, 3)


def test_auto_offers_the_direct_kernel_to_a_resnet_stem(tmp_path, monkeypatch):
    """A ResNet stem (7x7, stride 2, 3 channels, then BatchNorm and ReLU) is no Winograd kernel's; under auto
    the direct kernel competes with torch for it, with the BatchNorm folded and the ReLU in the kernel."""
    monkeypatch.setenv("NOVAGEN_CACHE_DIR", str(tmp_path / "cache"))
    from novagen.torch.direct import DIRECT

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 7, 2, 3, bias=False), torch.nn.BatchNorm2d(16),
                                torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, padding=1)).eval()
    _with_statistics(model, torch.randn(8, 3, 40, 40))
    x = torch.randn(2, 3, 40, 38)
    fast, report = ntorch.replace_conv2d(model, "auto", backend="c", example_inputs=(x,), return_report=True)
    assert report.replaced == ["0", "3"] and fast[0].candidates == {DIRECT: DIRECT} and fast[0].stride == 2
    assert report.fused == [{"conv": "0", "batchnorm": "1", "relu": "2", "maxpool": None}]
    (stem,) = [r for r in report.choices() if r["layer"] == "0"]
    assert set(stem["times_ms"]) == {"torch", DIRECT} and stem["errors"][DIRECT] < 1e-5
    assert "(7, 7)" not in str(report.skipped)
    with torch.no_grad():
        ref = model(x)
        fast[0].choices[fast[0].key(x)] = DIRECT
        assert _rel(fast(x), ref) < 1e-4
    assert ntorch.replace_conv2d(model, "F(4,3)/nova", backend="c", return_report=True)[1].replaced == ["3"]


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


def _wrong() -> Algorithm:
    """A wrong algorithm: compiles and runs, off by O(1)."""
    good = novagen.algorithm("F(2,3)/classic")
    AT = [list(row) for row in good.AT]
    AT[0][0] += Fraction(1, 2)
    return Algorithm(good.m, good.r, tuple(map(tuple, AT)), good.G, good.BT, None, "F(2,3)/wrong")


def test_auto_chooses_per_shape_and_never_a_wrong_kernel(tmp_path, monkeypatch):
    monkeypatch.setenv("NOVAGEN_CACHE_DIR", str(tmp_path / "cache"))
    wrong = _wrong()
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
    labels = ("torch", "direct", "F(2,3)/best", "F(4,3)/best", "F(6,3)/best", "F(7,3)/best")
    assert all(r["label"] in labels and r["why"] for r in rows)
    with torch.no_grad():
        assert _rel(fast(x), model(x)) < 1e-4


class Block(torch.nn.Module):
    """A torchvision ResNet block's wiring: BatchNorms after the convs, one ReLU module called twice."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(c)
        self.conv2 = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(c)
        self.relu = torch.nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


class Wired(torch.nn.Module):
    """VGG's wiring (a ReLU module per conv, in a Sequential), a ResNet block, and a functional ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(inplace=True),
            torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(inplace=True),
            torch.nn.MaxPool2d(2))
        self.block = Block(16)
        self.head = torch.nn.Conv2d(16, 8, 3, padding=0)

    def forward(self, x):
        return torch.nn.functional.relu(self.head(self.block(self.features(x))))


def _with_statistics(model: torch.nn.Module, x: "torch.Tensor") -> torch.nn.Module:
    """`model` as training leaves it: BatchNorm scales and shifts away from 1 and 0, running statistics of
    data (a few training-mode passes, cumulative average)."""
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.normal_(m.bias, 0.0, 0.2)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x + 0.1 * torch.randn_like(x))
    return model.eval()


def test_epilogues_fuse_where_only_the_conv_feeds_them():
    from novagen.torch.epilogue import FusedBatchNorm2d, FusedMaxPool2d, FusedReLU

    torch.manual_seed(0)
    x = torch.randn(2, 3, 22, 18)
    model = _with_statistics(Wired(), x)
    fast, report = ntorch.replace_conv2d(model, "F(4,3)/nova", backend="c", return_report=True)
    assert report.fused == [
        {"conv": "features.0", "batchnorm": None, "relu": "features.1", "maxpool": None},
        {"conv": "features.2", "batchnorm": "features.3", "relu": "features.4", "maxpool": "features.5"},
        # the ReLU module is called twice; the second conv's output goes to an add
        {"conv": "block.conv1", "batchnorm": "block.bn1", "relu": None, "maxpool": None},
        {"conv": "block.conv2", "batchnorm": "block.bn2", "relu": None, "maxpool": None},
    ] and report.not_fused is None  # head: a functional ReLU stays
    assert type(fast.features[1]) is FusedReLU and type(fast.block.relu) is torch.nn.ReLU
    assert type(fast.features[5]) is FusedMaxPool2d and fast.features[2].epilogue.pool == 2
    assert type(fast.block.bn1) is FusedBatchNorm2d and fast.block.conv1.epilogue.bn is fast.block.bn1
    with torch.no_grad():
        ref = model(x)
        assert _rel(fast(x), ref) < 1e-4
        assert _rel(torch.compile(fast)(x), ref) < 1e-4
    ep = torch.export.export(ntorch.replace_conv2d(model, "F(4,3)/nova", backend="c"), (x,))
    targets = [str(node.target) for node in ep.graph.nodes]
    assert sum("novagen.winograd_conv2d" in t for t in targets) == 5
    assert not any("batch_norm" in t for t in targets)
    # the state dict keeps the original keys; another model's weights and statistics are seen at once
    assert list(fast.state_dict()) == list(model.state_dict())
    other = _with_statistics(Wired(), torch.randn_like(x))
    fast.load_state_dict(other.state_dict())
    with torch.no_grad():
        assert _rel(fast(x), other(x)) < 1e-4
        # training mode: batch statistics, and the running ones updated as the original model does
        fast.train()
        other.train()
        assert _rel(fast(x), other(x)) < 1e-4
    for a, b in zip(fast.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6)
    unfused, report = ntorch.replace_conv2d(model, "F(4,3)/nova", backend="c", fuse=False, return_report=True)
    assert report.fused == [] and not any(isinstance(m, (FusedReLU, FusedBatchNorm2d, FusedMaxPool2d))
                                          for m in unfused.modules())


class Pooled(torch.nn.Module):
    """conv → ReLU → pool, three times: the pool the kernel computes, and two it must leave to torch."""

    def __init__(self, second: torch.nn.Module) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(5, 12, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2, 2),
            torch.nn.Conv2d(12, 16, 3, padding=1), torch.nn.ReLU(), second,
            torch.nn.Conv2d(16, 8, 3, padding=0), torch.nn.MaxPool2d(kernel_size=(2, 2)))

    def forward(self, x):
        return self.features(x)


@pytest.mark.parametrize("name", ["F(2,3)/classic", "F(4,3)/nova", "F(6,3)/best", "F(3,3)/best"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_a_2x2_max_pool_after_the_conv_runs_in_the_kernel(name, channels_last):
    from novagen.torch.epilogue import FusedMaxPool2d
    from novagen.torch.pool import KernelMaxPool2d

    torch.manual_seed(0)
    for second, fused in ((torch.nn.MaxPool2d(3, 2, 1), False), (torch.nn.MaxPool2d(2, ceil_mode=True), False),
                          (torch.nn.MaxPool2d(2, 2, dilation=1), True)):
        model = Pooled(second).eval()
        x = torch.randn(2, 5, 37, 30)  # odd sides: the floor drops a row of every pooled output
        x[0, 1, 9, 4] = float("nan")  # a NaN wins its window, as in torch's pool (Winograd spreads it over tiles)
        if channels_last:
            model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        fast, report = ntorch.replace_conv2d(model, name, backend="c", return_report=True)
        assert [row["maxpool"] for row in report.fused] == ["features.2", "features.5" if fused else None, "features.7"]
        assert type(fast.features[5]) is (FusedMaxPool2d if fused else KernelMaxPool2d)  # else novagen's C pool
        assert report.pools == ([] if fused else ["features.5"])
        assert type(fast.features[7]) is FusedMaxPool2d  # no ReLU between: the pool follows the conv itself
        with torch.no_grad():
            got, ref = fast(x), model(x)
        assert got.shape == ref.shape and got.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert ref.isnan().any() and not (ref.isnan() & ~got.isnan()).any()
        finite = ~got.isnan()
        assert finite[1].all() and _rel(got[finite], ref[finite]) < 1e-4


@pytest.mark.parametrize("kernel,stride,padding,ceil", [
    (3, 2, 1, False), (3, 2, 1, True), (2, 2, 0, True), ((3, 2), (2, 1), (1, 0), False), (5, 3, 2, True),
    (1, 1, 0, False)])
@pytest.mark.parametrize("shape", [(1, 64, 112, 112), (2, 5, 17, 30), (3, 1, 5, 7)])
def test_the_c_max_pool_matches_torch(kernel, stride, padding, ceil, shape):
    """novagen's C pool on NCHW batches: torch's output size (floor and ceil mode), values, and a NaN winning
    its window; channels_last inputs and inputs that need a gradient run torch's own pool."""
    from novagen.torch.pool import KernelMaxPool2d

    torch.manual_seed(shape[2])
    pool = torch.nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil)
    ours = KernelMaxPool2d.from_pool(pool)
    x = torch.randn(*shape)
    x[-1, 0, shape[2] // 2, 1] = float("nan")
    assert ours.runs_kernel(x)
    with torch.no_grad():
        got, ref = ours(x), pool(x)
    assert got.shape == ref.shape and torch.equal(got.isnan(), ref.isnan()) and ref.isnan().any()
    assert torch.equal(got.nan_to_num(), ref.nan_to_num())
    xl = x.contiguous(memory_format=torch.channels_last)
    if shape[1] > 1:
        assert not ours.runs_kernel(xl)
    with torch.no_grad():
        assert torch.equal(ours(xl).nan_to_num(), ref.nan_to_num())
    xg = x.nan_to_num().requires_grad_()
    assert not ours.runs_kernel(xg)
    ours(xg).sum().backward()  # torch's pool: autograd as before
    assert xg.grad is not None and xg.grad.sum() == ref.numel()
    empty = torch.empty(0, *shape[1:])
    assert not ours.runs_kernel(empty) and ours(empty).shape == (0, *ref.shape[1:])


def test_a_stem_max_pool_runs_the_c_pool_in_compiled_and_exported_models():
    """A ResNet-style stem (7x7/2 conv, BatchNorm, ReLU, 3x3/2 padded pool) then a 3x3 conv: the conv is
    replaced, the pool (not fusable) runs novagen's operator, also under torch.compile and torch.export."""
    from novagen.torch.pool import KernelMaxPool2d, max_pool2d

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 7, 2, 3), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                                torch.nn.MaxPool2d(3, 2, 1), torch.nn.Conv2d(16, 16, 3, padding=1)).eval()
    x = torch.randn(2, 3, 45, 38)
    fast, report = ntorch.replace_conv2d(model, "F(4,3)/nova", backend="c", return_report=True)
    assert report.replaced == ["4"] and report.pools == ["3"] and type(fast[3]) is KernelMaxPool2d
    with torch.no_grad():
        ref = model(x)
        assert _rel(fast(x), ref) < 1e-4
        assert _rel(torch.compile(fast)(x), ref) < 1e-4
    with torch.no_grad():  # an inference graph; one that needs gradients keeps torch's pool (ours has no backward)
        ep = torch.export.export(fast, (x,))
        assert _rel(ep.module()(x), ref) < 1e-4
    assert sum("novagen.max_pool2d" in str(node.target) for node in ep.graph.nodes) == 1
    trainable = torch.export.export(fast, (x,))
    pools = [str(n.target) for n in trainable.graph.nodes if "max_pool2d" in str(n.target)]
    assert pools == ["aten.max_pool2d.default"]
    torch.library.opcheck(max_pool2d, (torch.randn(2, 3, 9, 8), [3, 3], [2, 2], [1, 1], True))
    kept, report = ntorch.replace_conv2d(model, "F(4,3)/nova", backend="c", pools=False, return_report=True)
    assert report.pools == [] and type(kept[3]) is torch.nn.MaxPool2d
    with pytest.raises(InputError, match="at most half the kernel"):
        max_pool2d(x, [3, 3], [2, 2], [2, 2])


def test_auto_decides_with_the_fused_epilogue(tmp_path, monkeypatch):
    monkeypatch.setenv("NOVAGEN_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    x = torch.randn(1, 3, 20, 20)
    model = _with_statistics(Wired(), x)
    fast, report = ntorch.replace_conv2d(model, "auto", backend="c", example_inputs=(x,), return_report=True)
    assert len(report.fused) == 4 and len(report.choices()) == 5
    assert all(not r["failed"] for r in report.choices())  # the gate's reference has the BatchNorm and ReLU
    with torch.no_grad():
        assert _rel(fast(x), model(x)) < 1e-4


class Branchy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(x)) if x.sum() > 0 else self.conv(x)


def test_a_model_fx_cannot_trace_is_replaced_without_fusion():
    model = Branchy().eval()
    fast, report = ntorch.replace_conv2d(model, "F(2,3)/classic", backend="c", return_report=True)
    assert report.replaced == ["conv"] and report.fused == [] and "torch.fx cannot trace" in report.not_fused
    x = torch.randn(1, 4, 9, 9).abs()
    with torch.no_grad():
        assert _rel(fast(x), model(x)) < 1e-4


def test_auto_times_candidates_inside_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("NOVAGEN_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(1, 3, 24, 24)
    fast, report = ntorch.replace_conv2d(model, "auto", backend="c", example_inputs=(x,), return_report=True)
    rows = report.choices()
    assert [r["layer"] for r in rows] == ["c1", "c2", "c3"]
    for r in rows:  # c1 (3 channels) and c2 (16) are offered the direct kernel too, c3 (32) is not
        assert r["why"].endswith("(in the model)") and not r["cached"] and not r["failed"]
        few = {"direct"} if r["layer"] in ("c1", "c2") else set()
        assert set(r["times_ms"]) == {"torch", "F(2,3)/best", "F(4,3)/best", "F(6,3)/best", "F(7,3)/best"} | few
        assert r["times_ms"][r["label"]] == min(r["times_ms"].values())
    _, again = ntorch.replace_conv2d(model, "auto", backend="c", example_inputs=(x,), return_report=True)
    assert [(r["label"], r["cached"]) for r in again.choices()] == [(r["label"], True) for r in rows]


def test_auto_in_the_model_never_picks_a_wrong_kernel(tmp_path, monkeypatch):
    from novagen.torch.auto import decide_in_model

    monkeypatch.setenv("NOVAGEN_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(1, 3, 24, 24)
    fast = ntorch.replace_conv2d(model, "F(4,3)/best", backend="c")
    wrong = _wrong()
    for name in ("c2", "c3"):
        setattr(fast, name, KernelConv2d(getattr(model, name), [wrong, novagen.algorithm("F(4,3)/best")]))
    assert decide_in_model(fast, (x,), {name: fast.get_submodule(name) for name in ("c1", "c2", "c3")}) == ["c2", "c3"]
    for name in ("c2", "c3"):
        d = getattr(fast, name).decisions[0]
        assert d["failed"] == ["F(2,3)/wrong"] and d["label"] != "F(2,3)/wrong" and d["errors"]["F(2,3)/wrong"] > 0.01
    with torch.no_grad():
        assert _rel(fast(x), model(x)) < 1e-4


class Twice(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.conv(torch.relu(self.conv(x)))


def test_a_layer_called_twice_is_decided_on_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("NOVAGEN_CACHE_DIR", str(tmp_path / "cache"))
    model = Twice().eval()
    x = torch.randn(1, 8, 16, 16)
    fast, report = ntorch.replace_conv2d(model, "auto", backend="c", example_inputs=(x,), return_report=True)
    assert [r["why"].endswith("(cold weights)") for r in report.choices()] == [True]
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


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_cli_whole_model_bench(capsys, tmp_path, monkeypatch, layout):
    """`novagen bench --target c --model resnet18` as a user runs it: torch eager and the auto-replaced model
    timed in the same run, both within 1e-4 of torch, every 3x3 stride-1 conv and the stem given a choice; with
    --layout NHWC both run in channels_last memory."""
    import json

    from novagen.cli import run

    monkeypatch.setenv("NOVAGEN_CACHE_DIR", str(tmp_path))
    code = run(["bench", "--target", "c", "--model", "resnet18", "--repeats", "2", "--layout", layout, "--json"])
    out = capsys.readouterr().out
    assert code == 0
    doc = json.loads(out)
    torch_row, ours = doc["rows"]
    assert doc["layout"] == layout and (torch_row["name"], ours["name"]) == ("torch", "novagen")
    assert ours["passed"] and ours["max_rel_error"] < 1e-4 and torch_row["max_rel_error"] == 0
    assert doc["speedup"] == pytest.approx(torch_row["ms"] / ours["ms"])
    assert len(doc["choices"]) == 14 and all(c["channels_last"] == (layout == "NHWC") for c in doc["choices"])
    stem = [c for c in doc["choices"] if c["layer"] == "conv1"]  # 7x7/2 on 3 channels: the direct kernel or torch
    assert len(stem) == 1 and set(stem[0]["times_ms"]) == {"torch", "direct"}
    assert len(doc["fused"]) >= 1
    assert doc["pools"] == ["maxpool"]  # the stem's 3x3/2 pool: novagen's C pool in NCHW, torch's in channels_last
