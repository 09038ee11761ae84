"""Evicting buffers from the CPU caches (clflush on x86, `dc civac` on arm64) before a timed run: in a whole
model a layer's weights come from memory, so choosing a kernel by timing it with hot weights favours the large
tiles whose transformed weights are several times the size (F(8,3): 100/9) and lose in the model."""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Iterable
from typing import Any

from novagen.backends.toolchain import build_library, find_compiler, tool_identity

SOURCE = r"""
#include <stddef.h>
#include <stdint.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FLUSH(p) _mm_clflush(p)
#define FENCE() _mm_mfence()
#elif defined(__aarch64__)
#define FLUSH(p) __asm__ volatile("dc civac, %0" :: "r"(p) : "memory")
#define FENCE() __asm__ volatile("dsb ish" ::: "memory")
#else
#define FLUSH(p) ((void)(p))
#define FENCE() __sync_synchronize()
#endif
#define LINE 64

/* Write back and evict every cache line of [p, p + bytes). */
void novagen_flush(const void *p, size_t bytes) {
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)(LINE - 1), end = (uintptr_t)p + bytes;
    for (; a < end; a += LINE) FLUSH((const void *)a);
    FENCE();
}
"""
FLAGS = ("-O2", "-fPIC", "-shared")


@functools.lru_cache(maxsize=1)
def _flush() -> Any:
    cc = find_compiler()
    lib = build_library("cacheflush", (cc, tool_identity(cc), " ".join(FLAGS)), {"flush.c": SOURCE},
                        lambda src, out: [cc, *FLAGS, str(src / "flush.c"), "-o", str(out)],
                        "the cache-flush helper", {"compiler": tool_identity(cc)})
    fn = ctypes.CDLL(str(lib.path)).novagen_flush
    fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t], None
    return fn


def flush(buffers: Iterable[Any]) -> None:
    """Evict every buffer (torch tensors or NumPy arrays, contiguous or not: their whole storage span) from
    the caches."""
    fn = _flush()
    for buf in buffers:
        if buf is None:
            continue
        if hasattr(buf, "untyped_storage"):  # torch
            storage = buf.untyped_storage()
            fn(storage.data_ptr(), storage.nbytes())
        else:
            fn(buf.__array_interface__["data"][0], buf.nbytes)
