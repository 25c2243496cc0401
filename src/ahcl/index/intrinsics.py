"""LLVM IR building blocks of the Hamming kernels (numba intrinsics, inlined where they are used).

Each mask function answers "which rows are within ``t`` of the query?" for a group of rows as a
bit mask (bit ``b`` of word ``i`` = row ``64 i + b``), so the scan touches a row again only when
it may enter the top-k. The IR is generic (vector logic, ``llvm.ctpop`` on vectors), so LLVM
lowers it for whatever CPU numba targets; :mod:`ahcl.index.simd` decides which one runs.

* :func:`vp_mask64` (``avx512``): 64 rows of ``W`` words, word-major (the kernels copy a tile
  of wider codes into that order once per block of queries), 8 rows per vector.
* :func:`bs_mask256` (``avx2``): 256 rows as bit planes (:mod:`ahcl.index.planes`), counted by
  a vertical Harley-Seal carry-save adder tree on ``<4 x i64>`` vectors.
* :func:`popcnt_scalar` (``popcnt``): one POPCNT instruction as inline assembly on x86-64, which
  the loop vectoriser cannot widen (a plain ``llvm.ctpop.i64`` loop would become vector code).
"""

from __future__ import annotations

from llvmlite import binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ahcl.index import simd

I32, I64 = ir.IntType(32), ir.IntType(64)
BS_LANES = 4  # 64-bit lanes per bit-plane vector: 256 rows per block
BS_ROWS = 64 * BS_LANES
BS_GROUP = 16  # bit planes per carry-save step (planes are padded to a multiple)
BS_MAX_HI = 16  # counter bits above the 4 of a step: n_bits < 2**20
_VT = ir.VectorType(I64, BS_LANES)
# numba sets up LLVM's native target and assembly printer; inline assembly also needs the
# parser (idempotent; it changes nothing else).
llvm.initialize_native_asmparser()


def _ctpop(builder: ir.IRBuilder, value: ir.Value) -> ir.Value:
    name = f"llvm.ctpop.v{value.type.count}i64" if isinstance(value.type, ir.VectorType) \
        else "llvm.ctpop.i64"
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(value.type, [value.type]),
                                        name)
    return builder.call(fn, [value])


def _splat(builder: ir.IRBuilder, value: ir.Value, lanes: int) -> ir.Value:
    vt = ir.VectorType(value.type, lanes)
    one = builder.insert_element(ir.Constant(vt, ir.Undefined), value, ir.Constant(I32, 0))
    return builder.shuffle_vector(one, ir.Constant(vt, ir.Undefined),
                                  ir.Constant(ir.VectorType(I32, lanes), [0] * lanes))


def _data(context, builder, aryty, value) -> ir.Value:
    return context.make_array(aryty)(context, builder, value).data


@intrinsic
def popcount64(typingctx, x):  # noqa: ARG001 (numba intrinsic signature)
    """``llvm.ctpop.i64``: one popcount, which LLVM may vectorise (VPOPCNTQ, nibble lookup)."""
    def codegen(context, builder, signature, args):  # noqa: ARG001
        return _ctpop(builder, args[0])

    return types.uint64(types.uint64), codegen


@intrinsic
def popcnt_scalar(typingctx, x):  # noqa: ARG001
    """One scalar popcount that stays scalar: ``popcntq`` as inline assembly on x86-64."""
    def codegen(context, builder, signature, args):  # noqa: ARG001
        if simd.is_x86_64() and "popcnt" in simd.target_features():
            # POPCNT writes the flags: without the clobber LLVM may keep a comparison's flags
            # across it (seen: a mask chain of rows read as all "beyond t")
            return builder.asm(ir.FunctionType(I64, [I64]), "popcntq $1, $0", "=r,r,~{flags}",
                               [args[0]], False)
        return _ctpop(builder, args[0])

    return types.uint64(types.uint64), codegen


@intrinsic
def prefetch(typingctx, arr, i):  # noqa: ARG001
    """Hint the cache line of ``arr[i]`` into the caches (``llvm.prefetch``, read, keep in L2)."""
    def codegen(context, builder, signature, args):
        ptr = builder.bitcast(builder.gep(_data(context, builder, signature.args[0], args[0]),
                                          [args[1]]), ir.IntType(8).as_pointer())
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
            ir.VoidType(), [ptr.type, I32, I32, I32]), "llvm.prefetch.p0i8")
        builder.call(fn, [ptr, ir.Constant(I32, 0), ir.Constant(I32, 2), ir.Constant(I32, 1)])
        return context.get_dummy_value()

    return types.none(arr, types.intp), codegen


@intrinsic
def cttz64(typingctx, x):  # noqa: ARG001
    """Index of the lowest set bit of a nonzero ``uint64`` (``llvm.cttz.i64``, TZCNT)."""
    def codegen(context, builder, signature, args):  # noqa: ARG001
        fn = cgutils.get_or_insert_function(builder.module,
                                            ir.FunctionType(I64, [I64, ir.IntType(1)]),
                                            "llvm.cttz.i64")
        return builder.call(fn, [args[0], ir.Constant(ir.IntType(1), 1)])

    return types.uint64(types.uint64), codegen


@intrinsic
def vp_mask64(typingctx, cols, stride, r, q, w, t):  # noqa: ARG001
    """Mask of the 64 rows ``r .. r + 63`` within ``t`` (``int64 >= 0``) of ``q`` (``uint64 (w,)``).

    Word ``c`` of row ``i`` is ``cols[c * stride + i]`` (word-major; with ``w = 1`` the flat rows
    themselves), so 8 rows are one vector load and the row sums need no shuffles.
    """
    sig = types.uint64(cols, types.intp, types.intp, q, types.intp, types.int64)

    def codegen(context, builder, signature, args):
        cols_a, stride, r, q_a, w, t = args
        c_data = _data(context, builder, signature.args[0], cols_a)
        q_data = _data(context, builder, signature.args[3], q_a)
        vt = ir.VectorType(I64, 8)
        acc = [cgutils.alloca_once_value(builder, ir.Constant(vt, [0] * 8)) for _ in range(8)]
        with cgutils.for_range(builder, w) as word:
            qc = _splat(builder, builder.load(builder.gep(q_data, [word.index])), 8)
            base = builder.gep(c_data, [builder.add(builder.mul(word.index, stride), r)])
            for part, p in enumerate(acc):
                at = builder.gep(base, [ir.Constant(I64, 8 * part)])
                v = builder.load(builder.bitcast(at, vt.as_pointer()), align=8)
                builder.store(builder.add(builder.load(p), _ctpop(builder, builder.xor(v, qc))), p)
        limit = _splat(builder, t, 8)
        parts = [builder.icmp_unsigned("<=", builder.load(p), limit) for p in acc]
        while len(parts) > 1:  # concatenate the <8 x i1> compares into one <64 x i1>
            n = parts[0].type.count * 2
            idx = ir.Constant(ir.VectorType(I32, n), list(range(n)))
            parts = [builder.shuffle_vector(a, b, idx) for a, b in zip(parts[::2], parts[1::2])]
        return builder.bitcast(parts[0], I64)

    return sig, codegen


def _csa(builder: ir.IRBuilder, a: ir.Value, b: ir.Value, c: ir.Value) -> tuple[ir.Value, ir.Value]:
    """Carry-save adder on bit vectors: ``(carry, sum)`` of ``a + b + c`` per bit."""
    u = builder.xor(a, b)
    return builder.or_(builder.and_(a, b), builder.and_(u, c)), builder.xor(u, c)


def _harley_seal_16(builder: ir.IRBuilder, acc: list[ir.Value], x: list[ir.Value]) -> ir.Value:
    """Add 16 bit planes to the ones/twos/fours/eights counters ``acc`` (in place); returns the
    sixteens carried out."""
    ones, twos, fours, eights = acc
    fours_ab, eights_ab = [], []
    for half in (x[:8], x[8:]):
        for quarter in (half[:4], half[4:]):
            twos_a, ones = _csa(builder, ones, quarter[0], quarter[1])
            twos_b, ones = _csa(builder, ones, quarter[2], quarter[3])
            four, twos = _csa(builder, twos, twos_a, twos_b)
            fours_ab.append(four)
        eight, fours = _csa(builder, fours, fours_ab[-2], fours_ab[-1])
        eights_ab.append(eight)
    sixteens, eights = _csa(builder, eights, eights_ab[0], eights_ab[1])
    acc[:] = [ones, twos, fours, eights]
    return sixteens


def _count_planes(builder: ir.IRBuilder, block: ir.Value, q_data: ir.Value, g_lo: ir.Value,
                  g_hi: ir.Value, hi: "_HiCounter") -> list[ir.Value]:
    """Count, per row of a 256-row block, the planes of groups ``[g_lo, g_hi)`` that differ from
    the query (``block``: the block's first plane, ``q_data``: the query's plane masks) into a
    bit-sliced counter: the 4 low bits are returned (as stack slots), the rest go to ``hi``."""
    zero = ir.Constant(_VT, [0] * BS_LANES)
    acc_p = [cgutils.alloca_once_value(builder, zero) for _ in range(4)]
    with cgutils.for_range_slice(builder, g_lo, g_hi, ir.Constant(I64, 1)) as (grp, _):
        g0 = builder.mul(grp, ir.Constant(I64, BS_GROUP))
        gp = builder.gep(block, [builder.mul(g0, ir.Constant(I64, BS_LANES))])
        gq = builder.gep(q_data, [g0])
        x = []
        for k in range(BS_GROUP):
            at = builder.gep(gp, [ir.Constant(I64, k * BS_LANES)])
            plane = builder.load(builder.bitcast(at, _VT.as_pointer()), align=8)
            qk = builder.load(builder.gep(gq, [ir.Constant(I64, k)]))
            x.append(builder.xor(plane, _splat(builder, qk, BS_LANES)))
        acc = [builder.load(p) for p in acc_p]
        sixteens = _harley_seal_16(builder, acc, x)
        for p, v in zip(acc_p, acc):
            builder.store(v, p)
        hi.add(sixteens)
    return acc_p


def _compare(builder: ir.IRBuilder, acc_p: list[ir.Value], hi: "_HiCounter", t: ir.Value
             ) -> tuple[ir.Value, ir.Value]:
    """``(count > t, count == t)`` per row, decided from the most significant counter bit
    down (``t``: ``int64``, below ``2 ** (4 + levels)``)."""
    zero, full = ir.Constant(_VT, [0] * BS_LANES), ir.Constant(_VT, [-1] * BS_LANES)
    gt_p = cgutils.alloca_once_value(builder, zero)
    eq_p = cgutils.alloca_once_value(builder, full)

    def compare_bit(bit: ir.Value, i: ir.Value) -> None:
        tb = _splat(builder, builder.neg(builder.and_(builder.lshr(t, i),
                                                      ir.Constant(I64, 1))), BS_LANES)
        gt, eq = builder.load(gt_p), builder.load(eq_p)
        builder.store(builder.or_(gt, builder.and_(eq, builder.and_(bit, builder.not_(tb)))),
                      gt_p)
        builder.store(builder.and_(eq, builder.not_(builder.xor(bit, tb))), eq_p)

    hi.each_from_top(compare_bit)
    for i in (3, 2, 1, 0):
        compare_bit(builder.load(acc_p[i]), ir.Constant(I64, i))
    return builder.load(gt_p), builder.load(eq_p)


def _store_mask(builder: ir.IRBuilder, within: ir.Value, o_data: ir.Value, out_off: ir.Value
                ) -> ir.Value:
    """Write a block's 4 mask words at ``o_data[out_off]``; returns their OR."""
    builder.store(within, builder.bitcast(builder.gep(o_data, [out_off]), _VT.as_pointer()),
                  align=8)
    any_ = builder.extract_element(within, ir.Constant(I32, 0))
    for lane in range(1, BS_LANES):
        any_ = builder.or_(any_, builder.extract_element(within, ir.Constant(I32, lane)))
    return any_


def _block_start(builder: ir.IRBuilder, p_data: ir.Value, blk: ir.Value, n_groups: ir.Value
                 ) -> ir.Value:
    """Pointer to the first plane of block ``blk`` (``n_groups`` groups of 16 planes each)."""
    stride = builder.mul(n_groups, ir.Constant(I64, BS_GROUP * BS_LANES))
    return builder.gep(p_data, [builder.mul(blk, stride)])


def _make_bs_mask256(fixed_hi: int | None):
    """:func:`bs_mask256`, with the counter bits above 8 in registers when their number is fixed
    at compile time (``fixed_hi``), else in a stack array walked by loops."""

    @intrinsic
    def bs_mask256(typingctx, planes, blk, qmask, n_groups, hi_levels, t, out,  # noqa: ARG001
                   out_off):
        """Bit-sliced mask of the 256 rows of block ``blk`` within ``t`` of the query.

        Args (numba side):
            planes: ``uint64`` bit planes (:func:`ahcl.index.planes.to_planes`), block ``blk``
                at ``blk * n_groups * 16 * 4``, plane ``p`` of it at ``+ 4 p`` (lane ``l``: rows
                ``64 l .. 64 l + 63``).
            qmask: ``uint64 (n_groups * 16,)``, all ones where the query's bit ``p`` is set.
            n_groups: planes / 16. hi_levels: counter bits above 8, ``bit_length(n_bits) - 4``
                (must equal ``fixed_hi`` when that is set).
            t: ``int64`` threshold, ``0 <= t < 2 ** (4 + hi_levels)``.
            out: ``uint64`` array; the block's 4 mask words go to ``out[out_off : out_off + 4]``.

        Returns:
            ``uint64``: the OR of the 4 mask words (0: no row of the block is within ``t``).
        """
        sig = types.uint64(planes, types.intp, qmask, types.intp, types.intp, types.int64, out,
                           types.intp)

        def codegen(context, builder, signature, args):
            planes_a, blk, qmask_a, n_groups, hi_levels, t, out_a, out_off = args
            p_data = _data(context, builder, signature.args[0], planes_a)
            q_data = _data(context, builder, signature.args[2], qmask_a)
            o_data = _data(context, builder, signature.args[6], out_a)
            hi = _HiCounter(builder, fixed_hi, hi_levels, ir.Constant(_VT, [0] * BS_LANES))
            block = _block_start(builder, p_data, blk, n_groups)
            acc_p = _count_planes(builder, block, q_data, ir.Constant(I64, 0), n_groups, hi)
            gt, _ = _compare(builder, acc_p, hi, t)
            return _store_mask(builder, builder.not_(gt), o_data, out_off)

        return sig, codegen

    return bs_mask256


@intrinsic
def bs_key_mask256(typingctx, planes, blk, qmask, s_groups, i_groups, s_hi, i_hi, ts, ti,  # noqa: ARG001
                   out, out_off):
    """Bit-sliced mask of the 256 rows of block ``blk`` whose split key is within ``(ts, ti)``:
    semantic distance ``S < ts``, or ``S == ts`` and instance distance ``I <= ti``.

    Args (numba side):
        planes: split bit planes (:func:`ahcl.index.planes.split_planes`): per block,
            ``s_groups`` groups of 16 semantic planes, then ``i_groups`` of instance planes.
        qmask: ``uint64 ((s_groups + i_groups) * 16,)`` the query's plane masks, same order.
        s_hi, i_hi: counter bits above 8 of each count (:func:`~ahcl.index.planes.split_geometry`).
        ts, ti: ``int64``, ``0 <= ts < 2 ** (4 + s_hi)``, ``0 <= ti < 2 ** (4 + i_hi)``.
        out, out_off: as in :func:`bs_mask256`.

    Returns:
        ``uint64``: the OR of the 4 mask words.
    """
    sig = types.uint64(planes, types.intp, qmask, types.intp, types.intp, types.intp, types.intp,
                       types.int64, types.int64, out, types.intp)

    def codegen(context, builder, signature, args):
        planes_a, blk, qmask_a, s_groups, i_groups, s_hi, i_hi, ts, ti, out_a, out_off = args
        p_data = _data(context, builder, signature.args[0], planes_a)
        q_data = _data(context, builder, signature.args[2], qmask_a)
        o_data = _data(context, builder, signature.args[9], out_a)
        zero = ir.Constant(_VT, [0] * BS_LANES)
        block = _block_start(builder, p_data, blk, builder.add(s_groups, i_groups))
        hi_s = _HiCounter(builder, None, s_hi, zero)
        gt_s, eq_s = _compare(builder, _count_planes(builder, block, q_data, ir.Constant(I64, 0),
                                                     s_groups, hi_s), hi_s, ts)
        hi_i = _HiCounter(builder, None, i_hi, zero)
        gt_i, _ = _compare(builder, _count_planes(builder, block, q_data, s_groups,
                                                  builder.add(s_groups, i_groups), hi_i), hi_i, ti)
        # S < ts, or S == ts and I <= ti  ==  not (S > ts  or  (S == ts and I > ti))
        within = builder.not_(builder.or_(gt_s, builder.and_(eq_s, gt_i)))
        return _store_mask(builder, within, o_data, out_off)

    return sig, codegen


class _HiCounter:
    """The bit-sliced counter bits of weight 16 and up: ``fixed`` registers, or a stack array of
    ``BS_MAX_HI`` vectors of which the first ``levels`` (run time) are used."""

    def __init__(self, builder: ir.IRBuilder, fixed: int | None, levels: ir.Value,
                 zero: ir.Constant) -> None:
        self.builder, self.fixed, self.levels = builder, fixed, levels
        self.carry = cgutils.alloca_once_value(builder, zero)
        if fixed is not None:
            self.bits = [cgutils.alloca_once_value(builder, zero) for _ in range(fixed)]
            return
        self.array = cgutils.alloca_once(builder, _VT, size=BS_MAX_HI)
        with cgutils.for_range(builder, levels) as lv:
            builder.store(zero, builder.gep(self.array, [lv.index]))

    def _ripple(self, at: ir.Value) -> None:
        b = self.builder
        h, c = b.load(at), b.load(self.carry)
        b.store(b.xor(h, c), at)
        b.store(b.and_(h, c), self.carry)

    def add(self, sixteens: ir.Value) -> None:
        """Add a vector of weight-16 bits (ripple carry: once per 16 planes)."""
        self.builder.store(sixteens, self.carry)
        if self.fixed is not None:
            for at in self.bits:
                self._ripple(at)
            return
        with cgutils.for_range(self.builder, self.levels) as lv:
            self._ripple(self.builder.gep(self.array, [lv.index]))

    def each_from_top(self, fn) -> None:
        """``fn(bit_vector, bit_index)`` for each counter bit, most significant first."""
        b = self.builder
        if self.fixed is not None:
            for i in reversed(range(self.fixed)):
                fn(b.load(self.bits[i]), ir.Constant(I64, i + 4))
            return
        with cgutils.for_range(b, self.levels) as lv:
            i = b.sub(b.sub(self.levels, ir.Constant(I64, 1)), lv.index)
            fn(b.load(b.gep(self.array, [i])), b.add(i, ir.Constant(I64, 4)))


# bs_mask256_h<i>: i counter bits above 8 in registers (codes below 2 ** (4 + i) bits)
(bs_mask256_h0, bs_mask256_h1, bs_mask256_h2, bs_mask256_h3, bs_mask256_h4, bs_mask256_h5,
 bs_mask256_h6, bs_mask256_h7) = (_make_bs_mask256(h) for h in range(8))
bs_mask256 = _make_bs_mask256(None)
