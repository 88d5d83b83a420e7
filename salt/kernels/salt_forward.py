"""The whole SAL-T-family inference forward as one Triton kernel, one jet per program.

On a GPU the eager model runs as dozens of tiny kernels whose launches and round trips
through memory cost far more than its arithmetic. Here one program reads its jet once and
writes its C logits. Its only other memory traffic is a per-jet scratch of block inputs,
raw logits and one tile's softmax (N x 16 floats each at the paper's sizes, small enough to
stay in the caches): the logit convolution reads rows above and below a tile, and the
softmax reads each head's columns, which registers cannot shift between threads.

The algebra is the eager fused path's (salt/models/attention.py), rearranged so every step
is a small matrix product over a tile of BLOCK_N particle rows, or a few multiply-adds per
element where a product would be mostly padding:

* The embedding: F multiply-adds per output (a jet has a handful of features per particle).
* E and F (block-diagonal for SAL-T, dense for the Linformer and the no-partition
  ablation) are handed over as one dense (H·p, N) matrix each, zero off the diagonal
  blocks; a short last partition and empty partitions (p > N) come out as in eager.
  EX = E^T x and FX = F^T x are sums over all particles (pass 1 over the tiles, which also
  embeds the jet for the first block and keeps x in scratch). A partitioned tile's rows
  lie in a few consecutive partitions (SPAN; 2 at N = 150, p = 4 on 32 rows), and the rows
  of E and F of the others are zero there, so pass 1 multiplies by only those (E or F,
  partition, head) rows, 2·H·SPAN padded, one product instead of two of H·p rows each
  (half the multiply-adds at p = 4), and adds the result to the jet's sums in scratch.
* KP = (EX W_k^T masked to each head's columns) / sqrt(d_k); raw logits = x (KP W_q)^T
  (pass 1b writes them to scratch).
* The logit convolution (every height averaged into one kernel of R rows, as eager
  does) mixes the p columns of each head over R neighbouring rows:
  conv[n, h·p + j] = bias + sum_r sum_c raw[n + r - top, h·p + c] M_r[c, j], rows outside
  the jet zero: R·p multiply-adds per element, from loads of the raw logits at shifted
  rows and gathered columns (pass 2). A dense (H·p, H·p) product per tap would be H times
  the work, all but the diagonal blocks zero. The raw logits sit between zero rows in
  scratch, down to the last row a tile reads, so these loads need no mask.
* The softmax within each head: a tile's logits go to scratch and each column reads its
  head's p columns back for the maximum, then the exponentials likewise for the sum.
* Both scratches are column-major (LR and BLOCK_N rows a column): the gathered columns vary
  slowest, so Triton lays the loads out with each thread reading 4 consecutive rows of a
  column as one 16-byte vector and a warp whole 128-byte lines (at R = 5 the compiled
  kernel loads only taps 0 and 4: the other taps' rows lie in those vectors). Row-major, a
  gathered column has no contiguous dimension, and Triton 3.6 then gives each lane its own
  row: 16 cache lines per warp-wide load, and 272 loads per thread and tile at N = 150.
* VO = (FX W_v^T masked to each head) W_o^T: attention output = softmax(logits) VO + b_o;
  then DyT, the FFN, DyT, and the pooling of the last block's rows.

Product dimensions are padded to a power of two of at least 16 (tl.dot's smallest tile)
with zero weights, so padded columns contribute nothing; padded rows are masked. Products
use input_precision PREC: "ieee" (exact fp32; TF32 would break the 1e-5 agreement with
eager) or "tf32x3". On a GPU (FAST), e**x and 1/x are single flush-to-zero hardware
instructions (ex2.approx.ftz, rcp.approx.ftz: relative error below 2**-22), not tl.exp's and
division's sequences with their subnormal and range fix-ups, which cost a tenth of the
kernel's instructions; inline PTX does not run in Triton's interpreter, which computes the
same functions in numpy. Only APIs present in both Triton 3.6 and 3.9 are used.
"""

from __future__ import annotations

import triton
import triton.language as tl

AGG_MAX, AGG_MEAN, AGG_SUM = 0, 1, 2


@triton.jit
def _exp(x, FAST: tl.constexpr):
    """e**x; FAST: one ex2.approx.ftz (rel. error < 2**-22), without the subnormal-result fix-up that
    tl.exp's non-ftz ex2 compiles to (three more instructions per element)."""
    if FAST:
        return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=r,r", [x * 1.4426950408889634],
                                         dtype=tl.float32, is_pure=True, pack=1)
    else:
        return tl.exp(x)


@triton.jit
def _recip(x, FAST: tl.constexpr):
    """1/x; FAST: one rcp.approx.ftz (1 ulp), not div.full's range checks."""
    if FAST:
        return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return 1.0 / x


@triton.jit
def _dyt(x, alpha, beta, col_ok, FAST: tl.constexpr):
    """DyT tanh(z), z = αx + β, as 1 - 2/(1 + e**2z) (tl.tanh is not in every Triton); padded columns zero."""
    y = 1.0 - 2.0 * _recip(1.0 + _exp(2.0 * (alpha * x + beta), FAST), FAST)
    return tl.where(col_ok[None, :], y, 0.0)


@triton.jit
def _rows(x_ptr, mask_ptr, jet, rows, N: tl.constexpr, DP: tl.constexpr, HAS_MASK: tl.constexpr,
          MASKED: tl.constexpr):
    """Rows `rows` (BLOCK_N,) of a jet's (N, DP) activations in scratch, zero outside [0, N); MASKED
    multiplies by the particle mask, as eager does for the attention's input."""
    ok = (rows >= 0) & (rows < N)
    safe = tl.where(ok, rows, 0)
    cols = tl.arange(0, DP)
    h = tl.load(x_ptr + safe[:, None] * DP + cols[None, :], mask=ok[:, None], other=0.0)
    if HAS_MASK:
        if MASKED:
            ok = ok & (tl.load(mask_ptr + jet * N + safe, mask=ok, other=0) != 0)
            h = tl.where(ok[:, None], h, 0.0)
    return h


@triton.jit
def salt_forward_kernel(
    inp_ptr, mask_ptr, xs_ptr, ls_ptr, ss_ptr, zs_ptr, out_ptr,
    we_ptr, be_ptr,
    pe_ptr, wk_ptr, wq_ptr, wv_ptr, wo_ptr, bo_ptr, mc_ptr, cb_ptr,
    w1_ptr, b1_ptr, w2_ptr, b2_ptr, dyt_ptr,
    wh_ptr, bh_ptr, wout_ptr, bout_ptr,
    N: tl.constexpr, F: tl.constexpr, C: tl.constexpr, P: tl.constexpr, HP: tl.constexpr, DK: tl.constexpr,
    DP: tl.constexpr, HPP: tl.constexpr, FFP: tl.constexpr, CP: tl.constexpr,
    H: tl.constexpr, CH: tl.constexpr, SPAN: tl.constexpr, RA: tl.constexpr,
    D: tl.constexpr, BLOCKS: tl.constexpr, HIDDEN: tl.constexpr, CONV: tl.constexpr, R: tl.constexpr,
    TOP: tl.constexpr, LR: tl.constexpr, PADS: tl.constexpr, AGG: tl.constexpr, HAS_MASK: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PREC: tl.constexpr, FAST: tl.constexpr,
):
    jet = tl.program_id(0).to(tl.int64)  # offsets past 2**31 elements at large batches
    jets = tl.num_programs(0).to(tl.int64)
    cols = tl.arange(0, DP)
    col_ok = cols < D
    ffc = tl.arange(0, FFP)
    hpr = tl.arange(0, HPP)  # (head, partition) index h·p + c, as a row or a column
    ar = tl.arange(0, BLOCK_N)
    hp_ok = hpr < HP
    # which head a (head, partition) row belongs to, against which head a model column belongs to
    head_of_hp = hpr // P
    head_mask = (head_of_hp[:, None] == (cols // DK)[None, :]) & hp_ok[:, None]
    dd = cols[:, None] * DP + cols[None, :]
    # this jet's raw logits for the convolution's shifted reads, column-major (HPP, LR): particle n at
    # row n + TOP between zero rows, so a shift needs no bounds check
    l_jet = ls_ptr + jet * HPP * LR
    # the first column of each column's head, where the convolution and the softmax read its p columns
    # (padded columns read head 0's; what they compute is dropped)
    head_col = tl.where(hp_ok, head_of_hp * P, 0)
    # this jet's softmax scratch, column-major: a tile's logits, then its exponentials (2, HPP, BLOCK_N)
    s_rows = ss_ptr + jet * 2 * HPP * BLOCK_N + ar[:, None]
    s_tile = s_rows + hpr[None, :] * BLOCK_N
    s_head = s_rows + head_col[None, :] * BLOCK_N

    if SPAN > 0:
        # partitioned E and F: a tile's rows lie in at most SPAN partitions c0, c0 + 1, ..., so pass 1
        # multiplies by RA rows (E or F, partition c0 + d, head) instead of every (head, partition) row of
        # E and of F, and adds the products to this jet's sums in scratch, (BLOCKS, 2, HPP, DP), zeroed here
        ra = tl.arange(0, RA)
        a_ef = ra // (SPAN * H)
        a_d = (ra // H) % SPAN
        a_h = ra % H
        z_jet = zs_ptr + jet * BLOCKS * 2 * HPP * DP
        zr = tl.arange(0, 2 * HPP)
        for layer in tl.static_range(BLOCKS):
            tl.store(z_jet + (layer * 2 * HPP + zr)[:, None] * DP + cols[None, :], tl.zeros((2 * HPP, DP), tl.float32))
        tl.debug_barrier()

    pooled = tl.full((DP,), float("-inf"), tl.float32)
    if AGG != 0:
        pooled = tl.zeros((DP,), tl.float32)
    count = tl.zeros((BLOCK_N,), tl.float32)

    for layer in tl.static_range(BLOCKS):
        x_in = xs_ptr + (layer % 2) * jets * N * DP + jet * N * DP  # this block's input (N, DP)
        # pass 1: EX = E^T x, FX = F^T x over every particle (x masked); the first block embeds the jet
        ex = tl.zeros((HPP, DP), tl.float32)
        fx = tl.zeros((HPP, DP), tl.float32)
        for start in range(0, N, BLOCK_N):
            rows = start + ar
            row_ok = rows < N
            if layer == 0:
                # a few features per particle: F multiply-adds per output beat a product padded to 16
                x = tl.zeros((BLOCK_N, DP), tl.float32) + tl.load(be_ptr + cols)[None, :]
                for f in tl.static_range(F):
                    feature = tl.load(inp_ptr + jet * N * F + rows * F + f, mask=row_ok, other=0.0)
                    x += feature[:, None] * tl.load(we_ptr + f * DP + cols)[None, :]
                x = tl.where(row_ok[:, None], tl.maximum(x, 0.0), 0.0)
                tl.store(x_in + rows[:, None] * DP + cols[None, :], x, mask=row_ok[:, None])
                if HAS_MASK:
                    keep = tl.load(mask_ptr + jet * N + rows, mask=row_ok, other=0) != 0
                    x = tl.where(keep[:, None], x, 0.0)
            else:
                x = _rows(x_in, mask_ptr, jet, rows, N, DP, HAS_MASK, True)
            if SPAN > 0:
                c0 = start // CH
                a_row = a_ef * HPP + a_h * P + c0 + a_d  # row of E (a_ef 0) or F (1) in pe
                a_ok = (ra < 2 * SPAN * H) & (c0 + a_d < P)
                a = tl.load(pe_ptr + layer * 2 * HPP * N + a_row[:, None] * N + rows[None, :],
                            mask=a_ok[:, None] & row_ok[None, :], other=0.0)  # zero outside its partition
                z_at = z_jet + (layer * 2 * HPP + a_row)[:, None] * DP + cols[None, :]
                part = tl.dot(a, x, input_precision=PREC)
                tl.store(z_at, tl.load(z_at, mask=a_ok[:, None], other=0.0) + part, mask=a_ok[:, None])
                tl.debug_barrier()  # the next tile adds to rows other threads wrote
            else:
                pe_off = layer * 2 * HPP * N + hpr[:, None] * N + rows[None, :]
                ex += tl.dot(tl.load(pe_ptr + pe_off, mask=row_ok[None, :], other=0.0), x, input_precision=PREC)
                fx += tl.dot(tl.load(pe_ptr + HPP * N + pe_off, mask=row_ok[None, :], other=0.0), x,
                             input_precision=PREC)
        if SPAN > 0:
            z_layer = z_jet + (layer * 2 * HPP + hpr)[:, None] * DP + cols[None, :]
            ex = tl.load(z_layer)
            fx = tl.load(z_layer + HPP * DP)
        if layer == 0:
            tl.debug_barrier()  # later passes read rows other threads embedded
        # the per-jet small matrices: raw logits = x (KP W_q)^T, attention output = softmax · VO + b_o
        wk = tl.load(wk_ptr + layer * DP * DP + dd)
        kp = tl.where(head_mask, tl.dot(ex, wk, input_precision=PREC), 0.0)
        kpw_t = tl.trans(tl.dot(kp, tl.load(wq_ptr + layer * DP * DP + dd), input_precision=PREC))  # (DP, HPP)
        vp = tl.where(head_mask, tl.dot(fx, tl.load(wv_ptr + layer * DP * DP + dd), input_precision=PREC), 0.0)
        vo = tl.dot(vp, tl.load(wo_ptr + layer * DP * DP + dd), input_precision=PREC)  # (HPP, DP)
        bo = tl.load(bo_ptr + layer * DP + cols)
        conv_bias = tl.load(cb_ptr + layer)
        a1 = tl.load(dyt_ptr + layer * 4 + 0)
        c1 = tl.load(dyt_ptr + layer * 4 + 1)
        a2 = tl.load(dyt_ptr + layer * 4 + 2)
        c2 = tl.load(dyt_ptr + layer * 4 + 3)
        w1 = tl.load(w1_ptr + layer * DP * FFP + cols[:, None] * FFP + ffc[None, :])
        b1 = tl.load(b1_ptr + layer * FFP + ffc)
        w2 = tl.load(w2_ptr + layer * FFP * DP + ffc[:, None] * DP + cols[None, :])
        b2 = tl.load(b2_ptr + layer * DP + cols)

        if CONV:
            if layer == 0:
                # the zero rows above and below the jet, and up to the last row a tile reads: pad i < TOP is
                # row i, the others row N + i
                pad = tl.arange(0, PADS)
                pad_row = tl.where(pad < TOP, pad, N + pad)
                tl.store(l_jet + hpr[None, :] * LR + pad_row[:, None], tl.zeros((PADS, HPP), tl.float32),
                         mask=(pad < LR - N)[:, None])
            # pass 1b: raw logits of every particle, read back at shifted rows by the convolution
            for start in range(0, N, BLOCK_N):
                rows = start + ar
                x = _rows(x_in, mask_ptr, jet, rows, N, DP, HAS_MASK, True)
                raw = tl.dot(x, kpw_t, input_precision=PREC)
                tl.store(l_jet + hpr[None, :] * LR + (rows + TOP)[:, None], raw, mask=(rows < N)[:, None])
            tl.debug_barrier()

        # pass 2: per tile, convolved logits -> softmax per head -> attend -> DyT -> FFN -> DyT
        for start in range(0, N, BLOCK_N):
            rows = start + ar
            row_ok = rows < N
            if CONV:
                logits = tl.zeros((BLOCK_N, HPP), tl.float32) + conv_bias
                # unmasked: tile rows past the jet read zero rows (their results are dropped anyway)
                for r in tl.static_range(R):
                    line = l_jet + (rows + r)[:, None]
                    # column h·p + j takes column h·p + c of its own head: p multiply-adds, not H·p
                    for c in tl.static_range(P):
                        shifted = tl.load(line + ((head_col + c) * LR)[None, :])
                        logits += shifted * tl.load(mc_ptr + ((layer * R + r) * P + c) * HPP + hpr)[None, :]
            else:
                logits = tl.dot(_rows(x_in, mask_ptr, jet, rows, N, DP, HAS_MASK, True), kpw_t, input_precision=PREC)
            # softmax within each head's p columns, through this jet's scratch: column h·p + j reads its
            # head's p columns back, so no reduction crosses threads (shuffles cost more than the loads)
            tl.store(s_tile, logits)
            tl.debug_barrier()
            top = tl.load(s_head)
            for c in tl.static_range(1, P):
                top = tl.maximum(top, tl.load(s_head + c * BLOCK_N))
            e = _exp(logits - top, FAST)
            tl.store(s_tile + HPP * BLOCK_N, e)
            tl.debug_barrier()
            total = tl.load(s_head + HPP * BLOCK_N)
            for c in tl.static_range(1, P):
                total += tl.load(s_head + (HPP + c) * BLOCK_N)
            attn = tl.where(hp_ok[None, :], e * _recip(total, FAST), 0.0)

            x = _rows(x_in, mask_ptr, jet, rows, N, DP, HAS_MASK, False)
            o1 = _dyt(x + tl.dot(attn, vo, input_precision=PREC) + bo[None, :], a1, c1, col_ok, FAST)
            hidden = tl.maximum(tl.dot(o1, w1, input_precision=PREC) + b1[None, :], 0.0)
            o2 = _dyt(o1 + tl.dot(hidden, w2, input_precision=PREC) + b2[None, :], a2, c2, col_ok, FAST)

            if layer < BLOCKS - 1:
                x_out = xs_ptr + ((layer + 1) % 2) * jets * N * DP + jet * N * DP
                tl.store(x_out + rows[:, None] * DP + cols[None, :], o2, mask=row_ok[:, None])
            else:
                take = row_ok
                if HAS_MASK:
                    take = take & (tl.load(mask_ptr + jet * N + rows, mask=row_ok, other=0) != 0)
                count += take.to(tl.float32)
                if AGG == 0:
                    pooled = tl.maximum(pooled, tl.max(tl.where(take[:, None], o2, float("-inf")), axis=0))
                else:
                    pooled += tl.sum(tl.where(take[:, None], o2, 0.0), axis=0)
        if layer < BLOCKS - 1:
            tl.debug_barrier()  # the next block reads rows other threads wrote

    n_real = tl.sum(count, axis=0)
    if AGG == 0:
        pooled = tl.where(n_real > 0, pooled, 0.0)  # an empty jet pools to zero
    if AGG == 1:
        pooled = pooled / tl.maximum(n_real, 1.0)
    z = tl.where(col_ok, pooled, 0.0)
    for i in tl.static_range(HIDDEN):
        wh = tl.load(wh_ptr + i * DP * DP + dd)
        z = tl.maximum(tl.sum(z[:, None] * wh, axis=0) + tl.load(bh_ptr + i * DP + cols), 0.0)
    outs = tl.arange(0, CP)
    wout = tl.load(wout_ptr + cols[:, None] * CP + outs[None, :])
    logit = tl.sum(z[:, None] * wout, axis=0) + tl.load(bout_ptr + outs)
    tl.store(out_ptr + jet * C + outs, logit, mask=outs < C)
