"""Epilogue fusion for the fast backend: the BatchNorm2d, the ReLU and the 2×2 stride-2 MaxPool2d that follow
a `KernelConv2d` in the model run inside it (the BatchNorm folded into the weights in eval mode, the ReLU and
the pool in the kernel's output transform), each saving a pass over the layer's output: VGG-16's ReLUs take
8 % of its eager time at batch 1, ResNet-18's BatchNorms 3 %, and torch's NCHW max pool is slow (VGG-16's
five, batch 1: 27 ms, 14x its channels_last pool), while the fused one writes a quarter of the output.

The model keeps its structure and its state-dict keys: the fused modules stay where they are, as
pass-through subclasses holding the same parameters and buffers (`FusedBatchNorm2d`, `FusedReLU`,
`FusedMaxPool2d`), and the conv computes them (`fast.Epilogue`) in both modes, so `train()` and
`load_state_dict` behave as before.  A module is fused only where torch.fx shows that the conv's output goes to
it alone and that the model calls it once; a ReLU module shared by several call sites (torchvision's ResNet
blocks) or a functional ReLU stays.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from torch import fx, nn

from novagen.torch.fast import KernelConv2d
from novagen.torch.pool import pair


class FusedBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that the KernelConv2d before it computes: passes its input through.  Same parameters,
    buffers and state-dict keys as the module it took the place of."""

    def forward(self, x: Any) -> Any:
        return x


class FusedReLU(nn.ReLU):
    """A ReLU that the KernelConv2d before it computes: passes its input through."""

    def forward(self, x: Any) -> Any:
        return x


class FusedMaxPool2d(nn.MaxPool2d):
    """A MaxPool2d that the KernelConv2d before it computes: passes its input through."""

    def forward(self, x: Any) -> Any:
        return x


def _pool_window(pool: nn.MaxPool2d) -> int:
    """2 for the max pool the kernel computes (2×2, stride 2, no padding or dilation, floor, no indices), else 0."""
    plain = (pair(pool.kernel_size) == (2, 2) and pair(pool.stride or pool.kernel_size) == (2, 2)
             and pair(pool.padding) == (0, 0) and pair(pool.dilation) == (1, 1))
    return 2 if plain and not pool.ceil_mode and not pool.return_indices else 0


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, KernelConv2d) or super().is_leaf_module(m, qualname)


def _sole_call(node: fx.Node, model: nn.Module, calls: Counter[Any], kind: type) -> fx.Node | None:
    """The node's only user when it calls a module of exactly `kind`, on this node alone, and the model calls
    that module nowhere else."""
    users = list(node.users)
    if len(users) != 1:
        return None
    user = users[0]
    if user.op != "call_module" or calls[user.target] != 1 or user.args != (node,) or user.kwargs:
        return None
    return user if type(model.get_submodule(str(user.target))) is kind else None


def _fused_batchnorm(bn: nn.BatchNorm2d) -> FusedBatchNorm2d:
    new = FusedBatchNorm2d(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    new._parameters, new._buffers = bn._parameters, bn._buffers  # the same tensors: state and devices as before
    new.train(bn.training)
    return new


def fuse_epilogues(model: nn.Module) -> tuple[list[dict[str, Any]], str | None]:
    """Fuse into each KernelConv2d of `model` (in place) the BatchNorm2d, then the ReLU, then the 2×2 stride-2
    MaxPool2d module that only it feeds.  Returns one row per conv that took something (conv, batchnorm, relu,
    maxpool: module names or None) and, when torch.fx cannot trace the model, why nothing was fused."""
    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # noqa: BLE001 - fx raises whatever the model's Python raises on a proxy
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return [], f"torch.fx cannot trace the model ({type(e).__name__}: {first})"
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    rows = []
    for node in list(graph.nodes):
        if node.op != "call_module" or calls[node.target] != 1:
            continue
        conv = model.get_submodule(str(node.target))
        if not isinstance(conv, KernelConv2d) or conv.epilogue.bn is not None or conv.epilogue.relu \
                or conv.epilogue.pool:
            continue
        tail, bn_name = node, None
        bn_node = _sole_call(node, model, calls, nn.BatchNorm2d)
        if bn_node is not None:
            bn = model.get_submodule(str(bn_node.target))
            if bn.num_features == conv.out_channels and bn.running_mean is not None and bn.running_var is not None:
                bn_name, tail = str(bn_node.target), bn_node
        relu_node = _sole_call(tail, model, calls, nn.ReLU)
        relu_name = str(relu_node.target) if relu_node is not None else None
        tail = relu_node or tail
        pool_node = _sole_call(tail, model, calls, nn.MaxPool2d)
        pool_name = str(pool_node.target) if pool_node is not None else None
        window = _pool_window(model.get_submodule(pool_name)) if pool_name is not None else 0  # type: ignore[arg-type]
        if not window:
            pool_name = None
        if bn_name is None and relu_name is None and pool_name is None:
            continue
        if bn_name is not None:
            conv.epilogue.bn = _fused_batchnorm(bn)
            model.set_submodule(bn_name, conv.epilogue.bn)
        if relu_name is not None:
            model.set_submodule(relu_name, FusedReLU(model.get_submodule(relu_name).inplace))  # type: ignore[arg-type]
            conv.epilogue.relu = True
        if pool_name is not None:
            model.set_submodule(pool_name, FusedMaxPool2d(2, 2))
            conv.epilogue.pool = window
        rows.append({"conv": str(node.target), "batchnorm": bn_name, "relu": relu_name, "maxpool": pool_name})
    return rows, None
