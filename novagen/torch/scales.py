"""Calibration of a replaced model's int8 stages on data: static scales instead of each tensor's own amax.

`calibrate(model, batches)` runs the model on calibration batches, measures, for every emulated
Winograd convolution whose policy quantizes (int8, fp8), its input x and its Winograd-domain activations
V = BT d B, and fixes the scales (`novagen.precision.calibration`): x per tensor; with a tap-wise policy,
V per tap by the chosen method and U = G g Gᵀ per output channel and tap from the weights; with a
per-tensor policy, one scale each.  Deterministic given the data
and the seed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from novagen.errors import InputError
from novagen.precision.calibration import TapStatistics, channel_tap_scales, tensor_scale
from novagen.precision.emulator import winograd_domain
from novagen.torch.emulated import DirectConv2d, WinogradConv2d


def _quantizing(mod: nn.Module) -> bool:
    pol = getattr(mod, "policy", None)
    return isinstance(mod, (WinogradConv2d, DirectConv2d)) and pol is not None and pol.input_transform.scale != "none"


def _batches(data: Any) -> Iterable[torch.Tensor]:
    if isinstance(data, torch.Tensor):
        yield from data.split(64)
        return
    for item in data:
        yield item[0] if isinstance(item, (tuple, list)) else item


def calibrate(model: nn.Module, data: Any, method: str = "max", percentile: float = 99.99, pow2: bool = False,
              seed: int = 0) -> dict[str, dict[str, Any]]:
    """Set calibrated scales on every quantizing emulated Winograd convolution of `model` (in place) from
    `data` (a tensor of inputs, or batches / (input, label) pairs); returns them by layer name as lists."""
    mods = {name: m for name, m in model.named_modules() if _quantizing(m)}
    if not mods:
        raise InputError("nothing to calibrate: no emulated Winograd convolution with an int8 or fp8 policy "
                         "(replace_conv2d(model, alg, precision='int8-tap') first)")
    stats = {name: TapStatistics((m.algs[0].alpha, m.algs[1].alpha) if isinstance(m, WinogradConv2d) else (1,),
                                 seed=seed) for name, m in mods.items()}
    inputs: dict[str, list[torch.Tensor]] = {name: [] for name in mods}
    handles = []
    for name, mod in mods.items():
        mod.scales = None

        def hook(m: Any, args: tuple[Any, ...], name: str = name) -> None:
            x = args[0].detach()
            if isinstance(m, WinogradConv2d):
                ops = m._arrays(x)
                v, _, _ = winograd_domain(x.to(ops.dtype), m.weight.detach().to(ops.dtype), m.algs, m.policy,
                                          m.padding, ops)
                stats[name].add(v)
            inputs[name].append(x.reshape(-1)[:: max(1, x.numel() // 100_000)])

        handles.append(mod.register_forward_pre_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            seen = 0
            for xb in _batches(data):
                model(xb)
                seen += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if seen == 0:
        raise InputError("the calibration data holds no batch")
    out = {}
    for name, mod in mods.items():
        ops = mod._arrays(mod.weight)
        if isinstance(mod, DirectConv2d):  # the int8 baseline a user would deploy: x per tensor, w per channel
            w = np.abs(mod.weight.detach().double().numpy()).max(axis=(1, 2, 3), keepdims=True)
            ws = np.where(w > 0, w / 127.0, 1.0)
            scales = {"x": tensor_scale(torch.cat(inputs[name]), method, percentile, pow2, seed=seed),
                      "w": 2.0 ** np.ceil(np.log2(ws)) if pow2 else ws}
            mod.scales = {k: torch.as_tensor(v, dtype=ops.dtype) for k, v in scales.items()}
            out[name] = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in scales.items()}
            continue
        _, u, _ = winograd_domain(torch.zeros(1, mod.in_channels, 3, 3, dtype=ops.dtype), mod.weight.detach().to(
            ops.dtype), mod.algs, mod.policy, mod.padding, ops)
        top = 127.0
        per_tap = mod.policy.input_transform.scale == "tap"
        st = stats[name]
        scales = {"x": tensor_scale(torch.cat(inputs[name]), method, percentile, pow2, seed=seed),
                  "V": (st.scales(method, percentile, pow2, top) if per_tap
                        else tensor_scale(np.concatenate(st.samples), method, percentile, pow2, top, seed=seed)),
                  "U": (channel_tap_scales(u, pow2, top) if per_tap
                        else tensor_scale(u, "max", percentile, pow2, top, seed=seed))}
        mod.scales = {k: torch.as_tensor(v, dtype=ops.dtype) for k, v in scales.items()}
        out[name] = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in scales.items()}
    return out
