"""The fused generation step: every backend's wavenet_step and wavenet_generate against the
reference, logits, samples and the queue, and the bad inputs that must raise.

Samples are compared with a tie-aware rule. A backend's logits differ from the reference's by
rounding (float32: ~1e-6 relative, from other summation orders and the vectorised exp/tanh), so
its CDF does too, and a uniform number that falls within that distance of a CDF value may land
on the neighbouring class. With O(1) logits the chance of that is about C * 1e-7 per draw, so
the tests below (a few hundred float32 draws) essentially never meet one; where one happens, the
check accepts it only if every CDF value between the two classes is within 1e-5 of u (float64:
1e-12), and the comparison goes on from the backend's own sample: the reference is run step by
step on the backend's samples (teacher forcing), so one tie does not derail the rest.
"""

import pytest
import torch
from helpers import BACKENDS, DEVICE, assert_close

from pyreversible import ops, use_backend
from pyreversible.ops.wavenet_step import _BACKENDS
from pyreversible.reference.sampling import inverse_cdf_sample
from pyreversible.reference.wavenet_step import new_queue, pack_weights
from pyreversible.reference.wavenet_step import wavenet_step as reference_step

STEP_BACKENDS = [b for b in BACKENDS if b in _BACKENDS.get(DEVICE, ())]

# how far u may be from the reference CDF for a backend's sample to differ from the reference's
# (float16: the reference rounds every layer to 11 bits while the kernels keep float32 sums, so
# the logits, and the CDF with them, differ by up to the float16 tolerance)
TIE = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 5e-2}

# (B, C, R, G, S, K, dilations, cond, temperature): batch 1, 5, 9 and 16 (2 threads on a 2-core
# machine: 9 gives them 5 and 4 rows, past the tiles of up to 3 rows; 16 gives them 8, a tile of
# 6 rows and one of 2 with AVX-512), K 1, 2 and 3, odd sizes
# that leave vector tails (R 9, 2G 34), widths past a 64-column panel with tails (2G 72, S 66,
# C 70), with and without conditioning, temperature != 1.
CASES = [
    (1, 16, 8, 8, 12, 2, [1, 2, 4], False, 1.0),
    (5, 13, 5, 3, 7, 3, [1, 3], True, 0.7),
    (1, 11, 9, 17, 10, 3, [2, 1], True, 1.3),
    (9, 70, 20, 36, 66, 2, [1, 2, 4, 8], False, 1.0),
    (2, 7, 4, 4, 6, 1, [1, 1], True, 2.0),
    (16, 70, 20, 36, 66, 2, [1, 2], True, 1.0),
]
CASE_IDS = [
    "B{}-C{}-R{}-G{}-S{}-K{}-d{}-cond{}-T{}".format(*c[:6], len(c[6]), *c[7:]) for c in CASES
]


def network(case, dtype):
    """Packed weights scaled as PyTorch's initialisation, so that z and the logits are O(1)."""
    _, classes, residual, gate, skip, taps, dilations, _, _ = case

    def randn(*shape, scale):
        return scale * torch.randn(*shape, dtype=dtype, device=DEVICE)

    layers = len(dilations)
    return pack_weights(
        randn(classes, residual, scale=1.0),
        [randn(2 * gate, residual, taps, scale=(residual * taps) ** -0.5) for _ in range(layers)],
        [randn(2 * gate, scale=0.1) for _ in range(layers)],
        [randn(residual, gate, scale=gate**-0.5) for _ in range(layers)],
        [randn(residual, scale=0.1) for _ in range(layers)],
        [randn(skip, gate, scale=gate**-0.5) for _ in range(layers)],
        [randn(skip, scale=0.1) for _ in range(layers)],
        randn(skip, skip, scale=skip**-0.5),
        randn(skip, scale=0.1),
        randn(classes, skip, scale=2 * skip**-0.5),
        randn(classes, scale=0.1),
    )


def inputs(case, dtype, steps, position):
    """x, uniform (steps, B), a queue (random past inputs unless position is 0) and cond."""
    batch, classes, residual, gate, _, taps, dilations, has_cond, _ = case
    x = torch.randint(0, classes, (batch,), device=DEVICE)
    uniform = torch.rand(steps, batch, device=DEVICE)
    queue = new_queue(batch, residual, taps, dilations, dtype=dtype, device=DEVICE)
    if position > 0:
        queue.normal_()
    cond = None
    if has_cond:
        cond = 0.3 * torch.randn(steps, batch, len(dilations), 2 * gate, dtype=dtype, device=DEVICE)
    return x, uniform, queue, cond


def check_samples(samples, logits, uniform, temperature):
    """samples equal the reference's draw from `logits`, except at CDF ties (module docstring)."""
    expected = inverse_cdf_sample(logits, uniform, temperature)
    for row in torch.nonzero(samples != expected).flatten().tolist():
        compute = torch.float64 if logits.dtype == torch.float64 else torch.float32
        cdf = torch.softmax(logits[row].to(compute) / temperature, -1).cumsum(-1)
        lo, hi = sorted((int(samples[row]), int(expected[row])))
        gap = (cdf[lo:hi] - uniform[row].to(compute)).abs().max().item()
        assert gap < TIE[logits.dtype], (
            f"row {row}: sample {int(samples[row])}, reference {int(expected[row])}, u "
            f"{uniform[row].item()} is {gap} from the CDF between them"
        )


def teacher_forced(samples, x, uniform, queue, position, weights, dilations, temperature, cond):
    """The reference run step by step on a backend's samples: per step its logits, and the
    queue after the last step. On one thread: its ops are tiny, and on a busy machine each
    OpenMP region they open costs milliseconds of spinning."""
    queue = queue.clone()
    logits = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for step in range(uniform.shape[0]):
            step_cond = None if cond is None else cond[step]
            _, step_logits = reference_step(
                x, uniform[step], queue, position + step, weights, dilations, temperature, step_cond
            )
            logits.append(step_logits)
            x = samples[step]
    finally:
        torch.set_num_threads(threads)
    return logits, queue


def dtypes_of(backend):
    # the CUDA C++ kernel takes float32 and float16 weights; the others float32 and float64
    if DEVICE == "cuda" and backend == "cpp":
        return [torch.float32, torch.float16]
    return [torch.float32, torch.float64]


def step_params():
    # the Triton interpreter runs one program (batch row) at a time in Python: batch 9 is left
    # to the compiled C++
    return [
        pytest.param(case, dtype, backend, id=f"{ident}-{str(dtype)[6:]}-{backend}")
        for backend in STEP_BACKENDS
        for case, ident in zip(CASES, CASE_IDS, strict=True)
        for dtype in dtypes_of(backend)
        if not (backend == "triton" and DEVICE == "cpu" and case[0] > 5)
    ]


@pytest.mark.parametrize(("case", "dtype", "backend"), step_params())
def test_step_matches_reference(case, dtype, backend):
    dilations, temperature = case[6], case[8]
    weights = network(case, dtype)
    # position 7 with a random queue: every ring buffer has wrapped and is read at an offset
    x, uniform, queue, cond = inputs(case, dtype, 1, 7)
    expected_queue = queue.clone()
    step_cond = None if cond is None else cond[0]
    _, expected_logits = reference_step(
        x, uniform[0], expected_queue, 7, weights, dilations, temperature, step_cond
    )
    with use_backend(backend):
        samples, logits = ops.wavenet_step(
            x, uniform[0], queue, 7, weights, dilations, temperature, step_cond
        )
    assert samples.dtype == torch.long and logits.dtype == dtype
    assert_close(logits, expected_logits)
    check_samples(samples, expected_logits, uniform[0], temperature)
    assert_close(queue, expected_queue)


def generate_params():
    # every case, dtype and start on the compiled C++; the Triton interpreter runs one program at
    # a time in Python, so there it takes the batch-1 cases in float32 only (the step test above
    # has every case up to batch 5 on it); on a GPU Triton takes every case
    params = []
    for backend in STEP_BACKENDS:
        for index, case in enumerate(CASES):
            for dtype in dtypes_of(backend):
                for position in (0, 5):
                    if (
                        backend == "triton"
                        and DEVICE == "cpu"
                        and (case[0] > 1 or dtype != torch.float32)
                    ):
                        continue
                    ident = f"{CASE_IDS[index]}-{str(dtype)[6:]}-t{position}-{backend}"
                    params.append(pytest.param(case, dtype, backend, position, id=ident))
    return params


@pytest.mark.parametrize(("case", "dtype", "backend", "position"), generate_params())
def test_generate_matches_reference(case, dtype, backend, position):
    dilations, temperature = case[6], case[8]
    weights = network(case, dtype)
    # 12 steps: longer than every ring buffer (8 rows at most), so each wraps
    x, uniform, queue, cond = inputs(case, dtype, 12, position)
    start = queue.clone()
    with use_backend(backend):
        samples = ops.wavenet_generate(
            x, uniform, queue, position, weights, dilations, temperature, cond
        )
    assert samples.shape == uniform.shape and samples.dtype == torch.long
    logits, expected_queue = teacher_forced(
        samples, x, uniform, start, position, weights, dilations, temperature, cond
    )
    for step, step_logits in enumerate(logits):
        check_samples(samples[step], step_logits, uniform[step], temperature)
    assert_close(queue, expected_queue)


@pytest.mark.parametrize("backend", STEP_BACKENDS)
def test_generate_equals_repeated_steps(backend):
    # N steps in one call and N calls of one step are the same computation
    case = CASES[2]
    dilations, temperature = case[6], case[8]
    weights = network(case, torch.float32)
    x, uniform, queue, cond = inputs(case, torch.float32, 9, 3)
    stepped = queue.clone()
    with use_backend(backend):
        samples = ops.wavenet_generate(x, uniform, queue, 3, weights, dilations, temperature, cond)
        prev = x
        for step in range(9):
            prev, _ = ops.wavenet_step(
                prev, uniform[step], stepped, 3 + step, weights, dilations, temperature, cond[step]
            )
            assert torch.equal(prev, samples[step])
    torch.testing.assert_close(queue, stepped, atol=0, rtol=0)


def small_call(dtype=torch.float32, batch=2, position=3):
    """(x, uniform, queue, position, weights, dilations, temperature, cond) of a small network."""
    case = (batch, 13, 5, 3, 7, 2, [1, 2], True, 0.9)
    weights = network(case, dtype)
    x, uniform, queue, cond = inputs(case, dtype, 1, position)
    return x, uniform[0], queue, position, weights, case[6], case[8], cond[0]


def compiled_ops():
    """The op namespaces of the compiled backends, for calls that skip the ops layer's checks."""
    namespaces = [torch.ops.pyreversible] if "cpp" in STEP_BACKENDS else []
    if "triton" in STEP_BACKENDS:
        import pyreversible.kernels.wavenet_step  # noqa: F401  (registers the Triton ops)

        namespaces.append(torch.ops.pyreversible_triton)
    return namespaces


@pytest.mark.parametrize("bad", [-1, 13])
def test_class_index_out_of_range_raises(bad):
    x, uniform, queue, position, weights, dilations, temperature, cond = small_call()
    x[1] = bad
    before = queue.clone()
    with pytest.raises(ValueError, match="wavenet_step: x holds class indices"):
        ops.wavenet_step(x, uniform, queue, position, weights, dilations, temperature, cond)
    # past the Python checks, straight to each compiled op: the C++ CPU kernel itself refuses
    # the index before it reads the embedding or writes the queue (the CUDA op checks x before
    # its launch, the Triton op in Python)
    for namespace in compiled_ops():
        with pytest.raises(ValueError, match="class ind"):
            namespace.wavenet_step(
                x, uniform, queue, position, weights, dilations, temperature, cond
            )
        with pytest.raises(ValueError, match="class ind"):
            namespace.wavenet_generate(
                x, uniform[None], queue, position, weights, dilations, temperature, cond[None]
            )
    torch.testing.assert_close(queue, before, atol=0, rtol=0)
    # at position 0 the input is zeros and x is not read: any value passes
    x, uniform, queue, _, weights, dilations, temperature, cond = small_call(position=0)
    x[0] = bad
    ops.wavenet_step(x, uniform, queue, 0, weights, dilations, temperature, cond)


def test_bad_arguments_raise():
    x, uniform, queue, position, weights, dilations, temperature, cond = small_call()
    args = dict(
        x=x,
        uniform=uniform,
        queue=queue,
        position=position,
        weights=weights,
        dilations=dilations,
        temperature=temperature,
        cond=cond,
    )
    bad = [
        ("queue", queue[:1], "a queue belongs to one batch size"),
        ("weights", weights[:-1], "weights has"),
        ("dilations", [1], "weights has"),
        ("dilations", [1, 0], "dilations"),
        ("uniform", uniform[:1], "uniform"),
        ("cond", cond[:, :1], "cond"),
        ("position", -1, "position"),
        ("temperature", 0.0, "temperature"),
        ("x", x.float(), "x must be"),
    ]
    for name, value, message in bad:
        call = {**args, name: value}
        with pytest.raises((ValueError, TypeError), match=message):
            ops.wavenet_step(**call)
        for namespace in compiled_ops():
            with pytest.raises((ValueError, TypeError), match=message):
                namespace.wavenet_step(*call.values())
    with pytest.raises(ValueError, match="uniform"):
        ops.wavenet_generate(**{**args, "uniform": uniform, "cond": cond[None]})


@pytest.mark.skipif(not compiled_ops(), reason="pyreversible._C did not load on this device")
def test_opcheck():
    x, uniform, queue, position, weights, dilations, temperature, cond = small_call()
    torch.library.opcheck(
        torch.ops.pyreversible.wavenet_step.default,
        (x, uniform, queue, position, weights, dilations, temperature, cond),
    )
    torch.library.opcheck(
        torch.ops.pyreversible.wavenet_generate.default,
        (x, uniform[None].repeat(3, 1), queue, position, weights, dilations, temperature, None),
    )
