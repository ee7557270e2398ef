"""What numba has no option or type for: the preferred vector width, and explicit SIMD vectors.

``prefer_512_bit_vectors()``: LLVM's X86 backend reads the vector width it prefers from each function's
``"prefer-vector-width"`` attribute, and defaults to 256 bits on most AVX-512 CPUs (Skylake-X onwards,
Sapphire Rapids included) to avoid the clock penalty of 512-bit instructions, which numba inherits for
every function. Calling ``prefer_512_bit_vectors()`` at the top of a jitted function sets the attribute on
that function only, so its loops are vectorized with zmm registers where the target has them (on an AVX2
target it changes nothing). llvmlite checks function attributes against a list of flag names, so the
string attribute is added to the set directly; it is written out verbatim in the IR, where LLVM accepts it.

``Vector``: an LLVM vector value (``<16 x float>``, ``<8 x double>``, ...) as a numba type, with the
intrinsics below to make, load, store and combine them. A jitted function holds such values in local
variables; LLVM keeps them in vector registers, so a loop written with them is the loop LLVM compiles,
lane for lane. That is how the broadcast micro-kernels are written (``slac.ops.cpu_codegen``): their
layout (output channels across the lanes, one operand broadcast) is one LLVM's vectorizers do not form
from scalar code. A vector's width is given in bits (a literal: 256 or 512) and its lanes follow from the
array's dtype (512 bits: 16 float32 or 8 float64); loads and stores index an array's data by flat element,
so they take C-contiguous arrays only (others find no matching signature), and need no alignment.

    a = vzero(out, 512)                               # zeros, out's dtype
    w = vload(wt, k * stride + o0, 512)              # wt.flat[k * stride + o0 : ... + lanes]
    a = vadd(a, vmin(vsplat(x[t, k], 512), w))       # a += min(x[t, k], w), lane by lane
    a = vadd(a, vmin(vbroadcast(x, t * n + k, 512), w))     # the same, x's flat element t * n + k
    vstore(out, t * stride + o0, a)

``vmin``/``vmax`` are a comparison and a select (x86's minps/maxps: the second operand where either is
NaN), the kernels' scalar ``min``/``max``; ``vfma(a, b, c)`` is a * b + c, fused where the target has FMA.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

__all__ = [
    "Vector",
    "prefer_512_bit_vectors",
    "vadd",
    "vbroadcast",
    "vfma",
    "vlanes",
    "vload",
    "vmax",
    "vmin",
    "vmul",
    "vsplat",
    "vstore",
    "vsub",
    "vzero",
]


@intrinsic
def prefer_512_bit_vectors(typingctx):
    def codegen(context, builder, signature, args):
        set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        return context.get_dummy_value()

    return types.none(), codegen


class Vector(types.Type):
    """``lanes`` values of ``dtype`` (a numba float type) in one LLVM vector."""

    def __init__(self, dtype: types.Float, lanes: int):
        self.dtype, self.lanes = dtype, lanes
        super().__init__(name=f"Vector({dtype}, {lanes})")


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


def _vector_type(dtype, bits) -> Vector | None:
    """The vector of ``bits`` (an integer literal) of ``dtype``'s floats, or None (numba then reports no
    matching signature) for anything else."""
    if not isinstance(bits, types.IntegerLiteral) or not isinstance(dtype, types.Float):
        return None
    if bits.literal_value % dtype.bitwidth:
        return None
    return Vector(dtype, bits.literal_value // dtype.bitwidth)


def _flat(array) -> bool:
    """An array whose flat element i is data[i]: C-contiguous."""
    return isinstance(array, types.Array) and array.layout == "C"


def _element_pointer(context, builder, array_type, array, index):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.gep(data, [index], inbounds=True)


@intrinsic
def vlanes(typingctx, array, bits):
    """The lanes of a ``bits`` vector of ``array``'s dtype, a compile-time constant."""
    if not isinstance(array, types.Array) or (vector := _vector_type(array.dtype, bits)) is None:
        return None

    def codegen(context, builder, signature, args):
        return context.get_constant(types.intp, vector.lanes)

    return types.intp(array, bits), codegen


@intrinsic
def vzero(typingctx, array, bits):
    """A vector of zeros of ``array``'s dtype."""
    if not isinstance(array, types.Array) or (vector := _vector_type(array.dtype, bits)) is None:
        return None

    def codegen(context, builder, signature, args):
        return ir.Constant(context.get_value_type(vector), None)

    return vector(array, bits), codegen


@intrinsic
def vload(typingctx, array, index, bits):
    """The lanes of ``array``'s data from flat element ``index`` on (row-major, no bounds check)."""
    if not _flat(array) or not isinstance(index, types.Integer):
        return None
    if (vector := _vector_type(array.dtype, bits)) is None:
        return None

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        vector_pointer = builder.bitcast(pointer, context.get_value_type(vector).as_pointer())
        return builder.load(vector_pointer, align=array.dtype.bitwidth // 8)

    return vector(array, index, bits), codegen


@intrinsic
def vstore(typingctx, array, index, value):
    """Stores ``value``'s lanes into ``array``'s data from flat element ``index`` on."""
    if not _flat(array) or not isinstance(value, Vector) or value.dtype != array.dtype:
        return None
    if not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        vector_pointer = builder.bitcast(pointer, args[2].type.as_pointer())
        builder.store(args[2], vector_pointer, align=array.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(array, index, value), codegen


@intrinsic
def vsplat(typingctx, value, bits):
    """``value`` (a float) in every lane."""
    if (vector := _vector_type(value, bits)) is None:
        return None

    def codegen(context, builder, signature, args):
        vector_type = context.get_value_type(vector)
        one = builder.insert_element(ir.Constant(vector_type, ir.Undefined), args[0], cgutils.int32_t(0))
        mask = ir.Constant(ir.VectorType(ir.IntType(32), vector.lanes), [0] * vector.lanes)
        return builder.shuffle_vector(one, ir.Constant(vector_type, ir.Undefined), mask)

    return vector(value, bits), codegen


@intrinsic
def vbroadcast(typingctx, array, index, bits):
    """``array``'s flat element ``index`` (row-major, no bounds check and, unlike ``a[i]`` with a signed
    index, no wrap-around of negative indices to test) in every lane."""
    if not _flat(array) or not isinstance(index, types.Integer):
        return None
    if (vector := _vector_type(array.dtype, bits)) is None:
        return None

    def codegen(context, builder, signature, args):
        value = builder.load(_element_pointer(context, builder, signature.args[0], args[0], args[1]))
        vector_type = context.get_value_type(vector)
        one = builder.insert_element(ir.Constant(vector_type, ir.Undefined), value, cgutils.int32_t(0))
        mask = ir.Constant(ir.VectorType(ir.IntType(32), vector.lanes), [0] * vector.lanes)
        return builder.shuffle_vector(one, ir.Constant(vector_type, ir.Undefined), mask)

    return vector(array, index, bits), codegen


_FLAGS = ("contract", "reassoc", "nsz", "arcp")  # the kernels' fastmath flags, without nnan/ninf


def _lanewise(operation):
    @intrinsic
    def function(typingctx, a, b):
        if not isinstance(a, Vector) or a != b:
            return None

        def codegen(context, builder, signature, args):
            return operation(builder, *args)

        return a(a, b), codegen

    return function


vadd = _lanewise(lambda builder, a, b: builder.fadd(a, b, flags=_FLAGS))
vsub = _lanewise(lambda builder, a, b: builder.fsub(a, b, flags=_FLAGS))
vmul = _lanewise(lambda builder, a, b: builder.fmul(a, b, flags=_FLAGS))
vmin = _lanewise(lambda builder, a, b: builder.select(builder.fcmp_ordered("<", a, b), a, b))
vmax = _lanewise(lambda builder, a, b: builder.select(builder.fcmp_ordered(">", a, b), a, b))
vadd.__doc__, vsub.__doc__, vmul.__doc__ = "a + b", "a - b", "a * b"
vmin.__doc__, vmax.__doc__ = "a if a < b else b", "a if a > b else b"


@intrinsic
def vfma(typingctx, a, b, c):
    """a * b + c (one fused instruction where the target has FMA)."""
    if not isinstance(a, Vector) or not a == b == c:
        return None

    def codegen(context, builder, signature, args):
        return builder.fadd(builder.fmul(args[0], args[1], flags=_FLAGS), args[2], flags=_FLAGS)

    return a(a, b, c), codegen
