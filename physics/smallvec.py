"""Dot products and norms of 3- and 4-vectors in numba that round exactly like numpy's.

The Python shell of a step handles a few instruments with 3- and 4-vectors; a numpy call on such a vector costs
1-5 us, most of it call overhead, so the shell does that arithmetic in small numba helpers instead. numpy's
``dot`` and ``linalg.norm`` of a short float64 vector go to BLAS ``ddot``, which (OpenBLAS on x86-64 with FMA)
accumulates ``s = fma(a[i], b[i], s)`` from 0 in index order; ``dot`` here does the same with LLVM's exact
``fma``, so the helpers return the very bits numpy did and moving code out of numpy changes no result.
"""

from __future__ import annotations

import math

import numba as nb
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c rounded once (llvm.fma.f64: exact on every target, a hardware FMA where there is one)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        f64 = ir.DoubleType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f64, [f64, f64, f64]), "llvm.fma.f64")
        a_, b_, c_ = (context.cast(builder, v, t, types.float64) for v, t in zip(args, signature.args, strict=True))
        return builder.call(fn, [a_, b_, c_])

    return sig, codegen


@nb.njit(inline="always", nogil=True, cache=True)
def dot(a, b):
    """sum a[i] * b[i] in numpy's (BLAS ddot's) rounding: fused multiply-adds in index order from 0."""
    s = 0.0
    for i in range(a.shape[0]):
        s = fma(a[i], b[i], s)
    return s


@nb.njit(inline="always", nogil=True, cache=True)
def norm(a):
    """Euclidean norm with numpy's rounding (np.linalg.norm of a 1-D float64 vector)."""
    return math.sqrt(dot(a, a))


@nb.njit(nogil=True, cache=True)
def norm3(a):
    """float(np.linalg.norm(a)) for a float64 3-vector, from Python at a fraction of numpy's call cost."""
    return norm(a)
