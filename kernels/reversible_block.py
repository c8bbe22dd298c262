"""Triton kernels of the reversible block, registered as torch.ops.pyreversible_triton.

The two ops have the schemas and the semantics of their C++ twins in
csrc/torch/reversible_block.cpp:

- `reversible_block_fwd`: out = x + sign * shift (a forward addition or an inverse subtraction);
- `reversible_block_bwd`: x = y - shift and dx = dy + grad, both in one launch (the backward
  half-step of a block: one half's inverse subtraction, the other half's gradient addition).

Every operand is (B, M) with any strides; an output may be its first operand itself (updated in
place). Each program owns a tile of rows and features and does every term on it, so each
element is read and written once. float16 and bfloat16 add in float32 and round once.
"""

import contextlib

import torch
import triton
import triton.language as tl

_NAMESPACE = "pyreversible_triton"

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@triton.jit
def _reversible_block_term(
    a_ptr,
    c_ptr,
    out_ptr,
    rows,
    cols,
    mask,
    stride_a_b,
    stride_a_d,
    stride_c_b,
    stride_c_d,
    stride_out_b,
    stride_out_d,
    SIGN: tl.constexpr,
):
    # out = a + SIGN * c on one tile; float32 arithmetic for the 16-bit types
    a = tl.load(a_ptr + rows * stride_a_b + cols * stride_a_d, mask=mask)
    c = tl.load(c_ptr + rows * stride_c_b + cols * stride_c_d, mask=mask)
    if a.dtype != tl.float64:
        a = a.to(tl.float32)
        c = c.to(tl.float32)
    out = a + c if SIGN == 1 else a - c
    out_ptrs = out_ptr + rows * stride_out_b + cols * stride_out_d
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _reversible_block_fwd_kernel(
    # pointers: term 0 (out0 = a0 +- c0) and, when TWO_TERMS, term 1 (out1 = a1 + c1)
    a0_ptr,
    c0_ptr,
    out0_ptr,
    a1_ptr,
    c1_ptr,
    out1_ptr,
    # sizes
    batch,
    dim,
    # strides, in elements
    stride_a0_b,
    stride_a0_d,
    stride_c0_b,
    stride_c0_d,
    stride_out0_b,
    stride_out0_d,
    stride_a1_b,
    stride_a1_d,
    stride_c1_b,
    stride_c1_d,
    stride_out1_b,
    stride_out1_d,
    # SIGN0: +1 or -1 for term 0; a program covers BLOCK_B rows and BLOCK_D features
    SIGN0: tl.constexpr,
    TWO_TERMS: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    rows = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)[:, None]
    cols = (tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)[None, :]
    mask = (rows < batch) & (cols < dim)
    _reversible_block_term(
        a0_ptr,
        c0_ptr,
        out0_ptr,
        rows,
        cols,
        mask,
        stride_a0_b,
        stride_a0_d,
        stride_c0_b,
        stride_c0_d,
        stride_out0_b,
        stride_out0_d,
        SIGN0,
    )
    if TWO_TERMS:
        _reversible_block_term(
            a1_ptr,
            c1_ptr,
            out1_ptr,
            rows,
            cols,
            mask,
            stride_a1_b,
            stride_a1_d,
            stride_c1_b,
            stride_c1_d,
            stride_out1_b,
            stride_out1_d,
            1,
        )


def _device_guard(t):
    # launch on the tensor's GPU, not the current one
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _check(op, out, operands):
    if out.dim() != 2:
        raise ValueError(f"{op}: outputs must be (B, M), got shape {tuple(out.shape)}")
    if out.dtype not in _DTYPES:
        raise TypeError(f"{op}: unsupported dtype {out.dtype}")
    for name, t in operands.items():
        if t.shape != out.shape:
            raise ValueError(
                f"{op}: {name} must be {tuple(out.shape)} like its output, got {tuple(t.shape)}"
            )
        if t.device != out.device or t.dtype != out.dtype:
            raise TypeError(
                f"{op}: {name} has dtype {t.dtype} on {t.device}, its output {out.dtype} on "
                f"{out.device}"
            )


def _launch(terms, sign0):
    # terms: one or two (a, c, out) triples of (B, M) tensors
    out = terms[0][2]
    batch, dim = out.shape
    if batch == 0 or dim == 0:
        return
    block_d = min(1024, triton.next_power_of_2(dim))
    block_b = max(1, min(triton.next_power_of_2(batch), 4096 // block_d))
    grid = (triton.cdiv(batch, block_b), triton.cdiv(dim, block_d))
    second = terms[1] if len(terms) == 2 else terms[0]
    strides = [s for t in (*terms[0], *second) for s in t.stride()]
    with _device_guard(out):
        _reversible_block_fwd_kernel[grid](
            *terms[0],
            *second,
            batch,
            dim,
            *strides,
            SIGN0=sign0,
            TWO_TERMS=len(terms) == 2,
            BLOCK_B=block_b,
            BLOCK_D=block_d,
        )


@torch.library.custom_op(
    f"{_NAMESPACE}::reversible_block_fwd",
    mutates_args=("out",),
    schema="(Tensor x, Tensor shift, Tensor(a!) out, int sign) -> ()",
)
def reversible_block_fwd(x, shift, out, sign):
    op = "reversible_block_fwd"
    _check(op, out, {"x": x, "shift": shift})
    if sign not in (1, -1):
        raise ValueError(f"{op}: sign must be 1 or -1, got {sign}")
    _launch([(x, shift, out)], int(sign))


@torch.library.custom_op(
    f"{_NAMESPACE}::reversible_block_bwd",
    mutates_args=("x", "dx"),
    schema=("(Tensor y, Tensor shift, Tensor(a!) x, Tensor dy, Tensor grad, Tensor(b!) dx) -> ()"),
)
def reversible_block_bwd(y, shift, x, dy, grad, dx):
    op = "reversible_block_bwd"
    _check(op, x, {"y": y, "shift": shift, "dx": dx})
    _check(op, dx, {"dy": dy, "grad": grad})
    _launch([(y, shift, x), (dy, grad, dx)], -1)


@reversible_block_fwd.register_fake
def _(x, shift, out, sign):
    return None


@reversible_block_bwd.register_fake
def _(y, shift, x, dy, grad, dx):
    return None
