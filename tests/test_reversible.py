"""ReversibleBlock and ReversibleSequential: memory-efficient training equals ordinary autograd.

Every test builds the same blocks twice (memory_efficient True and False, deep copies) and
compares outputs, input gradients, parameter gradients and buffers after the same step.

Error bound of the memory-efficient gradients. The backward reconstructs each block's input
from its output: x1 = y1 - F(x2) rounds to within eps * (|y1| + |F(x2)|) of the forward's x1,
and that error reaches the blocks before it through F and G, each step multiplying it by at
most (1 + Lip F)(1 + Lip G). With F and G of small Lipschitz constant (weights scaled by
0.3 / sqrt(C) below) the growth over n blocks stays near linear, and the gradients differ from
ordinary autograd's by a few eps * n relative to their size; the bound used is
rtol = 20 * n * eps(dtype) of each gradient's largest entry (for 64 float32 blocks, 1.5e-4),
which passed with the observed errors 5-50x below it.
"""

import copy
import os
import tempfile
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import BACKENDS, DEVICE
from torch import nn

import pyreversible
from pyreversible.nn import ReversibleBlock, ReversibleSequential


def mlp(channels, hidden, dropout=0.0, norm=False):
    layers = [nn.Linear(channels, hidden)]
    if norm:
        layers.append(nn.BatchNorm1d(hidden))
    layers.append(nn.Tanh())
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(hidden, channels))
    with torch.no_grad():
        for layer in layers:
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(0.3)
    return nn.Sequential(*layers)


def pair(depth, channels=6, hidden=10, dtype=torch.float32, **kwargs):
    """The same blocks as a memory-efficient and an ordinary sequence."""
    blocks = [
        ReversibleBlock(mlp(channels, hidden, **kwargs), mlp(channels, hidden, **kwargs))
        for _ in range(depth)
    ]
    efficient = ReversibleSequential(*blocks).to(DEVICE, dtype)
    ordinary = copy.deepcopy(efficient)
    ordinary.memory_efficient = False
    return efficient, ordinary


def loss_of(y):
    # a loss whose cotangent differs per element
    return (y * torch.linspace(-1, 1, y.numel(), device=y.device, dtype=y.dtype).view_as(y)).sum()


def step(model, x, seed=1, **autocast):
    x = x.detach().clone().requires_grad_(x.requires_grad)
    torch.manual_seed(seed)
    if autocast:
        with torch.autocast(**autocast):
            y = model(x)
    else:
        y = model(x)
    loss_of(y).backward()
    return y, x.grad


def assert_grads_close(a, b, rtol):
    # relative to each gradient's largest entry, or to 1% of the model's largest one for a
    # gradient that is zero up to rounding (a bias followed by batch norm)
    pairs = list(zip(a.named_parameters(), b.named_parameters(), strict=True))
    largest = max((q.grad.abs().max() for _, (_, q) in pairs if q.grad is not None), default=0)
    for (name, p), (_, q) in pairs:
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            scale = torch.maximum(q.grad.abs().max(), 0.01 * largest).clamp_min(1e-30)
            assert (p.grad - q.grad).abs().max() <= rtol * scale, name


def rtol_for(depth, dtype):
    return 20 * depth * torch.finfo(dtype).eps


# every backend at depths 1, 8 and 64, except the interpreted Triton kernels at 64 (slow;
# depth 8 runs them through a sequence already)
DEPTHS = [
    (backend, depth)
    for backend in ["reference", *BACKENDS]
    for depth in (1, 8, 64)
    if not (backend == "triton" and DEVICE == "cpu" and depth == 64)
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend, depth", DEPTHS)
def test_gradients_equal_ordinary_autograd(backend, dtype, depth):
    efficient, ordinary = pair(depth, dtype=dtype)
    x = torch.randn(5, 12, device=DEVICE, dtype=dtype, requires_grad=True)
    with pyreversible.use_backend(backend):
        y, dx = step(efficient, x)
    y_ref, dx_ref = step(ordinary, x)
    rtol = rtol_for(depth, dtype)
    torch.testing.assert_close(y, y_ref)
    assert (dx - dx_ref).abs().max() <= rtol * dx_ref.abs().max()
    assert_grads_close(efficient, ordinary, rtol)


def test_keeps_only_the_output_whatever_the_depth():
    saved = {}
    for depth in (2, 16):
        efficient, ordinary = pair(depth, channels=8, hidden=8)
        for model in (efficient, ordinary):
            sizes = []

            def pack(t, sizes=sizes):
                sizes.append(t.numel() * t.element_size())
                return t

            x = torch.randn(4, 16, device=DEVICE, requires_grad=True)
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                model(x)
            saved[depth, model.memory_efficient] = sum(sizes)
    # memory-efficient: one (4, 16) float32 output, at any depth; ordinary grows with depth
    assert saved[2, True] == saved[16, True] == 4 * 16 * 4
    assert saved[16, False] > 7 * saved[2, False]


def test_dropout_recomputes_the_same_mask():
    efficient, ordinary = pair(8, dropout=0.5)
    x = torch.randn(6, 12, device=DEVICE, requires_grad=True)
    y, dx = step(efficient, x, seed=7)
    after_efficient = torch.get_rng_state()
    y_ref, dx_ref = step(ordinary, x, seed=7)
    # the backward leaves the generator where the forward left it, as ordinary autograd does
    assert torch.equal(after_efficient, torch.get_rng_state())
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(dx, dx_ref, atol=1e-5, rtol=1e-5)
    assert_grads_close(efficient, ordinary, rtol_for(8, torch.float32))


def test_batch_norm_buffers_are_updated_once():
    efficient, ordinary = pair(8, norm=True)
    x = torch.randn(6, 12, device=DEVICE, requires_grad=True)
    for seed in (1, 2):
        y, dx = step(efficient, x, seed)
        y_ref, dx_ref = step(ordinary, x, seed)
    torch.testing.assert_close(dx, dx_ref, atol=1e-5, rtol=1e-5)
    assert_grads_close(efficient, ordinary, rtol_for(8, torch.float32))
    for (name, b), (_, b_ref) in zip(
        efficient.named_buffers(), ordinary.named_buffers(), strict=True
    ):
        # updated once: equal up to the rounding of F and G's matmuls on other strides
        torch.testing.assert_close(b, b_ref, msg=name)
    assert efficient.blocks[0].f[1].num_batches_tracked.item() == 2


def test_input_without_grad_and_frozen_parameters():
    efficient, ordinary = pair(8)
    x = torch.randn(5, 12, device=DEVICE)
    _, dx = step(efficient, x)
    step(ordinary, x)
    assert dx is None
    assert_grads_close(efficient, ordinary, rtol_for(8, torch.float32))

    # only the input requires grad
    efficient.requires_grad_(False)
    ordinary.requires_grad_(False)
    x.requires_grad_()
    _, dx = step(efficient, x)
    _, dx_ref = step(ordinary, x)
    torch.testing.assert_close(dx, dx_ref, atol=1e-5, rtol=1e-5)


def test_autograd_grad_leaves_dot_grad_alone():
    efficient, ordinary = pair(8)
    x = torch.randn(5, 12, device=DEVICE, requires_grad=True)
    params = list(efficient.parameters())
    got = torch.autograd.grad(loss_of(efficient(x)), [x, *params])
    expected = torch.autograd.grad(loss_of(ordinary(x)), [x, *ordinary.parameters()])
    assert all(p.grad is None for p in params)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def test_shared_modules_accumulate_their_gradients():
    f, g = mlp(6, 10), mlp(6, 10)
    efficient = ReversibleSequential(*[ReversibleBlock(f, g) for _ in range(4)]).to(DEVICE)
    ordinary = copy.deepcopy(efficient)
    ordinary.memory_efficient = False
    x = torch.randn(5, 12, device=DEVICE, requires_grad=True)
    step(efficient, x)
    step(ordinary, x)
    assert_grads_close(efficient, ordinary, rtol_for(4, torch.float32))


def test_autocast_bfloat16_on_cpu():
    efficient, ordinary = pair(8, channels=16, hidden=32)
    efficient.cpu()
    ordinary.cpu()
    x = torch.randn(8, 32, requires_grad=True)
    y, dx = step(efficient, x, device_type="cpu", dtype=torch.bfloat16)
    y_ref, dx_ref = step(ordinary, x, device_type="cpu", dtype=torch.bfloat16)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, y_ref)
    # F and G recompute in bfloat16 on inputs reconstructed in float32; their outputs round the
    # same way as in the forward, so the gradients agree to float32 rounding, far closer than
    # a float32 recomputation of F and G would (bfloat16 rounding, ~4e-3 relative)
    torch.testing.assert_close(dx, dx_ref, atol=1e-5, rtol=1e-4)
    assert_grads_close(efficient, ordinary, 1e-4)


def test_torch_compile_of_a_model_containing_the_sequence():
    torch._dynamo.reset()
    efficient, ordinary = pair(4)
    head = nn.Linear(12, 12).to(DEVICE)
    model = nn.Sequential(copy.deepcopy(head), efficient, nn.Tanh())
    reference_model = nn.Sequential(copy.deepcopy(head), ordinary, nn.Tanh())
    compiled = torch.compile(model)
    x = torch.randn(5, 12, device=DEVICE, requires_grad=True)
    for _ in range(2):
        model.zero_grad()
        reference_model.zero_grad()
        y, dx = step(compiled, x)
        y_ref, dx_ref = step(reference_model, x)
        torch.testing.assert_close(y, y_ref, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(dx, dx_ref, atol=1e-5, rtol=1e-5)
        assert_grads_close(model, reference_model, rtol_for(4, torch.float32) * 10)


def test_torch_compile_fullgraph_of_the_ordinary_sequence():
    # memory_efficient=False is plain autograd over the blocks: it compiles without breaks
    torch._dynamo.reset()
    _, ordinary = pair(2)
    x = torch.randn(5, 12, device=DEVICE)
    # aot_eager: dynamo's capture of the whole forward and AOT autograd's trace of the
    # backward are what fullgraph checks; inductor's code generation is the other test's
    compiled = torch.compile(ordinary, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), ordinary(x), atol=1e-6, rtol=1e-6)


def test_torch_compile_fullgraph_of_the_memory_efficient_sequence_is_refused():
    # the memory-efficient stack is one autograd node whose backward calls autograd itself:
    # dynamo is told not to trace it, so fullgraph=True stops there with dynamo's own error
    torch._dynamo.reset()
    efficient, _ = pair(2)
    x = torch.randn(5, 12, device=DEVICE, requires_grad=True)
    compiled = torch.compile(efficient, fullgraph=True, backend="aot_eager")
    with pytest.raises(torch._dynamo.exc.Unsupported):
        compiled(x)


def _ddp_worker(rank, world_size, path, state, x, cotangent):
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        model, _ = pair(4)
        model.load_state_dict(state)
        ddp = nn.parallel.DistributedDataParallel(model)
        shard, cotangent = x.chunk(world_size)[rank], cotangent.chunk(world_size)[rank]
        # the mean over the whole batch, split over the processes: DDP averages the gradients
        ((ddp(shard) * cotangent).sum() * world_size / x.shape[0]).backward()
        grads = [p.grad for p in model.parameters()]
        torch.save(grads, f"{path}.grads{rank}")
        # DDP's reducer goes first, while the group it holds is still registered. Were it the
        # last owner, the group's destructor would run under the GIL in the reducer's
        # deallocation and wait for gloo's worker thread, which may need the GIL to free its
        # last allreduce: a deadlock that hung this test about one run in three (torch 2.13).
        del ddp
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(DEVICE != "cpu", reason="the DDP test runs gloo on CPU processes")
@pytest.mark.skipif(not dist.is_available(), reason="torch built without torch.distributed")
def test_ddp_gloo_two_processes_equal_one_process():
    model, _ = pair(4)
    x, cotangent = torch.randn(8, 12), torch.randn(8, 12)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "rendezvous")
        args = (2, path, model.state_dict(), x, cotangent)
        workers = mp.spawn(_ddp_worker, args=args, nprocs=2, join=False)
        # a hang fails the test instead of stalling the run
        deadline = time.monotonic() + 120
        while not workers.join(timeout=1):
            if time.monotonic() > deadline:
                for process in workers.processes:
                    process.kill()
                pytest.fail("the DDP workers did not finish within 120 s")
        per_rank = [torch.load(f"{path}.grads{r}") for r in range(2)]
    ((model(x) * cotangent).sum() / x.shape[0]).backward()
    for p, g0, g1 in zip(model.parameters(), *per_rank, strict=True):
        # each parameter's gradient was reduced once: every process holds the same sum
        torch.testing.assert_close(g0, g1, atol=0, rtol=0)
        torch.testing.assert_close(g0, p.grad, atol=1e-6, rtol=1e-5)


class Drifting(nn.Module):
    """A non-invertible f: its output scales with a counter that changes on every call, so the
    backward's recomputation is another function than the forward's."""

    def __init__(self, channels):
        super().__init__()
        self.linear = nn.Linear(channels, channels)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.calls * self.linear(x)


def test_drift_check_fires_with_the_block_index():
    blocks = [ReversibleBlock(mlp(6, 10), mlp(6, 10)) for _ in range(6)]
    blocks[3].f = Drifting(6)
    model = ReversibleSequential(*blocks, check_reconstruction=True).to(DEVICE)
    x = torch.randn(5, 12, device=DEVICE, requires_grad=True)
    with pytest.raises(RuntimeError, match="input of block 3 was reconstructed"):
        loss_of(model(x)).backward()


def test_drift_check_stays_quiet_on_invertible_blocks():
    efficient, ordinary = pair(64)
    efficient.check_reconstruction = True
    x = torch.randn(5, 12, device=DEVICE, requires_grad=True)
    _, dx = step(efficient, x)
    _, dx_ref = step(ordinary, x)
    assert (dx - dx_ref).abs().max() <= rtol_for(64, torch.float32) * dx_ref.abs().max()


def test_drift_check_fires_on_overflow():
    # F(x2) ~ 1e38 swamps x1 in y1 = x1 + F(x2) (or overflows), so y1 - F(x2) is not x1
    blocks = [ReversibleBlock(nn.Linear(4, 4), nn.Linear(4, 4)) for _ in range(2)]
    model = ReversibleSequential(*blocks, check_reconstruction=True).to(DEVICE)
    with torch.no_grad():
        blocks[1].f.weight.fill_(1e38)
    x = torch.randn(3, 8, device=DEVICE, requires_grad=True)
    with pytest.raises(RuntimeError, match="block 1"):
        model(x).sum().backward()


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_block_and_sequence_invert(backend):
    model, _ = pair(8, dtype=torch.float64)
    x = torch.randn(3, 12, device=DEVICE, dtype=torch.float64)
    with pyreversible.use_backend(backend), torch.no_grad():
        y = model(x)
        torch.testing.assert_close(model.inverse(y), x, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(model.blocks[0].inverse(model.blocks[0](x)), x)


def test_image_shaped_and_strided_inputs():
    blocks = [
        ReversibleBlock(nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1))
        for _ in range(3)
    ]
    efficient = ReversibleSequential(*blocks).to(DEVICE, torch.float64)
    ordinary = copy.deepcopy(efficient)
    ordinary.memory_efficient = False
    base = torch.randn(3, 4, 5, 12, device=DEVICE, dtype=torch.float64)
    x = base[..., ::2].requires_grad_()
    y, dx = step(efficient, x)
    y_ref, dx_ref = step(ordinary, x)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(dx, dx_ref)
    assert_grads_close(efficient, ordinary, 1e-12)


def test_bad_input():
    model, _ = pair(2)
    with pytest.raises(ValueError, match="even size along dim 1"):
        model(torch.randn(3, 11, device=DEVICE))
    with pytest.raises(TypeError, match="block 0 must be a ReversibleBlock"):
        ReversibleSequential(nn.Linear(2, 2))
    bad = ReversibleSequential(ReversibleBlock(nn.Linear(6, 5), nn.Linear(6, 6))).to(DEVICE)
    with pytest.raises(ValueError, match="f of block 0 must return a tensor shaped like"):
        bad(torch.randn(3, 12, device=DEVICE, requires_grad=True))
