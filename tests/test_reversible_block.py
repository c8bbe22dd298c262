"""The reversible block's fused elementwise ops: every backend against the reference."""

import pytest
import torch
from helpers import BACKENDS, DEVICE, DTYPES, strided
from torch import nn

import pyreversible
from pyreversible import ops, reference
from pyreversible.ops.reversible_block import _NAMESPACE, _kernels, halves
from pyreversible.reference.reversible_block import reversible_block_bwd as reference_bwd
from pyreversible.reference.reversible_block import reversible_block_fwd as reference_fwd

# (batch, features of one half): 1, 3, 129 rows; 1, 5, 4100 (past one CPU chunk) features
SHAPES = [(1, 1), (3, 5), (129, 7), (2, 4100)]


def exact(actual, expected):
    # one addition or subtraction, rounded once, is the same in every backend
    torch.testing.assert_close(actual, expected, atol=0, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("sign", [1, -1])
def test_fwd_matches_reference(backend, dtype, shape, sign):
    x = torch.randn(*shape, dtype=dtype, device=DEVICE)
    shift = torch.randn(*shape, dtype=dtype, device=DEVICE)
    out = torch.empty_like(x)
    with pyreversible.use_backend(backend):
        ops.reversible_block_fwd(x, shift, out, sign)
    exact(out, reference_fwd(x, shift, sign))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_bwd_matches_reference_in_place_on_halves(backend, dtype, shape):
    batch, dim = shape
    # y and dy are (B, 2, M) buffers: x overwrites y's half 1 and dx dy's half 0 in place
    y = torch.randn(batch, 2, dim, dtype=dtype, device=DEVICE)
    dy = torch.randn(batch, 2, dim, dtype=dtype, device=DEVICE)
    shift, grad = strided(torch.randn_like(y[:, 0])), strided(torch.randn_like(y[:, 0]))
    want_x, want_dx = reference_bwd(y[:, 1], shift, dy[:, 0], grad)
    untouched_y, untouched_dy = y[:, 0].clone(), dy[:, 1].clone()
    with pyreversible.use_backend(backend):
        ops.reversible_block_bwd(y[:, 1], shift, y[:, 1], dy[:, 0], grad, dy[:, 0])
    exact(y[:, 1], want_x)
    exact(dy[:, 0], want_dx)
    exact(y[:, 0], untouched_y)
    exact(dy[:, 1], untouched_dy)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bwd_out_of_place_strided_and_expanded(backend):
    y = strided(torch.randn(5, 9, device=DEVICE))
    shift = torch.randn(9, 5, device=DEVICE).t()
    dy = torch.ones(1, 1, device=DEVICE).expand(5, 9)
    grad = strided(torch.randn(5, 9, device=DEVICE))
    x, dx = torch.empty(5, 9, device=DEVICE), torch.empty(5, 9, device=DEVICE)
    with pyreversible.use_backend(backend):
        ops.reversible_block_bwd(y, shift, x, dy, grad, dx)
    exact(x, y - shift)
    exact(dx, dy + grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_is_a_no_op(backend):
    x = torch.empty(0, 4, device=DEVICE)
    with pyreversible.use_backend(backend):
        ops.reversible_block_fwd(x, x, x)
        ops.reversible_block_bwd(x, x, x, x, x, x)


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_block_forward_and_inverse_without_grad(backend):
    f, g = nn.Linear(3, 3).to(DEVICE).double(), nn.Linear(3, 3).to(DEVICE).double()
    x = torch.randn(4, 6, dtype=torch.float64, device=DEVICE)
    with pyreversible.use_backend(backend), torch.no_grad():
        y = ops.reversible_block(x, f, g)
        back = ops.reversible_block_inverse(y, f, g)
    torch.testing.assert_close(y, reference.reversible_block(x, f, g), atol=0, rtol=0)
    torch.testing.assert_close(back, x, atol=1e-14, rtol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_dtypes_promote_like_torch(backend):
    # F's output under autocast is bfloat16 while the buffer is float32
    x = torch.randn(3, 5, device=DEVICE)
    shift = torch.randn(3, 5, device=DEVICE).bfloat16()
    out = torch.empty_like(x)
    with pyreversible.use_backend(backend):
        ops.reversible_block_fwd(x, shift, out)
    exact(out, x + shift)


def test_halves_are_views_of_a_contiguous_buffer():
    buf = torch.randn(3, 4, 2, 2, device=DEVICE)
    first, second = halves(buf)
    assert first.shape == (3, 8) and first.data_ptr() == buf.data_ptr()
    assert second.data_ptr() == buf[:, 2:].data_ptr()


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend):
    kernels = _kernels(backend)
    x, shift = torch.randn(3, 5, device=DEVICE), torch.randn(3, 5, device=DEVICE)
    torch.library.opcheck(kernels.reversible_block_fwd, (x, shift, torch.empty_like(x), -1))
    y, dy, grad = (torch.randn(3, 5, device=DEVICE) for _ in range(3))
    torch.library.opcheck(
        kernels.reversible_block_bwd,
        (y, shift, torch.empty_like(y), dy, grad, torch.empty_like(y)),
    )
    assert _NAMESPACE[backend] in str(kernels)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input(backend):
    x = torch.randn(3, 5, device=DEVICE)
    with pyreversible.use_backend(backend):
        with pytest.raises(ValueError, match="reversible_block_fwd: shift must have the output"):
            ops.reversible_block_fwd(x, torch.randn(3, 4, device=DEVICE), x)
        with pytest.raises(ValueError, match="reversible_block_fwd: sign must be 1 or -1"):
            ops.reversible_block_fwd(x, x, x, sign=2)
        with pytest.raises(ValueError, match="reversible_block_bwd: outputs must be"):
            ops.reversible_block_bwd(x, x, torch.randn(3, device=DEVICE), x, x, x)
        with pytest.raises(TypeError, match="reversible_block_bwd: grad must be a torch.Tensor"):
            ops.reversible_block_bwd(x, x, x, x, None, x)
    with pytest.raises(ValueError, match="even size along dim 1"):
        ops.reversible_block(torch.randn(2, 3, device=DEVICE), nn.Identity(), nn.Identity())
    with pytest.raises(ValueError, match="f must return a tensor shaped like its input"):
        with torch.no_grad():
            ops.reversible_block(torch.randn(2, 4, device=DEVICE), nn.Linear(2, 3), nn.Identity())


@pytest.mark.parametrize("backend", BACKENDS)
def test_kernel_checks_its_arguments(backend):
    kernels = _kernels(backend)
    x = torch.randn(3, 5, device=DEVICE)
    with pytest.raises((ValueError, RuntimeError), match="sign must be 1 or -1"):
        kernels.reversible_block_fwd(x, x, x, 0)
    with pytest.raises((TypeError, RuntimeError), match="dtype"):
        kernels.reversible_block_fwd(x, x.double(), x, 1)
    with pytest.raises((ValueError, RuntimeError), match="like its output"):
        kernels.reversible_block_fwd(x, x[:, :4], x, 1)
