"""The direct C convolution as a PyTorch operator: the `auto` candidate for layers with few input channels.

`novagen::direct_conv2d(x, w, bias, padding, relu, stride)`: y from x (N, C, H, W), w (K, C, r, r), an
optional bias and ReLU, stride 1 or 2, on `torch.get_num_threads()` threads (`novagen.backends.direct`); with a fake
implementation so `torch.compile` and `torch.export` trace through it.  The weights are read as they are:
no transform to cache.  A channels_last input is computed as NCHW and handed back channels_last.
"""

from __future__ import annotations

import torch
from torch import nn

from novagen.backends.direct import DIRECT, MAX_CHANNELS, STRIDES, direct_library, output_size
from novagen.torch.workspaces import workspace

__all__ = ["DIRECT", "direct_conv2d", "ineligible"]


def ineligible(conv: nn.Module) -> str | None:
    """Why `auto` cannot offer the direct kernel for a module (None when it can): it takes plain fp32-able
    nn.Conv2d layers with few input channels, an odd square kernel up to 11, stride 1 or 2 on both axes,
    no dilation or groups, zero padding within the kernel."""
    if type(conv) is not nn.Conv2d:
        return f"{type(conv).__name__} is not nn.Conv2d"
    k, stride, dil = tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.dilation)
    pad = {"same": ((k[0] - 1) // 2,) * 2, "valid": (0, 0)}.get(conv.padding) if isinstance(conv.padding, str) \
        else tuple(conv.padding)
    checks = (
        (conv.in_channels <= MAX_CHANNELS, f"{conv.in_channels} input channels is more than {MAX_CHANNELS}"),
        (k[0] == k[1] and k[0] % 2 == 1 and k[0] <= 11, f"kernel {k} is not odd, square and at most 11"),
        (stride[0] == stride[1] and stride[0] in STRIDES, f"stride {stride} is not 1 or 2 on both axes"),
        (dil == (1, 1) and conv.groups == 1, f"dilation {dil} or groups {conv.groups} is not 1"),
        (conv.padding_mode == "zeros" and pad is not None and all(0 <= p < k[0] for p in pad),
         f"padding {conv.padding} ({conv.padding_mode}) is not zeros within the kernel"),
    )
    return next((reason for ok, reason in checks if not ok), None)


def _out_hw(x: torch.Tensor, r: int, padding: list[int], stride: int) -> tuple[int, int]:
    return output_size(x.shape[2], r, stride, padding[0]), output_size(x.shape[3], r, stride, padding[1])


def _channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


@torch.library.custom_op("novagen::direct_conv2d", mutates_args=())
def direct_conv2d(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, padding: list[int],
                  relu: bool = False, stride: int = 1) -> torch.Tensor:
    r = int(w.shape[2])
    lib = direct_library(r, stride)
    n, c, h, wd = (int(v) for v in x.shape)
    k = int(w.shape[0])
    s = lib.shape(n, c, h, wd, k, (int(padding[0]), int(padding[1])), relu, torch.get_num_threads())
    xc = x.to(torch.float32).contiguous()
    wc = w.detach().to(torch.float32).contiguous()
    b = None if bias is None else bias.detach().to(torch.float32).contiguous()
    y = torch.empty((n, k, s.oh, s.ow), dtype=torch.float32)
    lib.run(s, xc.data_ptr(), wc.data_ptr(), None if b is None else b.data_ptr(), y.data_ptr(),
            workspace(lib.prefix, lib.workspace_floats(s)).data_ptr())
    return y.contiguous(memory_format=torch.channels_last) if _channels_last(x) else y


@direct_conv2d.register_fake
def _(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, padding: list[int],
      relu: bool = False, stride: int = 1) -> torch.Tensor:
    oh, ow = _out_hw(x, int(w.shape[2]), padding, stride)
    return torch.empty((x.shape[0], w.shape[0], oh, ow), dtype=torch.float32, device=x.device,
                       memory_format=torch.channels_last if _channels_last(x) else torch.contiguous_format)

