"""One BLAS thread for the aggregation kernels.

The Gram products of the Krum family are small (n x n outputs) and memory-bound; OpenBLAS's threads buy
little on an idle machine and, on a busy one, spin-wait for cores that other processes hold: the issue
measured n=100, d=1M at 530 ms with one thread and 21 s with the default two. Every kernel that calls
BLAS runs inside :func:`single_threaded`, whatever ``OPENBLAS_NUM_THREADS`` the process was started with.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from threadpoolctl import ThreadpoolController


@lru_cache(maxsize=1)
def _controller() -> ThreadpoolController:
    # Scanning the loaded libraries costs ~1 ms: once per process, then ~20 us per limit.
    return ThreadpoolController()


@contextmanager
def single_threaded() -> Iterator[None]:
    """BLAS limited to one thread in this block (process-wide, restored on exit)."""
    with _controller().limit(limits=1, user_api="blas"):
        yield
