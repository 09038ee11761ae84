import json

import numpy as np
import pytest
import torch
from torch import nn

from novagen import algorithm
from novagen.accuracy import layer_data
from novagen.cli import run
from novagen.errors import InputError
from novagen.networks import (
    digits_accuracy,
    digits_cnn,
    digits_data,
    fp32_accuracy,
    network_error,
    seeded_network,
)
from novagen.precision import policy, winograd_emulate
from novagen.torch import DirectConv2d, WinogradConv2d, replace_conv2d


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.strided = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.point = nn.Conv2d(8, 8, 1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.dilated = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.b = nn.Conv2d(8, 4, 3, padding=1, bias=False)

    def forward(self, x):
        x = torch.relu(self.a(x))
        x = torch.relu(self.strided(x))
        x = torch.relu(self.point(x))
        x = torch.relu(self.grouped(x))
        x = torch.relu(self.dilated(x))
        return self.b(x)


def test_replace_conv2d_swaps_only_eligible_layers_and_matches_fp32():
    torch.manual_seed(0)
    model = Mixed().eval()
    x = torch.randn(2, 3, 20, 18)
    for name in ("F(4,3)/nova", "F(6,3)/classic"):
        new = replace_conv2d(model, name, "fp32")
        rep = new.novagen_replacement
        assert rep.replaced == ["a", "b"]
        assert [n for n, _ in rep.skipped] == ["strided", "point", "grouped", "dilated"]
        assert "stride" in dict(rep.skipped)["strided"] and "groups=2" in dict(rep.skipped)["grouped"]
        for n in ("strided", "point", "grouped", "dilated"):
            assert type(getattr(new, n)) is nn.Conv2d and getattr(new, n) is not getattr(model, n)
            assert torch.equal(getattr(new, n).weight, getattr(model, n).weight)
        assert isinstance(new.a, WinogradConv2d) and isinstance(model.a, nn.Conv2d)  # original untouched
        with torch.no_grad():
            assert (new(x) - model(x)).abs().max().item() < 1e-4
    direct = replace_conv2d(model, "F(4,3)/nova", "fp16", others="direct")
    assert all(isinstance(getattr(direct, n), DirectConv2d) for n in ("strided", "point", "grouped", "dilated"))


def test_torch_module_equals_numpy_lab_for_float_policies():
    x, w = layer_data((1, 6, 14, 14, 5), seed=4)
    for name, prec in (("F(6,3)/classic", "fp16"), ("F(4,3)/nova", "fp16-pure"), ("F(8,3)/integer", "fp16"),
                       ("F(6,3)/nova", "bf16")):
        alg = algorithm(name)
        ref, counts = winograd_emulate(x, w, (alg, alg), policy(prec), "same")
        mod = WinogradConv2d(6, 5, name, prec, padding=1, bias=False)
        with torch.no_grad():
            mod.weight.copy_(torch.from_numpy(w))
            got = mod(torch.from_numpy(x).float()).double().numpy()
        assert np.array_equal(np.isfinite(got), np.isfinite(ref))
        assert np.array_equal(got[np.isfinite(got)], ref[np.isfinite(ref)])
        assert mod.overflows == counts


def test_module_errors():
    with pytest.raises(InputError, match="stride"):
        WinogradConv2d.from_conv(nn.Conv2d(2, 2, 3, stride=2), "F(4,3)/nova")
    with pytest.raises(InputError, match="direct"):
        WinogradConv2d(2, 2, "direct")
    with pytest.raises(InputError, match="others"):
        replace_conv2d(nn.Sequential(), "F(4,3)/nova", others="all")


def test_network_study_is_deterministic_and_fp32_agrees():
    kw = dict(inputs=8, size=32, width=0.125, seed=1)
    net = seeded_network("resnet18", seed=1, width=0.125, size=32)
    a = network_error(net, "F(4,3)/nova", "fp32", **kw)
    assert a.extra["top1_agreement"] == 1.0
    assert a.rel_l2 < 1e-4 and a.overflow_count == 0
    b = network_error("vgg16", "F(6,3)/nova", "fp16", **kw)
    c = network_error("vgg16", "F(6,3)/nova", "fp16", **kw)
    assert b == c
    with pytest.raises(InputError, match="alexnet"):
        seeded_network("alexnet")


@pytest.mark.slow
def test_vgg16_fp16_integer_sets_collapse_nova_does_not_overflow():
    kw = dict(inputs=64, size=32, width=0.25, seed=0)
    net = seeded_network("vgg16", seed=0, width=0.25, size=32)
    direct = network_error(net, "direct", "fp16", **kw)
    assert direct.extra["top1_agreement"] > 0.95
    assert network_error(net, "F(6,3)/integer", "fp16", **kw).overflow_count > 0
    integer8 = network_error(net, "F(8,3)/integer", "fp16", **kw)
    assert integer8.overflow_count > 0 and integer8.extra["top1_agreement"] < 0.2
    nova6 = network_error(net, "F(6,3)/nova", "fp16", **kw)
    assert nova6.overflow_count == 0 and nova6.extra["top1_agreement"] > 0.7
    assert network_error(net, "F(8,3)/nova", "fp16", **kw).overflow_count == 0


@pytest.mark.slow
def test_digits_cnn_trains_and_keeps_accuracy_with_nova():
    data = digits_data(seed=0)
    model = digits_cnn(data, seed=0)
    base = fp32_accuracy(model, data)
    assert base > 0.9
    assert digits_accuracy(model, data, "direct", "fp32").extra["accuracy"] == pytest.approx(base, abs=0.01)
    nova = digits_accuracy(model, data, "F(6,3)/nova", "fp16").extra["accuracy"]
    integer = digits_accuracy(model, data, "F(8,3)/integer", "fp16")
    assert nova > base - 0.03
    assert integer.overflow_count > 0 and integer.extra["accuracy"] < 0.5


@pytest.mark.slow
def test_cli_network_json(capsys):
    code = run(["accuracy", "F(4,3)/nova", "--network", "vgg16", "-P", "fp16", "--inputs", "8", "--width", "0.125",
                "--json"])
    out, _ = capsys.readouterr()
    rows = json.loads(out)["rows"]
    assert code == 0 and len(rows) == 2 and all("top1_agreement" in r for r in rows)
