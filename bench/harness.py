"""The benchmark harness: time every variant of every case, compare, print, write JSON.

A case is one workload (an op at one size) that a suite builds once per variant: each backend
that can run on the device (`reference`, `cpp`, and `triton` on CUDA only: the Triton
interpreter is never timed) and `torch.compile` of the reference. Every variant is built and
warmed up, then the variants are timed in turn, over several rounds, each turn a
torch.utils.benchmark.Timer.blocked_autorange; interleaving them spreads any burst of other
work on the machine over all variants instead of one, which keeps the ratios honest. The
figure kept is the median time of one call over every block of every round. On CUDA the
Timer synchronises the device before it reads the clock, so a call's time includes the
kernels it launched.

Throughput is counted against the floor: GFLOP/s from the FLOPs the case must do and GB/s
from the bytes it must move (both derived by the suite), with the fraction of the machine's
peak where the peak can be stated (see cpu_peak and gpu_peak for how).

A case may name its own variants (e.g. generation methods), the torch threads it runs with,
and, for workloads measured in samples/s (generation), the samples one call of each variant
produces; its FLOPs and bytes are then per sample and the floor is peak / FLOPs per sample.
A builder that raises NotAvailable records the variant as n/a with its reason.
"""

import dataclasses
import datetime
import gc
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.utils.benchmark as benchmark

import pyreversible

# The name under which torch.compile of the reference is reported.
COMPILE = "torch.compile"

# FP32 peak (FLOP/s, without tensor cores: torch leaves TF32 off for float32 matmuls) and
# memory bandwidth (B/s) of the GPUs whose datasheet figures are known here, by name.
_GPU_PEAKS = {
    "H200 NVL": (60e12, 4.8e12),
    "H200": (67e12, 4.8e12),
    "H100 80GB HBM3": (67e12, 3.35e12),
    "H100 PCIe": (51e12, 2.0e12),
}


class NotAvailable(Exception):
    """Raised by a case's builder for a variant that cannot run here; the message says why."""


@dataclasses.dataclass
class Case:
    """One workload of a suite.

    Args:
        name: short label, e.g. 'train narrow B=256'.
        params: the sizes and settings, as written to the JSON.
        flops: floating-point operations one call must do.
        bytes: bytes one call must move to or from memory at the least.
        build: build(variant, device) -> a function of no arguments that runs one call of the
            workload on `variant` ('reference', 'cpp', 'triton' or COMPILE).
        variants: the variants to time, or None for variants(device).
        baseline: the variant the ratios are taken against.
        memory: memory(variant, device) -> a dict of memory figures of one call, measured
            after the timing, or None.
        samples: per variant, the samples (time steps x batch rows) one call produces, or
            None; when given, flops and bytes are per sample and speed is in samples/s.
        threads: torch threads while the case runs, or None for the current setting.
        warmup: untimed calls per variant, or None for run_case's.
    """

    name: str
    params: dict
    flops: float
    bytes: float
    build: Callable[[str, torch.device], Callable[[], object]]
    variants: tuple | None = None
    baseline: str = "reference"
    memory: Callable[[str, torch.device], dict] | None = None
    samples: dict | None = None
    threads: int | None = None
    warmup: int | None = None


def _cpu_info():
    # the first processor's block of /proc/cpuinfo, as a dict; empty where there is none
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def cpu_peak(info, cores):
    """FP32 peak of `cores` cores in FLOP/s, and how it was computed (peak None if unknown).

    peak = cores x clock x FMA pipes x float32 lanes per pipe x 2 FLOP per FMA, with the
    clock read from /proc/cpuinfo ('cpu MHz', the nominal clock on a VM; boost can exceed it)
    and the vector width from the flags. Every x86 core with AVX2 and FMA since Intel Haswell
    and AMD Zen 2 issues two 256-bit FMAs a cycle; AMD cores with AVX-512 (Zen 4) run it on
    the same two 256-bit pipes, while Intel counts two 512-bit pipes (an upper bound: some
    Xeon SKUs have one).
    """
    flags = set(info.get("flags", "").split())
    try:
        mhz = float(info["cpu MHz"])
    except (KeyError, ValueError):
        return None, "peak not stated: no clock in /proc/cpuinfo"
    if not {"avx2", "fma"} <= flags:
        return None, "peak not stated: no AVX2 and FMA flags"
    amd = info.get("vendor_id") == "AuthenticAMD"
    family, model = int(info.get("cpu family", 0)), int(info.get("model", 0))
    if amd and family == 0x17 and model < 0x30:
        # Zen 1 splits each 256-bit FMA into two 128-bit halves
        pipes, lanes, unit = 2, 4, "Zen 1, 2 x 128-bit FMA"
    elif "avx512f" in flags and not amd:
        pipes, lanes, unit = 2, 16, "AVX-512, 2 x 512-bit FMA (upper bound)"
    else:
        pipes, lanes, unit = 2, 8, "AVX2, 2 x 256-bit FMA"
    peak = cores * mhz * 1e6 * pipes * lanes * 2
    basis = (
        f"{cores} cores x {mhz / 1e3:.3f} GHz (cpu MHz) x {pipes} pipes x {lanes} fp32 lanes "
        f"x 2 FLOP/FMA ({unit}) = {peak / 1e9:.1f} GFLOP/s; memory peak not stated"
    )
    return peak, basis


def gpu_peak(name):
    """(FP32 FLOP/s, bytes/s) of the GPU called `name` from its datasheet, or (None, None)."""
    for key, peaks in _GPU_PEAKS.items():
        if key in name:
            return peaks
    return None, None


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_machine(device):
    """The machine, software and command line, with the peaks used for the fractions."""
    info = _cpu_info()
    threads = torch.get_num_threads()
    machine = {
        "cpu_model": info.get("model name") or platform.processor() or None,
        "cpu_family": info.get("cpu family"),
        "cpu_model_number": info.get("model"),
        "cpu_mhz": info.get("cpu MHz"),
        "logical_cpus": os.cpu_count(),
        "torch_threads": threads,
        # other work on the machine skews every figure; a load near the thread count is idle
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "pyreversible": pyreversible.__version__,
        "backends": pyreversible.available_backends(device),
        "device": str(device),
        "gpu": None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable), "-m", "bench", *sys.argv[1:]]),
    }
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        flops, bandwidth = gpu_peak(name)
        machine.update(gpu=name, cuda=torch.version.cuda)
        basis = "datasheet FP32 (no tensor cores) and HBM bandwidth" if flops else "unknown GPU"
    else:
        flops, basis = cpu_peak(info, threads)
        bandwidth = None
    machine["peak"] = {"flops": flops, "bytes_per_s": bandwidth, "basis": basis}
    return machine


def variants(device):
    """The variants timed on `device`: each backend that runs there natively, and COMPILE."""
    names = [b for b in pyreversible.available_backends(device) if b != "reference"]
    if device.type != "cuda":
        names = [b for b in names if b != "triton"]
    return ["reference", COMPILE, *names]


def _free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _stats(times):
    # times: seconds per call of each timed block
    if len(times) < 2:
        return {"median_s": times[0], "iqr_s": 0.0, "runs": len(times)}
    q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return {"median_s": median, "iqr_s": q3 - q1, "runs": len(times)}


def _timer(fn):
    # Timer runs with one thread unless told otherwise; time with the threads torch uses
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())


def _failure(variant, error, seconds=None):
    # a compile that fails says so in the table, with how long it ran before failing; a
    # variant that cannot run here (NotAvailable) is n/a, with the reason
    if isinstance(error, NotAvailable):
        status = "n/a"
    else:
        status = f"{COMPILE} failed" if variant == COMPILE else "error"
    reason = f"{type(error).__name__}: {error}".splitlines()[0][:300]
    if seconds is not None and not isinstance(error, NotAvailable):
        reason = f"after {seconds:.1f} s: {reason}"
    return {"status": status, "reason": reason}


def run_case(case, device, peak, min_run_time, rounds=3, warmup=3, with_compile=True):
    """Time every variant of `case`; a variant that fails is recorded with its reason.

    Each variant gets about `min_run_time` seconds of timed calls, split over `rounds` turns
    interleaved with the other variants' turns, after `warmup` untimed calls. The first of
    those is timed on its own: for COMPILE it is where dynamo traces and Inductor compiles,
    and its time is recorded as compile_s (first call included).
    """
    names = case.variants or variants(device)
    warmup = warmup if case.warmup is None else case.warmup
    threads = torch.get_num_threads()
    if case.threads:
        torch.set_num_threads(case.threads)
        if device.type == "cpu" and peak["flops"]:
            # the CPU peak is per core (cpu_peak): count the cores this case runs on
            peak = {**peak, "flops": peak["flops"] * case.threads / threads}
    try:
        result = _run_case(case, device, peak, min_run_time, rounds, warmup, with_compile, names)
    finally:
        torch.set_num_threads(threads)
    result["threads"] = case.threads or threads
    return result


def _run_case(case, device, peak, min_run_time, rounds, warmup, with_compile, names):
    timings, fns, first_calls = {}, {}, {}
    for variant in names:
        if variant == COMPILE and not with_compile:
            timings[variant] = {"status": "skipped", "reason": "--no-compile"}
            continue
        if variant == COMPILE:
            # a fresh cache per case, so no case hits dynamo's recompile limit and runs eager
            torch._dynamo.reset()
        start = time.perf_counter()
        try:
            fn = case.build(variant, device)
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            first_calls[variant] = time.perf_counter() - start
            for _ in range(warmup - 1):
                fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            fns[variant] = fn
        except Exception as e:
            timings[variant] = _failure(variant, e, time.perf_counter() - start)
        fn = None

    times = {variant: [] for variant in fns}
    for _ in range(rounds):
        for variant, fn in list(fns.items()):
            try:
                m = _timer(fn).blocked_autorange(min_run_time=min_run_time / rounds)
                times[variant].extend(m.times)
            except Exception as e:
                timings[variant] = _failure(variant, e)
                del fns[variant]
    for variant in fns:
        timings[variant] = {"status": "ok", **_stats(times[variant])}
        if variant == COMPILE:
            timings[variant]["compile_s"] = first_calls[variant]
    fns = None
    _free(device)
    if case.memory is not None:
        for variant, t in timings.items():
            if t["status"] != "ok":
                continue
            try:
                t["memory"] = case.memory(variant, device)
            except Exception as e:
                t["memory"] = _failure(variant, e)
            _free(device)

    order = {variant: i for i, variant in enumerate(names)}
    timings = dict(sorted(timings.items(), key=lambda item: order[item[0]]))
    for variant, t in timings.items():
        if t["status"] == "ok" and case.samples:
            # per sample: the variants produce different numbers of samples per call
            t["samples_per_call"] = case.samples[variant]
            t["samples_per_s"] = case.samples[variant] / t["median_s"]
    reference = timings.get(case.baseline, {})
    reference = reference.get("median_s") and _unit_seconds(reference)
    for t in timings.values():
        if t["status"] != "ok":
            continue
        seconds = _unit_seconds(t)
        t["ratio_vs_reference"] = reference / seconds if reference else None
        t["gflop_per_s"] = case.flops / seconds / 1e9
        t["gb_per_s"] = case.bytes / seconds / 1e9
        t["flop_peak_fraction"] = case.flops / seconds / peak["flops"] if peak["flops"] else None
        bandwidth = peak["bytes_per_s"]
        t["bandwidth_peak_fraction"] = case.bytes / seconds / bandwidth if bandwidth else None
    result = {
        "case": case.name,
        "params": case.params,
        "flops": case.flops,
        "bytes": case.bytes,
        "timings": timings,
    }
    if case.samples:
        result["flops_per_sample"] = case.flops
        result["floor_samples_per_s"] = peak["flops"] / case.flops if peak["flops"] else None
    return result


def _unit_seconds(timing):
    # seconds of one call, or of one sample for cases measured in samples/s
    return timing["median_s"] / timing.get("samples_per_call", 1)


_COLUMNS = (
    ("case", 24),
    ("variant", 15),
    ("median ms", 10),
    ("IQR ms", 8),
    ("runs", 5),
    ("x ref", 6),
    ("GFLOP/s", 8),
    ("% peak", 7),
    ("GB/s", 7),
    ("% bw", 5),
    ("samples/s", 10),
)


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def table_header(suite):
    """The header lines of a suite's table."""
    names = "  ".join(
        name.ljust(width) if i < 2 else name.rjust(width)
        for i, (name, width) in enumerate(_COLUMNS)
    )
    return f"\n[{suite}]\n{names}\n{'-' * len(names)}"


def table_rows(result):
    """One table line per variant of a case's result."""
    lines = []
    for variant, t in result["timings"].items():
        if t["status"] != "ok":
            cells = [result["case"], variant, f"{t['status']}: {t['reason']}"]
            lines.append(f"{cells[0]:<24}  {cells[1]:<15}  {cells[2][:120]}")
            continue
        frac, bw = t["flop_peak_fraction"], t["bandwidth_peak_fraction"]
        cells = [
            result["case"],
            variant,
            _fmt(t["median_s"] * 1e3, ".3f"),
            _fmt(t["iqr_s"] * 1e3, ".3f"),
            str(t["runs"]),
            _fmt(t["ratio_vs_reference"], ".2f"),
            _fmt(t["gflop_per_s"], ".1f"),
            _fmt(frac and frac * 100, ".1f"),
            _fmt(t["gb_per_s"], ".2f"),
            _fmt(bw and bw * 100, ".1f"),
            _fmt(t.get("samples_per_s"), ".1f"),
        ]
        line = "  ".join(
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, (_, width)) in enumerate(zip(cells, _COLUMNS, strict=True))
        )
        if "compile_s" in t:
            line += f"  (first call, trace + compile: {t['compile_s']:.1f} s)"
        lines.append(line)
        if "memory" in t:
            figures = ", ".join(f"{k} {v}" for k, v in t["memory"].items())
            lines.append(f"{'':<24}  {'':<15}  memory: {figures}"[:200])
    if "floor_samples_per_s" in result:
        floor = _fmt(result["floor_samples_per_s"], ".0f")
        lines.append(
            f"{'':<24}  floor: {result['flops_per_sample'] / 1e6:.3f} MFLOP/sample, {floor} "
            f"samples/s at the peak of {result['threads']} threads"
        )
    return lines


def _rss_kib(field):
    # a field of /proc/self/status in KiB (VmRSS: resident now, VmHWM: peak since last reset)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def peak_rss_of_call(fn, before=None):
    """Peak resident memory a call of fn adds, in bytes, measured in this process.

    The peak counter is reset (writing 5 to /proc/self/clear_refs) after a first call and
    `before()` (e.g. dropping gradients), so that the measured call starts warm; the figure is
    the peak during the second call minus the resident memory before it. Only true when freed
    memory goes back to the system: run it in a fresh process with glibc's
    MALLOC_MMAP_THRESHOLD_ pinned (see peak_rss_in_subprocess), or glibc's dynamic threshold
    keeps large freed blocks on its heap.
    """
    fn()
    if before is not None:
        before()
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _rss_kib("VmRSS")
    fn()
    return (_rss_kib("VmHWM") - before) * 1024


def peak_rss_in_subprocess(module, args, mmap_threshold=131072):
    """Run `python -m module *args` with MALLOC_MMAP_THRESHOLD_ pinned; the int it prints last.

    The module's main measures with peak_rss_of_call and prints the bytes; a fresh process per
    configuration keeps one configuration's heap from another's. Only blocks of at least
    `mmap_threshold` bytes are mapped and unmapped one by one, so the threshold must be below
    the size of the tensors whose memory is measured.
    """
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(mmap_threshold)}
    done = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.split()[-1])


def saved_bytes_of_call(fn, exclude=()):
    """Bytes autograd saves for backward during fn(), counted once per storage.

    Counted through torch.autograd.graph.saved_tensors_hooks: what ctx.save_for_backward and
    the built-in ops save, less the storages of the tensors in `exclude` (the parameters, which
    live on anyway). Tensors a custom Function keeps as plain attributes of ctx are not seen
    (peak_rss_of_call sees them).
    """
    storages = {}
    excluded = {t.untyped_storage().data_ptr() for t in exclude}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in excluded:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())
