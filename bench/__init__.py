"""Benchmark harness of pyreversible: python -m bench [SUITE ...] [--json PATH] [--quick].

A suite is a set of modules, one per op (bench/bench_<op>.py), each defining `cases(quick)`
that returns a list of bench.harness.Case, and optionally `summary(results)` that returns text
printed after the suite's table; SUITES below names them. Adding an op to a suite is
one module and one entry.
"""

import importlib

# Suite name -> the modules defining its cases, imported only when the suite runs.
SUITES = {
    "coupling": ("bench.bench_additive_coupling",),
    "conv": (
        "bench.bench_causal_conv1d",
        "bench.bench_wavenet_layer",
        "bench.bench_masked_conv2d",
    ),
    "generation": ("bench.bench_wavenet_step",),
    "reversible": ("bench.bench_reversible",),
}


def suite_cases(name, quick):
    """The cases of the suite called `name`, module by module."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose from {', '.join(SUITES)}")
    modules = [importlib.import_module(module) for module in SUITES[name]]
    return [case for module in modules for case in module.cases(quick)]
