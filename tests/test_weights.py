"""Weights from the files users have: NumPy, a torch state dict, an ONNX model's initializers."""

import numpy as np
import pytest

from novagen.errors import InputError
from novagen.weights import load_weights, split_source


def test_split_source_keeps_dotted_and_coloned_names():
    assert split_source("m.pt:features.0.weight") == (__import__("pathlib").Path("m.pt"), "features.0.weight")
    assert split_source("dir.v1/w.npz:a:b")[1] == "a:b"
    assert split_source("w.npy")[1] is None


def test_numpy_files(tmp_path):
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3))
    np.save(tmp_path / "w.npy", w.astype(np.float32))
    np.savez(tmp_path / "w.npz", bias=np.zeros(4), conv=w)
    assert np.allclose(load_weights(tmp_path / "w.npy", (4, 3, 3, 3)), w, atol=1e-6)
    assert np.array_equal(load_weights(f"{tmp_path / 'w.npz'}:conv"), w)
    assert np.array_equal(load_weights(tmp_path / "w.npz"), w)  # the only 4-D array
    with pytest.raises(InputError, match="does not exist"):
        load_weights(tmp_path / "none.npy")
    with pytest.raises(InputError, match="use .npy"):
        (tmp_path / "w.txt").write_text("1")
        load_weights(tmp_path / "w.txt")


def test_torch_state_dict_and_onnx_initializer(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
    torch.save(net.state_dict(), tmp_path / "net.pt")
    w1 = net[2].weight.detach().double().numpy()
    assert np.array_equal(load_weights(f"{tmp_path / 'net.pt'}:2.weight", (4, 8, 3, 3)), w1)
    with pytest.raises(InputError, match="2 4-D tensors"):
        load_weights(tmp_path / "net.pt")
    with pytest.raises(InputError, match="needs \\(4, 3, 3, 3\\)"):
        load_weights(f"{tmp_path / 'net.pt'}:2.weight", (4, 3, 3, 3))
    torch.onnx.export(net, (torch.randn(1, 3, 8, 8),), str(tmp_path / "net.onnx"), dynamo=False)
    import onnx

    names = [i.name for i in onnx.load(str(tmp_path / "net.onnx")).graph.initializer if "weight" in i.name]
    got = load_weights(f"{tmp_path / 'net.onnx'}:{names[-1]}")
    assert got.shape == (4, 8, 3, 3) and np.allclose(got, w1, atol=1e-7)
    (tmp_path / "bad.pt").write_bytes(b"not a pickle")
    with pytest.raises(InputError, match="not a torch state dict"):
        load_weights(tmp_path / "bad.pt")
