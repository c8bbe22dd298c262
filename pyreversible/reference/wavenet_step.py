"""One step of fast WaveNet generation in pure PyTorch: the definition.

One call runs the whole network for one new time step t: embedding of the previous sample, every
layer reading its dilated taps from a queue of its past inputs (Fast WaveNet), the skip sum, the
output head, softmax with temperature and inverse-CDF sampling. The work per sample is
O(layers), not O(receptive field).

The weights are laid out once, by `pack_weights`, as a list of tensors with every matrix stored
(in, out) row-major, so that a step streams each row of a weight against one input element.

The queue of all layers is one tensor (B, Q, R), Q = sum over layers of (K - 1) * d_l: layer l
owns rows [offset_l, offset_l + (K - 1) * d_l) (offsets in layer order, `queue_layout`), a ring
buffer where the layer's input at time s lives in row offset_l + s mod ((K - 1) * d_l). A new
queue is zeros, which are the inputs before t = 0.
"""

import torch

from pyreversible.reference.sampling import inverse_cdf_sample

# tensors per layer in the packed list: conv, conv bias, residual, residual bias, skip, skip bias
WEIGHTS_PER_LAYER = 6


def pack_weights(
    embedding,
    conv_weights,
    conv_biases,
    residual_weights,
    residual_biases,
    skip_weights,
    skip_biases,
    head_weight,
    head_bias,
    out_weight,
    out_bias,
):
    """Lays out a WaveNet's weights for `wavenet_step`: a list of contiguous tensors.

    Args (PyTorch's layouts; L layers, C classes, R residual, G gate, S skip channels):
        embedding: (C, R), the embedding of the class indices.
        conv_weights, conv_biases: L tensors (2G, R, K) and (2G,), the dilated convolutions.
        residual_weights, residual_biases: L tensors (R, G) and (R,).
        skip_weights, skip_biases: L tensors (S, G) and (S,).
        head_weight, head_bias: (S, S) and (S,), the first 1x1 layer of the output head.
        out_weight, out_bias: (C, S) and (C,), the second, to class logits.

    Returns:
        [embedding (C, R)] + per layer [conv (K, R, 2G), conv bias (2G,), residual (G, R),
        residual bias (R,), skip (G, S), skip bias (S,)] + [head (S, S), head bias (S,),
        out (S, C), out bias (C,)], every matrix (in, out), all contiguous.
    """
    packed = [embedding.detach().contiguous()]
    for layer in zip(
        conv_weights,
        conv_biases,
        residual_weights,
        residual_biases,
        skip_weights,
        skip_biases,
        strict=True,
    ):
        conv, conv_bias, residual, residual_bias, skip, skip_bias = (t.detach() for t in layer)
        packed += [
            conv.permute(2, 1, 0).contiguous(),
            conv_bias.contiguous(),
            residual.t().contiguous(),
            residual_bias.contiguous(),
            skip.t().contiguous(),
            skip_bias.contiguous(),
        ]
    packed += [head_weight.detach().t().contiguous(), head_bias.detach().contiguous()]
    packed += [out_weight.detach().t().contiguous(), out_bias.detach().contiguous()]
    return packed


def queue_layout(kernel_size, dilations):
    """(offset, length) of each layer's ring buffer in the queue; length (K - 1) * d_l."""
    layout, offset = [], 0
    for dilation in dilations:
        length = (kernel_size - 1) * dilation
        layout.append((offset, length))
        offset += length
    return layout


def new_queue(batch, residual_channels, kernel_size, dilations, dtype=None, device=None):
    """An empty queue (B, Q, R) of zeros: the network before its first step."""
    rows = sum(length for _, length in queue_layout(kernel_size, dilations))
    return torch.zeros(batch, rows, residual_channels, dtype=dtype, device=device)


def wavenet_step(x, uniform, queue, position, weights, dilations, temperature=1.0, cond=None):
    """One generation step of the whole WaveNet; pushes each layer's input into the queue.

    h_0 = embedding[x] (zeros at position 0); per layer l with dilation d:
    z = b + sum_k conv[k]^T h_l[t - (K - 1 - k) d] (+ cond[:, l]); a = tanh(z[:G]) sigmoid(z[G:]);
    skip += skip^T a + b_s; h_{l+1} = h_l + residual^T a + b_r. Then
    logits = out^T relu(head^T relu(skip) + b_h) + b_o and sample = inverse_cdf_sample(logits).

    Args:
        x: (B,) int64, the sample at t - 1 (ignored at position 0, whose input is zeros).
        uniform: (B,) float32 in [0, 1), the uniform numbers of this step's draw.
        queue: (B, Q, R), the layers' past inputs (see `queue_layout`); updated in place.
        position: int t >= 0, the time step being generated.
        weights: the list from `pack_weights`.
        dilations: L ints, the layers' dilations.
        temperature: float > 0.
        cond: (B, L, 2G) or None, conditioning added to each layer's z at this step (the
            local and global conditioning projections of the step).

    Returns:
        (sample (B,) int64, logits (B, C) in the weights' dtype).
    """
    embedding = weights[0]
    taps = weights[1].shape[0]
    gate_channels = weights[1].shape[2] // 2
    if position > 0:
        h = embedding[x]
    else:
        h = embedding.new_zeros(x.shape[0], embedding.shape[1])
    skip = 0
    for layer, ((offset, length), dilation) in enumerate(
        zip(queue_layout(taps, dilations), dilations, strict=True)
    ):
        first = 1 + WEIGHTS_PER_LAYER * layer
        conv, conv_bias, residual, residual_bias, skip_w, skip_bias = weights[
            first : first + WEIGHTS_PER_LAYER
        ]
        # the newest tap is the layer's input now; the older ones come from the ring buffer
        z = conv_bias + h @ conv[taps - 1]
        for k in range(taps - 1):
            row = offset + (position - (taps - 1 - k) * dilation) % length
            z = z + queue[:, row] @ conv[k]
        if cond is not None:
            z = z + cond[:, layer]
        a = torch.tanh(z[:, :gate_channels]) * torch.sigmoid(z[:, gate_channels:])
        # the oldest tap's row was read above and now takes the newest input
        if length:
            queue[:, offset + position % length] = h
        skip = skip + a @ skip_w + skip_bias
        h = h + a @ residual + residual_bias
    head, head_bias, out, out_bias = weights[-4:]
    logits = torch.relu(torch.relu(skip) @ head + head_bias) @ out + out_bias
    return inverse_cdf_sample(logits, uniform, temperature), logits


def wavenet_generate(x, uniform, queue, position, weights, dilations, temperature=1.0, cond=None):
    """N consecutive steps, each feeding its sample to the next: samples (N, B) int64.

    Args as `wavenet_step`, except uniform: (N, B) and cond: (N, B, L, 2G) or None; x is the
    sample at position - 1. The queue ends at position + N.
    """
    samples = []
    for step in range(uniform.shape[0]):
        step_cond = None if cond is None else cond[step]
        x, _ = wavenet_step(
            x, uniform[step], queue, position + step, weights, dilations, temperature, step_cond
        )
        samples.append(x)
    return torch.stack(samples)
