"""Inverse-CDF sampling from logits: the one rule every sampler of pyreversible follows.

sample = #{c : cdf[c] < u}, clamped to C - 1, where cdf = cumsum(softmax(logits / temperature)),
so the same uniform numbers give the same samples on every method and backend, up to ties
within rounding of the CDF.
"""

import torch


def inverse_cdf_sample(logits, uniform, temperature=1.0):
    """Draws one class per row of logits from uniform numbers by inverting the CDF.

    sample = #{c : cdf[c] < u} (clamped to C - 1), cdf = cumsum(softmax(logits / temperature)).

    The softmax and the cumulative sum run in float32 (float64 for float64 logits), whatever
    the logits' dtype, so that low-precision models sample from a well-rounded CDF.

    Args:
        logits: (..., C) unnormalised log-probabilities.
        uniform: (...) numbers in [0, 1), e.g. torch.rand(..., generator=g).
        temperature: float > 0; below 1 sharpens the distribution, above 1 flattens it.

    Returns:
        (...) int64 classes in [0, C).

    Example:
        >>> logits = torch.tensor([[0.0, 0.0, 10.0]])
        >>> inverse_cdf_sample(logits, torch.tensor([0.5]))
        tensor([2])
    """
    compute_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    probs = torch.softmax(logits.to(compute_dtype) / temperature, dim=-1)
    cdf = probs.cumsum(dim=-1)
    below = cdf < uniform.to(compute_dtype).unsqueeze(-1)
    return below.sum(dim=-1).clamp(max=logits.shape[-1] - 1)
