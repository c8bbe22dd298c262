"""Benchmark harness of pyreversible: python -m bench [SUITE ...] [--json PATH] [--quick].

A suite is a module that defines `cases(quick)`, returning a list of bench.harness.Case, and
is registered below by name. Adding a suite is one module and one line in SUITES.
"""

import importlib

# Suite name -> module defining it, imported only when the suite runs.
SUITES = {
    "coupling": "bench.bench_additive_coupling",
    "masked": "bench.bench_masked_conv2d",
}


def load_suite(name):
    """The module of the suite called `name`."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose from {', '.join(SUITES)}")
    return importlib.import_module(SUITES[name])
