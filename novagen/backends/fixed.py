"""What the fixed-point targets (hls, verilog) share: the design of one layer from the user's weights (or
random ones for a self-test), its test data and expected outputs, and reading a generated folder back."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from novagen.algebra import Algorithm, from_dict
from novagen.errors import CheckFailed, InputError
from novagen.fixedpoint import FixedPointDesign, design, layer_test_data
from novagen.limits import require_memory
from novagen.weights import load_weights


@dataclass(frozen=True)
class LayerDesign:
    """A fixed-point design for one layer with its weights, a test input and the outputs it must give."""

    des: FixedPointDesign
    layer: tuple[int, ...]
    padding: int
    x: np.ndarray            # integer test input (N, C, H, W)
    w: np.ndarray            # float weights (K, C, r, r)
    uq: np.ndarray           # transformed, quantized weights (K, C, α, α)
    expected: np.ndarray     # raw outputs Ŷ of the bit-accurate model (N, K, OH, OW), Python integers
    source: str              # where the weights came from

    def data_files(self) -> dict[str, str]:
        """data/x.txt (N, then the inputs), data/u.txt, data/w.txt, data/y_expected.txt."""
        def lines(a: Any) -> str:
            return "\n".join(map(str, np.asarray(a).reshape(-1).tolist())) + "\n"
        return {"data/x.txt": f"{self.layer[0]}\n" + lines(self.x), "data/u.txt": lines(self.uq),
                "data/w.txt": "\n".join(repr(float(v)) for v in self.w.reshape(-1)) + "\n",
                "data/y_expected.txt": lines(self.expected)}


def weight_max_for(w: np.ndarray) -> float:
    """The power of two at or above the largest |w|: the range the transformed weights are scaled for."""
    top = float(np.abs(w).max(initial=0.0))
    return 1.0 if top == 0 else 2.0 ** math.ceil(math.log2(top))


def layer_design(alg: Algorithm, layer: tuple[int, ...], padding: int, bits: Any, weights: str | None,
                 self_test: bool, datapath_bits: int | None, coef_bits: int = 16, seed: int = 0,
                 target: str = "hls") -> LayerDesign:
    """The design, weights and test data of `layer` (see the module docstring)."""
    n, c, h, w_, k = layer
    if h + 2 * padding < alg.r or w_ + 2 * padding < alg.r:
        raise InputError(f"input {h}x{w_} with padding {padding} is smaller than the {alg.r}x{alg.r} kernel")
    require_memory(200.0 * (k * c * alg.alpha ** 2 + n * c * h * w_ + n * k * h * w_),
                   f"the fixed-point model of layer {layer}")
    if weights is None and not self_test:
        raise InputError(f"the {target} target needs the layer's weights: --weights FILE (.npy, .npz, a torch "
                         "state dict or an ONNX model, FILE:NAME to pick one), or --self-test for random weights")
    if weights is not None and self_test:
        raise InputError("give --weights or --self-test, not both")
    x, w = layer_test_data(layer, design(alg, bits).in_bits, alg.r, seed)
    source = f"random (self-test, seed {seed})"
    if weights is not None:
        w = load_weights(weights, (k, c, alg.r, alg.r))
        source = str(weights)
    des = design(alg, bits, channels=c, coef_bits=coef_bits, weight_max=weight_max_for(w),
                 datapath_bits=datapath_bits)
    uq = des.transform_weights(w)
    if datapath_bits is not None:
        des = des.for_weights(uq)
    expected, _ = des.run(x, uq, padding)
    return LayerDesign(des, tuple(layer), padding, x, w, uq, expected, source)


def read_folder(folder: str | Path, target: str) -> tuple[dict[str, Any], LayerDesign]:
    """design.json and the test data of a generated folder, and the design rebuilt from them."""
    folder = Path(folder)
    path = folder / "design.json"
    if not path.is_file():
        raise InputError(f"{folder} holds no design.json: give a folder written by `novagen generate --target "
                         f"{target}`")
    try:
        meta = json.loads(path.read_text())
        alg = from_dict(meta["algorithm"])
        layer = tuple(int(v) for v in meta["layer"])
        sums = meta.get("weight_sums")
        des = FixedPointDesign(alg, in_bits=int(meta["in_bits"]), coef_bits=int(meta["coef_bits"]),
                               channels=layer[1], weight_max=float(meta["weight_max"]),
                               datapath_bits=meta.get("datapath_bits"),
                               weight_sums=tuple(tuple(int(v) for v in r) for r in sums) if sums else None)
        padding = int(meta["padding"])
        n, c, h, w, k = layer
        a, r = alg.alpha, alg.r
        data = folder / "data"
        x = np.array([int(v) for v in (data / "x.txt").read_text().split()[1:]], dtype=np.int64).reshape(n, c, h, w)
        uq = np.array([int(v) for v in (data / "u.txt").read_text().split()], dtype=np.int64).reshape(k, c, a, a)
        wf = np.array([float(v) for v in (data / "w.txt").read_text().split()]).reshape(k, c, r, r)
        exp = np.array([int(v) for v in (data / "y_expected.txt").read_text().split()], dtype=object)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{folder} is not a complete novagen {target} design: {str(exc)[:200]}") from None
    if not isinstance(alg, Algorithm):
        raise InputError(f"{path}: the algorithm is not 1D")
    oh, ow = h + 2 * padding - r + 1, w + 2 * padding - r + 1
    if exp.size != n * k * oh * ow:
        raise InputError(f"{folder}: data/y_expected.txt holds {exp.size} outputs, the layer has {n * k * oh * ow}")
    return meta, LayerDesign(des, layer, padding, x, wf, uq, exp.reshape(n, k, oh, ow), str(meta.get("weights")))


def reference(x: np.ndarray, w: np.ndarray, padding: int) -> tuple[np.ndarray, str]:
    """The float64 convolution of the integer test input: torch.conv2d when torch is installed (what users
    compare with), else novagen's float64 reference."""
    try:
        import torch
    except ImportError:
        from novagen.reference import correlate_direct

        return correlate_direct(x.astype(np.float64), w, padding), "novagen.reference (float64)"
    y = torch.nn.functional.conv2d(torch.from_numpy(x.astype(np.float64)), torch.from_numpy(w), padding=padding)
    return y.numpy(), f"torch.nn.functional.conv2d {torch.__version__} (float64)"


def compare(folder: Path, got: np.ndarray, target: str) -> tuple[int, float, float, float, bool, str]:
    """(mismatches against the model, max |error|, relative L2 error, largest bound, within bound, reference
    name) of raw outputs Ŷ (N, K, OH, OW) from a simulation of `folder`."""
    _, ld = read_folder(folder, target)
    des = ld.des
    yhat, _ = des.run(ld.x, ld.uq, ld.padding)
    if got.size != yhat.size:
        raise CheckFailed(f"the simulation wrote {got.size} outputs, expected {yhat.size}")
    got = got.reshape(yhat.shape)
    mismatches = int(np.count_nonzero(got != yhat))
    ref, name = reference(ld.x, ld.w, ld.padding)
    y = got.astype(np.float64) * 2.0 ** des.y_exponent
    err = np.abs(y - ref)
    bound = des.error_bound(ld.x, ld.padding, ld.uq)
    return (mismatches, float(err.max()), float(np.linalg.norm(y - ref) / np.linalg.norm(ref)),
            float(bound.max()), bool((err <= bound).all()), name)
