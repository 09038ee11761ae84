"""The direct C convolution as a PyTorch operator: the `auto` candidate for layers with few input channels.

`novagen::direct_conv2d(x, w, bias, padding, relu)`: y from x (N, C, H, W), w (K, C, r, r), an optional
bias and ReLU, stride 1, on `torch.get_num_threads()` threads (`novagen.backends.direct`); with a fake
implementation so `torch.compile` and `torch.export` trace through it.  The weights are read as they are:
no transform to cache.  A channels_last input is computed as NCHW and handed back channels_last.
"""

from __future__ import annotations

import threading

import torch

from novagen.backends.direct import DIRECT, MAX_CHANNELS, direct_library

__all__ = ["DIRECT", "direct_conv2d", "eligible", "workspaces"]

_WORKSPACES = threading.local()


def eligible(in_channels: int, kernel_size: tuple[int, ...], padding: tuple[int, ...]) -> bool:
    """Whether `auto` offers the direct kernel for a layer: few input channels, an odd square kernel, padding
    within it."""
    r = kernel_size[0]
    return (in_channels <= MAX_CHANNELS and len(set(kernel_size)) == 1 and r % 2 == 1
            and all(0 <= p < r for p in padding))


def _out_hw(x: torch.Tensor, r: int, padding: list[int]) -> tuple[int, int]:
    return x.shape[2] + 2 * padding[0] - r + 1, x.shape[3] + 2 * padding[1] - r + 1


def _channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


@torch.library.custom_op("novagen::direct_conv2d", mutates_args=())
def direct_conv2d(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, padding: list[int],
                  relu: bool = False) -> torch.Tensor:
    r = int(w.shape[2])
    lib = direct_library(r)
    n, c, h, wd = (int(v) for v in x.shape)
    k = int(w.shape[0])
    s = lib.shape(n, c, h, wd, k, (int(padding[0]), int(padding[1])), relu, torch.get_num_threads())
    xc = x.to(torch.float32).contiguous()
    wc = w.detach().to(torch.float32).contiguous()
    b = None if bias is None else bias.detach().to(torch.float32).contiguous()
    y = torch.empty((n, k, s.oh, s.ow), dtype=torch.float32)
    cache = _WORKSPACES.__dict__.setdefault("buffers", {})
    need = lib.workspace_floats(s)
    if cache.get(r) is None or cache[r].numel() < need:
        cache[r] = torch.empty(need, dtype=torch.float32)
    lib.run(s, xc.data_ptr(), wc.data_ptr(), None if b is None else b.data_ptr(), y.data_ptr(), cache[r].data_ptr())
    return y.contiguous(memory_format=torch.channels_last) if _channels_last(x) else y


@direct_conv2d.register_fake
def _(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, padding: list[int],
      relu: bool = False) -> torch.Tensor:
    oh, ow = _out_hw(x, int(w.shape[2]), padding)
    return torch.empty((x.shape[0], w.shape[0], oh, ow), dtype=torch.float32, device=x.device,
                       memory_format=torch.channels_last if _channels_last(x) else torch.contiguous_format)


def workspaces() -> list[torch.Tensor]:
    """This thread's workspaces (for cold timing)."""
    return list(_WORKSPACES.__dict__.get("buffers", {}).values())
