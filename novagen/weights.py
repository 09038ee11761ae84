"""A user's convolution weights from a file: what the FPGA-style targets build their transformed weights from.

`FILE` or `FILE:NAME`, by suffix:

- `.npy`: the array; `.npz`: the array NAME, or the only array;
- `.pt`, `.pth`, `.bin` (torch.save of a state dict, loaded with weights_only=True): the tensor NAME, or
  the only 4-D tensor;
- `.onnx`: the initializer NAME, or the only 4-D initializer.

Every failure is an InputError that names the file and what it holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from novagen.errors import InputError
from novagen.files import shorten

SUFFIXES = (".npy", ".npz", ".pt", ".pth", ".bin", ".onnx")


def split_source(source: str) -> tuple[Path, str | None]:
    """FILE or FILE:NAME (a NAME may hold dots and colons; the file part ends at a known suffix)."""
    text = str(source)
    for suffix in SUFFIXES:
        at = text.find(suffix + ":")
        if at >= 0:
            return Path(text[:at + len(suffix)]), text[at + len(suffix) + 1:] or None
    return Path(text), None


def _pick(arrays: Mapping[str, Any], name: str | None, path: Path, what: str) -> tuple[str, Any]:
    if name is not None:
        if name not in arrays:
            listed = ", ".join(sorted(arrays)[:12]) or "nothing"
            raise InputError(f"{shorten(path)} holds no {what} '{name}' (it holds {listed})")
        return name, arrays[name]
    four_d = {k: v for k, v in arrays.items() if len(getattr(v, "shape", ())) == 4}
    if len(arrays) == 1:
        return next(iter(arrays.items()))
    if len(four_d) == 1:
        return next(iter(four_d.items()))
    listed = ", ".join(sorted(four_d)[:12]) or "none"
    raise InputError(f"{shorten(path)} holds {len(four_d)} 4-D {what}s ({listed}): name one as {shorten(path)}:NAME")


def _torch_tensors(path: Path) -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        raise InputError(f"reading {shorten(path)} needs PyTorch: pip install 'novagen[torch]'") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise InputError(f"{shorten(path)} is not a torch state dict: {str(exc).splitlines()[0][:200]}") from None
    if isinstance(obj, torch.Tensor):
        return {"tensor": obj}
    if not isinstance(obj, Mapping):
        raise InputError(f"{shorten(path)} holds a {type(obj).__name__}, not a state dict of tensors")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _onnx_initializers(path: Path) -> dict[str, Any]:
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise InputError(f"reading {shorten(path)} needs onnx: pip install onnx") from None
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise InputError(f"{shorten(path)} is not an ONNX model: {str(exc).splitlines()[0][:200]}") from None
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def load_weights(source: str | Path, shape: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The weights (K, C, r, r) as float64 from `source` (see the module docstring); with `shape`, they must
    have exactly that shape."""
    path, name = split_source(str(source))
    if not path.is_file():
        raise InputError(f"weights file {shorten(path)} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arr: Any = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                _, arr = _pick({k: z[k] for k in z.files}, name, path, "array")
        elif suffix in (".pt", ".pth", ".bin"):
            _, arr = _pick(_torch_tensors(path), name, path, "tensor")
            arr = arr.detach().to("cpu").double().numpy()
        elif suffix == ".onnx":
            _, arr = _pick(_onnx_initializers(path), name, path, "initializer")
        else:
            raise InputError(f"weights file {shorten(path)}: use .npy, .npz, a torch state dict (.pt, .pth) "
                             "or an ONNX model (.onnx)")
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read weights from {shorten(path)}: {str(exc)[:200]}") from None
    w = np.asarray(arr)
    if w.dtype.kind not in "fiu":
        raise InputError(f"{shorten(path)}: the weights are {w.dtype}, not numbers")
    w = w.astype(np.float64)
    if shape is not None and w.shape != tuple(shape):
        raise InputError(f"{shorten(path)}: weights of shape {w.shape}, the layer needs {tuple(shape)} (K, C, r, r)")
    if not np.isfinite(w).all():
        raise InputError(f"{shorten(path)}: the weights hold inf or NaN")
    return w
