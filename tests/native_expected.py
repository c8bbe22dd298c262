"""Expected outputs of the native tests (csrc/tests), computed by the reference.

Every case is a call of one C ABI entry point on small inputs: the sizes (ints), the inputs and
the outputs the reference gives for them, in float64. Inputs are float32 values, so the native
tests can run the float32 and the float64 kernels on the same numbers. Regenerate the checked-in
files after a change to the reference or to the cases with

    python tests/native_expected.py

which rewrites csrc/tests/data/<op>.txt; tests/test_native_expected.py checks they are current.

File format, one item per line: ``case <entry point> <name>`` opens a case, ``int <name> <value>``
is a size or a flag, ``tensor <name> <rank> <dims...>`` is followed by a line of its values in
row-major order (shortest round-trip decimal), ``end`` closes the case. Lines starting with #
are comments.
"""

import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from pyreversible import reference  # noqa: E402
from pyreversible.ops.additive_coupling import partition_layout  # noqa: E402
from pyreversible.reference.reversible_block import (  # noqa: E402
    reversible_block_bwd,
    reversible_block_fwd,
)
from pyreversible.reference.wavenet_step import new_queue  # noqa: E402

DATA = os.path.join(os.path.dirname(HERE), "csrc", "tests", "data")
PARTITION_FIELDS = ("kind", "parity", "dim_a", "dim_b", "offset_a", "offset_b", "row_pairs")
PARTITION_FIELDS += ("height",)


class Case:
    def __init__(self, entry, name):
        self.entry, self.name, self.items = entry, name, []

    def int(self, name, value):
        self.items.append(("int", name, int(value)))

    def tensor(self, name, t):
        self.items.append(("tensor", name, t.detach().to(torch.float64).contiguous()))

    def text(self):
        lines = [f"case {self.entry} {self.name}"]
        for kind, name, value in self.items:
            if kind == "int":
                lines.append(f"int {name} {value}")
            else:
                dims = " ".join(str(d) for d in value.shape)
                lines.append(f"tensor {name} {value.dim()} {dims}")
                lines.append(" ".join(repr(v) for v in value.flatten().tolist()))
        lines.append("end")
        return "\n".join(lines)


def _inputs(generator, *shapes):
    # float32 values held in float64: the same numbers in either precision
    return [
        torch.randn(*s, generator=generator, dtype=torch.float32).to(torch.float64) for s in shapes
    ]


def additive_coupling_cases(g):
    cases = []
    for name, shape, partition, parity, sign in [
        ("odd_even_forward", (3, 7), "odd-even", 1, 1),
        ("checkerboard_inverse", (2, 2, 3, 4), "checkerboard", 0, -1),
        ("channel_forward", (2, 3, 2, 2), "channel", 1, 1),
    ]:
        (x,) = _inputs(g, shape)
        x_a, x_b = reference.partition_split(x, partition, parity)
        (shift,) = _inputs(g, (shape[0], x_b[0].numel()))
        y = reference.additive_coupling(
            x, lambda a, s=shift, b=x_b: s.view_as(b), partition, parity, reverse=sign == -1
        )
        case = Case("additive_coupling_fwd", name)
        _partition(case, x.shape, partition, parity)
        case.int("sign", sign)
        case.tensor("x", x.flatten(1))
        case.tensor("shift", shift)
        case.tensor("y", y.flatten(1))
        cases.append(case)

    for name, shape, partition, parity, sign, hidden in [
        ("half_one_hidden", (5, 6), "half", 0, 1, [4]),
        ("odd_even_inverse_two_hidden", (4, 7), "odd-even", 0, -1, [5, 2]),
        ("linear_only", (3, 4), "half", 1, 1, []),
    ]:
        (x,) = _inputs(g, shape)
        x_a, x_b = reference.partition_split(x, partition, parity)
        widths = [x_a[0].numel(), *hidden, x_b[0].numel()]
        weights = _inputs(g, *[(widths[i + 1], widths[i]) for i in range(len(widths) - 1)])
        biases = _inputs(g, *[(w,) for w in widths[1:]])
        for t in (x, *weights, *biases):
            t.requires_grad_(True)
        y = reference.additive_coupling_mlp(x, weights, biases, partition, parity, sign == -1)
        h, hiddens = x_a.flatten(1), []
        for w, b in zip(weights[:-1], biases[:-1], strict=True):
            h = torch.relu(h @ w.t() + b)
            hiddens.append(h)
        (dy,) = _inputs(g, x.shape)
        grads = torch.autograd.grad(y, (x, *weights, *biases), dy)

        for entry in ("additive_coupling_mlp_fwd", "additive_coupling_mlp_bwd"):
            case = Case(entry, name)
            _partition(case, x.shape, partition, parity)
            case.int("sign", sign)
            case.int("num_layers", len(weights))
            for i, w in enumerate(widths):
                case.int(f"width{i}", w)
            case.tensor("x", x.flatten(1))
            for i, w in enumerate(weights):
                case.tensor(f"weight{i}", w)
            if entry.endswith("fwd"):
                for i, b in enumerate(biases):
                    case.tensor(f"bias{i}", b)
                case.tensor("y", y.flatten(1))
            for i, h in enumerate(hiddens):
                case.tensor(f"hidden{i}", h)
            if entry.endswith("bwd"):
                case.tensor("dy", dy.flatten(1))
                case.tensor("dx", grads[0].flatten(1))
                for i in range(len(weights)):
                    case.tensor(f"dweight{i}", grads[1 + i])
                    case.tensor(f"dbias{i}", grads[1 + len(weights) + i])
            cases.append(case)
    return cases


def _partition(case, shape, partition, parity):
    case.int("batch", shape[0])
    case.int("dim", torch.Size(shape[1:]).numel())
    layout = partition_layout(shape, partition, parity)
    for field, value in zip(PARTITION_FIELDS, layout, strict=True):
        case.int(f"partition_{field}", value)


def causal_conv1d_cases(g):
    cases = []
    for name, batch, c_in, c_out, length, k, dilation, groups, bias in [
        ("groups2_k3_d2", 2, 4, 6, 9, 3, 2, 2, True),
        ("depthwise_k2_d3_nobias", 1, 3, 3, 8, 2, 3, 3, False),
        ("dilation_past_length", 1, 2, 3, 5, 2, 7, 1, True),
    ]:
        x, w, b, dy = _inputs(
            g, (batch, c_in, length), (c_out, c_in // groups, k), (c_out,), (batch, c_out, length)
        )
        b = b if bias else None
        leaves = [t.requires_grad_(True) for t in (x, w, b) if t is not None]
        y = reference.causal_conv1d(x, w, b, dilation, groups)
        grads = torch.autograd.grad(y, leaves, dy)
        for entry in ("causal_conv1d_fwd", "causal_conv1d_bwd"):
            case = Case(entry, name)
            for field, value in [("batch", batch), ("in_channels", c_in), ("out_channels", c_out)]:
                case.int(field, value)
            for field, value in [("length", length), ("kernel_size", k), ("dilation", dilation)]:
                case.int(field, value)
            case.int("groups", groups)
            case.tensor("x", x)
            case.tensor("weight", w)
            if entry.endswith("fwd"):
                if b is not None:
                    case.tensor("bias", b)
                case.tensor("y", y)
            else:
                case.tensor("dy", dy)
                for gname, grad in zip(("dx", "dweight", "dbias"), grads, strict=False):
                    case.tensor(gname, grad)
            cases.append(case)
    return cases


def masked_conv2d_cases(g):
    cases = []
    for name, batch, c_in, c_out, height, width, k, mask_type, bias in [
        ("a_k3", 2, 3, 4, 5, 4, 3, "A", True),
        ("b_k5_nobias", 1, 2, 3, 4, 6, 5, "B", False),
    ]:
        x, w, b, dy = _inputs(
            g, (batch, c_in, height, width), (c_out, c_in, k, k), (c_out,),
            (batch, c_out, height, width),
        )  # fmt: skip
        b = b if bias else None
        leaves = [t.requires_grad_(True) for t in (x, w, b) if t is not None]
        y = reference.masked_conv2d(x, w, b, mask_type)
        grads = torch.autograd.grad(y, leaves, dy)
        for entry in ("masked_conv2d_fwd", "masked_conv2d_bwd"):
            case = Case(entry, name)
            case.int("mask_type", "AB".index(mask_type))
            for field, value in [("batch", batch), ("in_channels", c_in), ("out_channels", c_out)]:
                case.int(field, value)
            for field, value in [("height", height), ("width", width), ("kernel_size", k)]:
                case.int(field, value)
            case.tensor("x", x)
            case.tensor("weight", w)
            if entry.endswith("fwd"):
                if b is not None:
                    case.tensor("bias", b)
                case.tensor("y", y)
            else:
                case.tensor("dy", dy)
                for gname, grad in zip(("dx", "dweight", "dbias"), grads, strict=False):
                    case.tensor(gname, grad)
            cases.append(case)
    return cases


def wavenet_layer_cases(g):
    cases = []
    for name, batch, r, gate, s, length, k, dilation, local, glob, bias in [
        ("plain_nobias", 2, 3, 4, 5, 7, 2, 2, 0, 0, False),
        ("conditioned", 2, 3, 2, 4, 6, 3, 1, 2, 3, True),
    ]:
        x, conv_w, conv_b, res_w, res_b, skip_w, skip_b = _inputs(
            g, (batch, r, length), (2 * gate, r, k), (2 * gate,), (r, gate), (r,), (s, gate), (s,)
        )
        lc, lw, gc, gw = _inputs(
            g, (batch, local, length), (2 * gate, local), (batch, glob), (2 * gate, glob)
        )
        dx_next, dskip = _inputs(g, (batch, r, length), (batch, s, length))
        biases = (conv_b, res_b, skip_b) if bias else (None, None, None)
        local_args = (lc, lw) if local else (None, None)
        global_args = (gc, gw) if glob else (None, None)
        named = {"x": x, "conv_weight": conv_w, "conv_bias": biases[0]}
        named |= {"residual_weight": res_w, "residual_bias": biases[1], "skip_weight": skip_w}
        named |= {"skip_bias": biases[2], "local_cond": local_args[0]}
        named |= {"local_weight": local_args[1], "global_cond": global_args[0]}
        named |= {"global_weight": global_args[1]}
        named = {key: t.requires_grad_(True) for key, t in named.items() if t is not None}
        n = named.get
        x_next, skip = reference.wavenet_layer(
            n("x"), n("conv_weight"), n("conv_bias"), n("residual_weight"),
            n("residual_bias"), n("skip_weight"), n("skip_bias"), dilation,
            n("local_cond"), n("local_weight"), n("global_cond"), n("global_weight"),
        )  # fmt: skip
        grads = torch.autograd.grad((x_next, skip), list(named.values()), (dx_next, dskip))
        z = reference.causal_conv1d(x, conv_w, biases[0], dilation)
        if local:
            z = z + torch.einsum("oc,bct->bot", lw, lc)
        if glob:
            z = z + (gc @ gw.t()).unsqueeze(-1)
        for entry in ("wavenet_layer_fwd", "wavenet_layer_bwd"):
            case = Case(entry, name)
            for field, value in [("batch", batch), ("residual_channels", r)]:
                case.int(field, value)
            for field, value in [("gate_channels", gate), ("skip_channels", s), ("length", length)]:
                case.int(field, value)
            for field, value in [("kernel_size", k), ("dilation", dilation)]:
                case.int(field, value)
            case.int("local_channels", local)
            case.int("global_channels", glob)
            for key, t in named.items():
                if entry.endswith("fwd") or not key.endswith("bias"):
                    case.tensor(key, t)
            if entry.endswith("fwd"):
                case.tensor("x_next", x_next)
                case.tensor("skip", skip)
                case.tensor("gate_input", z)
            else:
                case.tensor("gate_input", z)
                case.tensor("dx_next", dx_next)
                case.tensor("dskip", dskip)
                for key, grad in zip(named, grads, strict=True):
                    case.tensor(f"d{key}", grad)
            cases.append(case)
    return cases


def _generate(x, uniform, queue, position, weights, dilations, temperature, cond, dtype):
    """The reference's steps in dtype on a copy of queue: samples, last logits, the queue after,
    and the least distance of a uniform number to a step of its CDF."""
    queue = queue.to(dtype, copy=True)  # the step updates it in place
    weights = [w.to(dtype) for w in weights]
    samples, logits, margin = [], None, 1.0
    for step in range(uniform.shape[0]):
        step_cond = None if cond is None else cond[step].to(dtype)
        x, logits = reference.wavenet_step(
            x, uniform[step], queue, position + step, weights, list(dilations), temperature,
            step_cond,
        )  # fmt: skip
        samples.append(x)
        cdf = torch.softmax(logits.double() / temperature, -1).cumsum(-1)
        margin = min(margin, (cdf - uniform[step, :, None].double()).abs().min().item())
    return torch.stack(samples), logits, queue, margin


def wavenet_step_cases(g):
    cases = []
    for name, batch, classes, r, gate, s, k, dilations, position, steps, temperature, cond in [
        ("k2_from_start", 2, 5, 3, 2, 4, 2, (1, 2), 0, 4, 3.0, False),
        ("k3_cond_midway", 3, 4, 2, 3, 3, 3, (2, 1), 5, 3, 0.7, True),
    ]:
        layers = len(dilations)
        embedding, head_w, head_b, out_w, out_b = _inputs(
            g, (classes, r), (s, s), (s,), (classes, s), (classes,)
        )
        per_layer = [
            _inputs(g, (2 * gate, r, k), (2 * gate,), (r, gate), (r,), (s, gate), (s,))
            for _ in range(layers)
        ]
        weights = reference.pack_weights(
            embedding, *[list(ts) for ts in zip(*per_layer, strict=True)],
            head_w, head_b, out_w, out_b,
        )  # fmt: skip
        queue = new_queue(batch, r, k, dilations, dtype=torch.float64)
        if position > 0:
            (queue,) = _inputs(g, queue.shape)
        x = torch.randint(0, classes, (batch,), generator=g)
        uniform = torch.rand(steps, batch, generator=g, dtype=torch.float32)
        cond_t = _inputs(g, (steps, batch, layers, 2 * gate))[0] if cond else None

        args = (x, uniform, queue, position, weights, dilations, temperature, cond_t)
        samples, logits, queue_out, margin = _generate(*args, torch.float64)
        # the float32 kernel is held to the same samples: no uniform number may sit on a CDF
        # step, where float32 rounding could change the class
        assert margin > 1e-3 and torch.equal(_generate(*args, torch.float32)[0], samples), name

        case = Case("wavenet_step", name)
        for field, value in [("batch", batch), ("classes", classes), ("residual_channels", r)]:
            case.int(field, value)
        for field, value in [("gate_channels", gate), ("skip_channels", s), ("kernel_size", k)]:
            case.int(field, value)
        case.int("num_layers", layers)
        for i, d in enumerate(dilations):
            case.int(f"dilation{i}", d)
        for field, value in [("position", position), ("steps", steps)]:
            case.int(field, value)
        # the temperature in thousandths: the file's ints are integers
        case.int("temperature_milli", round(temperature * 1000))
        for i, w in enumerate(weights):
            case.tensor(f"weight{i}", w)
        case.tensor("x", x)
        case.tensor("uniform", uniform)
        if cond:
            case.tensor("cond", cond_t)
        case.tensor("queue", queue)
        case.tensor("samples", samples)
        case.tensor("logits", logits)
        case.tensor("queue_out", queue_out)
        cases.append(case)
    return cases


def reversible_block_cases(g):
    # pyr_reversible_block_cpu as the two torch ops call it: one term (fwd) or two (bwd), out of
    # place or each output written over its first operand (the in-place steps of a sequence)
    cases = []
    for name, batch, dim, sign, in_place in [
        ("add", 3, 5, 1, False),
        ("subtract_one_row", 1, 7, -1, False),
        ("subtract_in_place", 4, 3, -1, True),
        ("add_past_a_chunk", 2, 4099, 1, False),
    ]:
        if dim > 4096:
            # past one CPU chunk of 4096 features: small integers keep the file short
            x, shift = (torch.randint(-9, 10, (batch, dim), generator=g).double() for _ in range(2))
        else:
            x, shift = _inputs(g, (batch, dim), (batch, dim))
        case = Case("reversible_block_fwd", name)
        for field, value in [("batch", batch), ("dim", dim), ("sign", sign)]:
            case.int(field, value)
        case.int("in_place", in_place)
        case.tensor("x", x)
        case.tensor("shift", shift)
        case.tensor("out", reversible_block_fwd(x, shift, sign))
        cases.append(case)

    for name, batch, dim, in_place in [
        ("half_step", 3, 6, False),
        ("half_step_in_place", 2, 5, True),
    ]:
        y, shift, dy, grad = _inputs(g, *[(batch, dim)] * 4)
        x, dx = reversible_block_bwd(y, shift, dy, grad)
        case = Case("reversible_block_bwd", name)
        for field, value in [("batch", batch), ("dim", dim), ("in_place", in_place)]:
            case.int(field, value)
        for field, value in [("y", y), ("shift", shift), ("dy", dy), ("grad", grad)]:
            case.tensor(field, value)
        case.tensor("x", x)
        case.tensor("dx", dx)
        cases.append(case)
    return cases


# One entry per op: the file it writes and the function that makes its cases.
OPS = {
    "additive_coupling": additive_coupling_cases,
    "causal_conv1d": causal_conv1d_cases,
    "masked_conv2d": masked_conv2d_cases,
    "wavenet_layer": wavenet_layer_cases,
    "wavenet_step": wavenet_step_cases,
    "reversible_block": reversible_block_cases,
}


def render(op):
    """The text of csrc/tests/data/<op>.txt, from a generator seeded per op."""
    g = torch.Generator().manual_seed(sum(op.encode()))
    header = "# written by `python tests/native_expected.py` from the reference; do not edit"
    return "\n".join([header, *(case.text() for case in OPS[op](g))]) + "\n"


def main():
    for op in OPS:
        path = os.path.join(DATA, f"{op}.txt")
        with open(path, "w") as f:
            f.write(render(op))
        print(f"wrote {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
