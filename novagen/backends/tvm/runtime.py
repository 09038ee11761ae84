"""Built modules to run from Python: our Winograd conv2d and TVM's direct conv2d for one layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from novagen.backends.tvm.compute import direct_module, transform_weights
from novagen.backends.tvm.schedule import conv2d_module
from novagen.backends.tvm.spec import TVMError, load_tvm, make_spec
from novagen.backends.tvm.targets import resolve_target
from novagen.layers import conv_bytes
from novagen.limits import require_memory


class Conv2d:
    """A built TVM Winograd conv2d for one layer: `conv(x, w)` → y as NumPy (x in the spec's layout,
    w (K, C, r, r)); the transformed weights are cached for the last `w` passed (by identity)."""

    def __init__(self, alg: Any, layer: Sequence[int] | str, padding: int | Sequence[int] = 1,
                 dtype: str = "float32", layout: str = "NCHW", weights: str = "precomputed",
                 target: Any = "llvm", mod: Any = None, p_block: int | None = None,
                 k_block: int | None = None) -> None:
        tvm = load_tvm()
        self.spec = make_spec(alg, layer, padding, dtype, layout, weights, p_block, k_block)
        require_memory(conv_bytes(self.spec.layer, self.spec.alg.r, self.spec.padding[0], 4),
                       f"a TVM conv2d for layer {self.spec.layer}")
        if mod is None:
            mod = conv2d_module(alg, layer, padding, dtype, layout, weights, p_block=p_block, k_block=k_block)
        shapes = [tuple(int(d) for d in p.shape) for p in mod["main"].params]
        if shapes[1:2] != [self.spec.weight_shape]:
            raise TVMError(f"the module takes weights {shapes[1:2]} but the spec packs them as "
                           f"{self.spec.weight_shape}: pass the p_block/k_block the module was built with")
        self.target = resolve_target(target)
        self.lib = tvm.compile(mod, target=self.target)
        self.dev = tvm.cpu() if self.target.kind.name == "llvm" else tvm.cuda()
        self.fn = self.lib["main"] if "main" in function_names(self.lib) else self.lib[self.spec.name]
        self._w: np.ndarray | None = None
        self._u: Any = None
        self._y = tvm.runtime.empty(self.spec.output_shape, dtype, self.dev)

    def set_weights(self, w: np.ndarray) -> None:
        tvm = load_tvm()
        s = self.spec
        if tuple(w.shape) != (s.layer[4], s.layer[1], s.alg.r, s.alg.r):
            raise TVMError(f"weights must be {(s.layer[4], s.layer[1], s.alg.r, s.alg.r)}, got {tuple(w.shape)}")
        u = transform_weights(s.alg, w, s.dtype, s.k_block) if s.weights == "precomputed" else np.asarray(w, s.dtype)
        self._u = tvm.runtime.tensor(u, self.dev)
        self._w = w

    def run(self, x: Any) -> Any:
        """Run on a tvm tensor (or NumPy array) x; returns the tvm output tensor (reused across calls)."""
        tvm = load_tvm()
        if isinstance(x, np.ndarray):
            x = tvm.runtime.tensor(np.ascontiguousarray(x, dtype=self.spec.dtype), self.dev)
        self.fn(x, self._u, self._y)
        return self._y

    def __call__(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if tuple(x.shape) != self.spec.input_shape:
            raise TVMError(f"x must be {self.spec.input_shape} ({self.spec.layout}), got {tuple(x.shape)}")
        if w is not self._w:
            self.set_weights(w)
        return self.run(x).numpy()


def function_names(lib: Any) -> set[str]:
    try:
        return {"main"} if lib.implements_function("main") else set()
    except Exception:
        return set()


class DirectConv2d:
    """TVM's own direct conv2d for one layer, built from `direct_module` (unscheduled: what Relax's
    default CPU pipeline runs) or from `mod`, e.g. its tuned schedule from `load_tuned("direct", ...)`:
    `run(x, w)` on tvm tensors."""

    def __init__(self, layer: Sequence[int] | str, padding: int | Sequence[int] = 1, dtype: str = "float32",
                 layout: str = "NCHW", target: Any = "llvm", mod: Any = None) -> None:
        tvm = load_tvm()
        self.spec = make_spec("F(2,3)", layer, padding, dtype, layout)
        mod = direct_module(layer, padding, dtype, layout) if mod is None else mod
        self.target = resolve_target(target)
        self.fn = tvm.compile(mod, target=self.target)["main"]
        self.dev = tvm.cpu() if self.target.kind.name == "llvm" else tvm.cuda()
        self._y = tvm.runtime.empty(self.spec.output_shape, dtype, self.dev)

    def weights(self, w: np.ndarray) -> Any:
        """w (K, C, 3, 3) as the tvm tensor the module takes (HWIO for NHWC)."""
        w = w if self.spec.layout == "NCHW" else w.transpose(2, 3, 1, 0)
        return load_tvm().runtime.tensor(np.ascontiguousarray(w, dtype=self.spec.dtype), self.dev)

    def run(self, x: Any, w: Any) -> Any:
        self.fn(x, w, self._y)
        return self._y

