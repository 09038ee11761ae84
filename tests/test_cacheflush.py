"""The cache-flush helper the auto choosers time with: it evicts, never changes, what it is given."""

import numpy as np
import pytest

from novagen.backends.cacheflush import flush


def test_flush_keeps_contents_of_every_buffer_kind():
    torch = pytest.importorskip("torch")
    a = np.arange(100_003, dtype=np.float32)
    t = torch.arange(4096, dtype=torch.float32).reshape(64, 64)
    view = t[::3, 1:]  # not contiguous: the whole storage is flushed
    empty = np.empty(0, dtype=np.float32)
    before = (a.copy(), t.clone())
    flush([a, t, view, empty, None])
    assert np.array_equal(a, before[0]) and torch.equal(t, before[1])
