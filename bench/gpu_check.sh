#!/usr/bin/env bash
# The GPU check of pyreversible, for a CUDA machine that already has torch and triton and no
# network: build the extension with CUDA, run the tests on CUDA for every backend, run the
# benchmarks, and print a status table last. Run it from the repository root:
#     bash bench/gpu_check.sh
# Every step has a time limit (8 minutes in all); a step that fails or times out (rc 124) is
# recorded and the next one still runs. Logs go to $OUT when it is set, else bench/results/.
set -uo pipefail

stamp=$(date -u +%Y%m%dT%H%M%SZ)
logs=${OUT:-bench/results}
json=bench/results/gpu_$stamp.json
mkdir -p "$logs" bench/results
statuses=()
failed=0

# step NAME SECONDS COMMAND...: run COMMAND under a limit, log it, record rc and duration
step() {
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    echo "== $name (limit ${limit}s)"
    timeout -k 10 "$limit" "$@" >"$logs/$name.log" 2>&1
    rc=$?
    tail -n 5 "$logs/$name.log"
    [ "$rc" -eq 0 ] || failed=1
    statuses+=("$(printf '%-7s %4s %5ss  %s' "$name" "$rc" $((SECONDS - start)) "$logs/$name.log")")
}

step env 20 bash -c 'nvidia-smi; python -c "import torch, triton
print(torch.__version__, torch.version.cuda, triton.__version__, torch.cuda.get_device_name())"'

# one architecture (H200: sm_90) keeps the CUDA compile short; forcing CUDA makes a missing
# toolkit fail the build instead of yielding a CPU-only extension
step build 180 env TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 PYREVERSIBLE_BUILD_CUDA=1 \
    pip install --no-build-isolation --no-deps -e .

step import 20 python -c "import pyreversible; print(pyreversible.available_backends('cuda'))"
step tests 150 env PYREVERSIBLE_TEST_DEVICE=cuda python -m pytest -x -q tests

# --quick: GPU calls are short, so 0.2 s of timed runs per variant is plenty; most of this
# step's time is torch.compile
step bench 100 python -m bench --quick --json "$json"
if [ -f "$json" ] && [ "$logs" != bench/results ]; then
    cp "$json" "$logs/"
fi

if [ -f "$json" ]; then
    echo
    python - "$json" <<'EOF'
import json
import sys

for r in json.load(open(sys.argv[1]))["results"]:
    for variant, t in r["timings"].items():
        if t["status"] == "ok":
            ratio = t["ratio_vs_reference"]
            ratio = "-" if ratio is None else f"{ratio:.2f}"
            print(f"{r['case']:<24} {variant:<13} {t['median_s'] * 1e3:9.3f} ms  x{ratio}")
        else:
            print(f"{r['case']:<24} {variant:<13} {t['status']}: {t['reason'][:60]}")
EOF
fi

echo
echo "step      rc   time  log"
printf '%s\n' "${statuses[@]}"
exit "$failed"
