"""TVM targets: this CPU as an llvm target, and any target a user names."""

from __future__ import annotations

import os
from typing import Any

from novagen.backends.tvm.spec import TVMError, load_tvm


def host_target(threads: int | None = None) -> Any:
    """The llvm target of this CPU: {"kind": "llvm", "mcpu": <host cpu>, "num-cores": <cores>}."""
    tvm = load_tvm()
    try:
        mcpu = str(tvm.target.codegen.llvm_get_system_cpu())
    except Exception:
        mcpu = ""
    cfg: dict[str, Any] = {"kind": "llvm", "num-cores": int(threads or os.cpu_count() or 1)}
    if mcpu and mcpu != "generic":
        cfg["mcpu"] = mcpu
    return tvm.target.Target(cfg)


def resolve_target(target: Any) -> Any:
    """A tvm Target from "llvm" (this CPU), "cuda", a dict or a Target."""
    tvm = load_tvm()
    if isinstance(target, str) and target in ("llvm", "cpu"):
        return host_target()
    try:
        return target if isinstance(target, tvm.target.Target) else tvm.target.Target(target)
    except Exception as exc:
        raise TVMError(f"target {target!r} is not a TVM target: {str(exc).splitlines()[0][:200]}") from None

