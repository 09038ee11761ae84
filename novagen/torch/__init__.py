"""PyTorch integration: `replace_conv2d` swaps a model's eligible 3×3 stride-1 convolutions for novagen's,
either emulating a precision policy (`emulated`: accuracy studies in fp16, bf16, fp8, int8) or running the
generated C kernel as a PyTorch operator (`fast`: real speed on CPUs, with `algorithm="auto"` choosing per
layer between the catalog's algorithms and torch's own conv2d by measured time, `auto`); `calibrate` fixes
static int8 scales on data and `finetune` learns verified algorithms for a low-precision datapath."""

from novagen.torch.emulated import (
    DirectConv2d,
    Replacement,
    WinogradConv2d,
    ineligible,
    overflow_counts,
)
from novagen.torch.fast import TORCH, KernelConv2d, winograd_conv2d, winograd_weights
from novagen.torch.replace import replace_conv2d


def calibrate(*args: object, **kwargs: object) -> object:
    """`novagen.torch.scales.calibrate`: static int8 scales of a replaced model from data."""
    from novagen.torch.scales import calibrate as run

    return run(*args, **kwargs)  # type: ignore[arg-type]


def finetune(*args: object, **kwargs: object) -> object:
    """`novagen.torch.training.finetune`: Winograd-aware fine-tuning that learns verified algorithms."""
    from novagen.torch.training import finetune as run

    return run(*args, **kwargs)  # type: ignore[arg-type]


def learned_algorithm(module: object) -> object:
    """The algorithm a fine-tuned layer computes with (snapped and verified by `finetune`)."""
    algs = getattr(module, "algs", None)
    if algs is None:
        from novagen.errors import InputError

        raise InputError(f"{type(module).__name__} is not a Winograd convolution of novagen.torch")
    return algs[0]


__all__ = ["TORCH", "DirectConv2d", "KernelConv2d", "Replacement", "WinogradConv2d", "calibrate", "finetune",
           "ineligible", "learned_algorithm", "overflow_counts", "replace_conv2d", "winograd_conv2d",
           "winograd_weights"]
