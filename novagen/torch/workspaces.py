"""Per-thread kernel workspaces, reused between calls (a fresh large buffer per call costs its page faults)."""

from __future__ import annotations

import threading

import torch

_BUFFERS = threading.local()


def workspace(key: str, floats: int) -> torch.Tensor:
    """This thread's float32 buffer for `key` (a kernel), grown to at least `floats`."""
    cache = _BUFFERS.__dict__.setdefault("buffers", {})
    buf = cache.get(key)
    if buf is None or buf.numel() < floats:
        buf = cache[key] = torch.empty(floats, dtype=torch.float32)
    return buf


def workspaces() -> list[torch.Tensor]:
    """This thread's buffers (what a cold timing evicts along with the weights)."""
    return list(_BUFFERS.__dict__.get("buffers", {}).values())
