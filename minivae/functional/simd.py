"""Small pieces of LLVM IR for the SIMD blocks of direct.py, narrow.py, one_channel.py and
small_products.py: loads and stores of vectors, a number in every lane, a prefetch, a loop whose
sums are kept in registers, the sum of a vector's lanes, the finishing of an output (bias, then
activation) and the gradient before an activation, in registers.

Numba's own loops keep sums in memory rather than in registers where a block needs many of them,
so those blocks are written in LLVM's IR, the language Numba compiles Python to, as Numba
"intrinsics" (functions that emit IR where they are called). These are their shared parts.
"""


def vector_width():
    """Floats per vector on this CPU: 16 with AVX-512, else 8."""
    from llvmlite import binding
    return 16 if binding.get_host_cpu_features().get("avx512f", False) else 8


def finisher(builder, vec, lanes, has_bias, kind, slope):
    """finish(v, b): the vector v + b where has_bias (else v as it is), then 0 (kind 1) or slope·v
    (kind 2) in the lanes where that is <= 0, as cpu_kernels.finish_run makes each number (a NaN stays
    NaN). Each choice is made by a select on the run-time flags: a few instructions per vector,
    after a sum of K multiply-adds."""
    from llvmlite import ir
    zero = ir.Constant(vec, None)
    with_bias = builder.icmp_signed("!=", has_bias, i64(0))
    relu, leaky = builder.icmp_signed("==", kind, i64(1)), builder.icmp_signed("==", kind, i64(2))
    slopes = splat(builder, slope, vec, lanes)

    def finish(v, b):
        v = builder.select(with_bias, builder.fadd(v, b), v)
        at_most_0 = builder.fcmp_ordered("<=", v, zero)
        v = builder.select(relu, builder.select(at_most_0, zero, v), v)
        return builder.select(leaky, builder.select(at_most_0, builder.fmul(v, slopes), v), v)
    return finish


def gradient_before(builder, vec, lanes, sloped, slope):
    """before(g, y): the gradient g times the fused activation's slope read off its output y where
    the flag `sloped` (an i1) is set, else g itself; the slope 1 where y > 0, `slope` where y <= 0
    (0 for relu), 0 where y is NaN, as cpu_kernels.slope_at reads it. The lanes of `slope` are
    filled here, before the loop that calls before()."""
    from llvmlite import ir
    zero, one = ir.Constant(vec, None), ir.Constant(vec, [1.0] * lanes)
    slopes = splat(builder, slope, vec, lanes)

    def before(g, y):
        slope_y = builder.select(builder.fcmp_ordered(">", y, zero), one,
                                 builder.select(builder.fcmp_ordered("<=", y, zero), slopes, zero))
        return builder.select(sloped, builder.fmul(g, slope_y), g)
    return before


def tools(context, builder, signature, args, lanes):
    """(the vector type, llvm.fma on vectors, data(i): argument i's data pointer (an array),
    integer(i): argument i as an int64)."""
    import numba
    from llvmlite import ir
    vec = ir.VectorType(ir.FloatType(), lanes)
    fma = function(builder, f"llvm.fma.v{lanes}f32", vec, [vec, vec, vec])

    def data(i):
        return context.make_array(signature.args[i])(context, builder, args[i]).data

    def integer(i):
        return context.cast(builder, args[i], signature.args[i], numba.types.int64)
    return vec, fma, data, integer


def function(builder, name, result, arguments):
    from llvmlite import ir
    from numba.core import cgutils
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(result, arguments), name)


def i64(value):
    from llvmlite import ir
    return ir.Constant(ir.IntType(64), value)


def load(builder, pointer, vec):
    return builder.load(builder.bitcast(pointer, vec.as_pointer()), align=4)


def store(builder, value, pointer, vec):
    builder.store(value, builder.bitcast(pointer, vec.as_pointer()), align=4)


def store_past_cache(builder, value, pointer, vec):
    """A non-temporal store of the vector: written to memory whole, without reading its cache line
    in first or keeping it in the cache. The pointer must be a multiple of the vector's size."""
    from llvmlite import ir
    instruction = builder.store(value, builder.bitcast(pointer, vec.as_pointer()), align=vec.count * 4)
    instruction.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))


def prefetch(builder, pointer):
    """Ask the CPU to bring the cache line at pointer into the nearest cache, to be read (llvm.prefetch:
    read, locality 3, data): it need not wait for the line, and nothing is read if it never comes."""
    from llvmlite import ir
    byte_p = ir.IntType(8).as_pointer()
    fetch = function(builder, "llvm.prefetch.p0", ir.VoidType(), [byte_p] + [ir.IntType(32)] * 3)
    builder.call(fetch, [builder.bitcast(pointer, byte_p)] + [ir.Constant(ir.IntType(32), c) for c in (0, 3, 1)])


def add_lanes(builder, vector, lanes):
    """The sum of a vector's lanes, as a tree: its halves added, then the halves of that, ...
    (lane l + lane l + lanes/2 first; a fixed order, in log2(lanes) dependent adds, not lanes)."""
    from llvmlite import ir
    while lanes > 1:
        lanes //= 2
        halves = [builder.shuffle_vector(vector, vector, ir.Constant(ir.VectorType(ir.IntType(32), lanes),
                                                                      list(range(start, start + lanes))))
                  for start in (0, lanes)]
        vector = builder.fadd(*halves)
    return builder.extract_element(vector, ir.Constant(ir.IntType(32), 0))


def splat(builder, scalar, vec, lanes):
    """The scalar in every lane of a vector."""
    from llvmlite import ir
    one = builder.insert_element(ir.Constant(vec, None), scalar, ir.Constant(ir.IntType(32), 0))
    lane_0 = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
    return builder.shuffle_vector(one, ir.Constant(vec, None), lane_0)


def open_loop(builder, vec, count):
    """The start of a loop: (the block before it, its body, the block after it, its index, and
    `count` vectors of sums), the builder in the body."""
    from llvmlite import ir
    entry, loop, done = builder.block, builder.append_basic_block("loop"), builder.append_basic_block("after")
    builder.branch(loop)
    builder.position_at_end(loop)
    return entry, loop, done, builder.phi(ir.IntType(64)), [builder.phi(vec) for _ in range(count)]


def close_loop(builder, index, sums, new, entry, loop, count, done, vec):
    """The loop's back edge: the sums start at 0 and take their new values; index runs 0..count-1."""
    from llvmlite import ir
    index.add_incoming(i64(0), entry)
    following = builder.add(index, i64(1))
    index.add_incoming(following, loop)
    for phi, value in zip(sums, new):
        phi.add_incoming(ir.Constant(vec, None), entry)
        phi.add_incoming(value, loop)
    builder.cbranch(builder.icmp_signed("<", following, count), loop, done)
    builder.position_at_end(done)
