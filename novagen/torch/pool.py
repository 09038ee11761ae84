"""The C max pool as a PyTorch operator, and the MaxPool2d that runs it on NCHW tensors.

`novagen::max_pool2d(x, kernel_size, stride, padding, ceil_mode)` (with a fake implementation for
`torch.compile` and `torch.export`) runs `novagen.backends.maxpool` on `torch.get_num_threads()` threads.
`KernelMaxPool2d` takes the place of an `nn.MaxPool2d` that `replace_conv2d(..., backend="c")` did not fuse
into a conv: it runs the operator on contiguous fp32 CPU NCHW inputs outside autograd and torch's own pool on
everything else (channels_last, where torch's is fast; other dtypes; inputs that need a gradient).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from novagen.backends.maxpool import output_size, pool_library


def pair(v: Any) -> tuple[int, int]:
    """A module's int-or-pair setting as a pair."""
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


@torch.library.custom_op("novagen::max_pool2d", mutates_args=())
def max_pool2d(x: torch.Tensor, kernel_size: list[int], stride: list[int], padding: list[int],
               ceil_mode: bool = False) -> torch.Tensor:
    lib = pool_library(pair(kernel_size), pair(stride))
    n, c, h, w = (int(v) for v in x.shape)
    s = lib.shape(n, c, h, w, pair(padding), ceil_mode, torch.get_num_threads())
    xc = x.to(torch.float32).contiguous()
    y = torch.empty((n, c, s.oh, s.ow), dtype=torch.float32)
    lib.run(s, xc.data_ptr(), y.data_ptr())
    return y


@max_pool2d.register_fake
def _(x: torch.Tensor, kernel_size: list[int], stride: list[int], padding: list[int],
      ceil_mode: bool = False) -> torch.Tensor:
    (kh, kw), (sh, sw), (ph, pw) = pair(kernel_size), pair(stride), pair(padding)
    return x.new_empty((x.shape[0], x.shape[1], output_size(x.shape[2], kh, sh, ph, ceil_mode),
                        output_size(x.shape[3], kw, sw, pw, ceil_mode)), dtype=torch.float32)


def ineligible(pool: nn.MaxPool2d) -> str | None:
    """Why a MaxPool2d cannot run the C pool, or None."""
    if type(pool) is not nn.MaxPool2d:
        return f"a {type(pool).__name__}, not a plain MaxPool2d"
    if pair(pool.dilation) != (1, 1):
        return f"dilation {pool.dilation}"
    if pool.return_indices:
        return "it returns indices"
    return None


class KernelMaxPool2d(nn.MaxPool2d):
    """A MaxPool2d that runs novagen's C max pool where it can (see the module docstring), torch's elsewhere;
    same settings and structure as the module it took the place of."""

    @classmethod
    def from_pool(cls, pool: nn.MaxPool2d) -> KernelMaxPool2d:
        new = cls(pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.return_indices, pool.ceil_mode)
        new.train(pool.training)
        return new

    def runs_kernel(self, x: torch.Tensor) -> bool:
        """Whether x goes to the C pool: a contiguous, non-empty fp32 CPU NCHW batch that needs no gradient."""
        return (x.dim() == 4 and x.numel() > 0 and x.dtype == torch.float32 and x.device.type == "cpu"
                and x.is_contiguous() and not (x.requires_grad and torch.is_grad_enabled())
                and not self.return_indices and pair(self.dilation) == (1, 1))

    def forward(self, x: Any) -> Any:
        if not self.runs_kernel(x):
            return super().forward(x)
        return max_pool2d(x, list(pair(self.kernel_size)), list(pair(self.stride or self.kernel_size)),
                          list(pair(self.padding)), bool(self.ceil_mode))
