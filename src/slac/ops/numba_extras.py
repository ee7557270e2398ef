"""An LLVM function attribute numba has no option for.

LLVM's X86 backend reads the vector width it prefers from each function's ``"prefer-vector-width"``
attribute, and defaults to 256 bits on most AVX-512 CPUs (Skylake-X onwards, Sapphire Rapids included)
to avoid the clock penalty of 512-bit instructions, which numba inherits for every function. Calling
``prefer_512_bit_vectors()`` at the top of a jitted function sets the attribute on that function only, so
its loops are vectorized with zmm registers where the target has them (on an AVX2 target it changes
nothing). llvmlite checks function attributes against a list of flag names, so the string attribute is
added to the set directly; it is written out verbatim in the IR, where LLVM accepts it.
"""

from __future__ import annotations

from numba import types
from numba.extending import intrinsic

__all__ = ["prefer_512_bit_vectors"]


@intrinsic
def prefer_512_bit_vectors(typingctx):
    def codegen(context, builder, signature, args):
        set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        return context.get_dummy_value()

    return types.none(), codegen
