"""Backends: render a kernel from transform programs, build it, load it, run it."""

from novagen.backends.c import BuildError, Kernel, compile_kernel, render

__all__ = ["BuildError", "Kernel", "compile_kernel", "render"]
