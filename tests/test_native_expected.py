"""The native tests' expected outputs (csrc/tests/data) are what the reference computes now.

csrc/tests compares the C ABI kernels with these files; this test keeps the files from going
stale when the reference or the cases change. Regenerate them with
`python tests/native_expected.py`.
"""

import math
import os

import native_expected
import pytest


def _tokens(text):
    return [line.split() for line in text.splitlines() if not line.startswith("#")]


@pytest.mark.parametrize("op", sorted(native_expected.OPS))
def test_checked_in_data_is_current(op):
    path = os.path.join(native_expected.DATA, f"{op}.txt")
    with open(path) as f:
        checked_in = _tokens(f.read())
    fresh = _tokens(native_expected.render(op))
    hint = f"{path} is stale: run `python tests/native_expected.py`"
    assert len(checked_in) == len(fresh), hint
    for old_line, new_line in zip(checked_in, fresh, strict=True):
        assert len(old_line) == len(new_line), hint
        for old, new in zip(old_line, new_line, strict=True):
            if old == new:
                continue
            # float64 outputs may differ in the last bits from one BLAS or CPU to another
            assert math.isclose(float(old), float(new), rel_tol=1e-12, abs_tol=1e-12), hint
