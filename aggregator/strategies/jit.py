"""numba's ``njit`` as every compiled kernel module uses it (:mod:`order_kernels`, :mod:`dot_kernels`,
:mod:`gate_kernels`): cached machine code, the GIL released, NumPy's float error model, no bounds checks.

Imported only by those modules, which their callers import on first use and only where numba can be
imported (numba's import costs about a second).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba

_F = TypeVar("_F", bound=Callable[..., Any])


def compiled(*, fastmath: frozenset[str] = frozenset()) -> Callable[[_F], _F]:
    """A decorator compiling a kernel, typed as the function it wraps. ``fastmath``: the LLVM fast-math
    flags the kernel may use (none by default: IEEE arithmetic in the source's order, so a kernel can be
    bit-identical to its NumPy reference); e.g. ``{"reassoc"}`` for sums that carry a tolerance."""

    def decorate(fn: _F) -> _F:
        jit = numba.njit(
            cache=True, nogil=True, error_model="numpy", boundscheck=False, fastmath=set(fastmath) or False
        )
        return cast(_F, jit(fn))

    return decorate
