"""Rewrites a CUDA source of csrc/kernels/cuda for the host emulation (see run.sh).

python3 transform.py SOURCE > OUTPUT: prepends prelude.h, turns every `kernel<<<grid, block,
smem, stream>>>(args);` into `pyr_emu::launch(kernel, grid, block, smem, stream, args);`,
points the dynamic shared memory at the emulation's buffer, and passes the kernel to
cudaFuncSetAttribute as the C API's `const void*` (the template overload is nvcc's only).
"""

import re
import sys

LAUNCH = re.compile(r"([\w:]+(?:<[^<>;]*>)?)\s*<<<(.*?)>>>\((.*?)\);", re.S)
DYNAMIC_SMEM = "extern __shared__ __align__(16) unsigned char smem[];"
ATTRIBUTE = "cudaFuncSetAttribute(wavenet_layer_fwd_kernel<T>,"


def transform(src):
    src = src.replace('#include "conv_common.cuh"', '#include "conv_common_emu.cuh"')
    src = src.replace(DYNAMIC_SMEM, "unsigned char* smem = pyr_emu::dynamic_smem;")
    src = src.replace(
        ATTRIBUTE,
        "cudaFuncSetAttribute(reinterpret_cast<const void*>(wavenet_layer_fwd_kernel<T>),",
    )
    src = LAUNCH.sub(lambda m: f"pyr_emu::launch({m[1]}, {m[2]}, {m[3]});", src)
    # whatever the emulation cannot run must be gone
    for left in ("<<<", DYNAMIC_SMEM, ATTRIBUTE):
        if left in src:
            raise SystemExit(f"transform.py: {sys.argv[1]} still has {left!r}")
    return '#include "prelude.h"\n' + src


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        sys.stdout.write(transform(f.read()))
