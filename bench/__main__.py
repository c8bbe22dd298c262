"""python -m bench [SUITE ...] [--json PATH] [--quick]: run benchmark suites, print a table.

Examples:
    python -m bench                          every suite, on CUDA when there is a GPU
    python -m bench coupling --quick         one suite, shorter timing runs
    python -m bench --json bench/results/cpu.json --device cpu
"""

import argparse
import importlib
import json
import os
import sys

import torch

from bench import SUITES, harness, suite_cases


def _parse(argv):
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Run benchmark suites and print a table."
    )
    parser.add_argument(
        "suites",
        nargs="*",
        metavar="SUITE",
        help=f"suites to run (default all): {', '.join(SUITES)}",
    )
    parser.add_argument("--json", metavar="PATH", help="write every figure and the machine here")
    parser.add_argument("--quick", action="store_true", help="shorter timing runs, one warm-up")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda"
    )
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: its own)")
    parser.add_argument(
        "--min-run-time", type=float, help="least seconds of timed runs per variant"
    )
    args = parser.parse_args(argv)
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    return args


def main(argv=None):
    args = _parse(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    min_run_time = args.min_run_time or (0.2 if args.quick else 1.0)
    warmup = 1 if args.quick else 3
    machine = harness.describe_machine(device)
    peak = machine["peak"]

    gpu = f", {machine['gpu']}" if machine["gpu"] else ""
    print(
        f"{machine['cpu_model']} ({machine['torch_threads']} threads){gpu}; torch "
        f"{machine['torch']}, triton {machine['triton']}; device {device}; load average "
        f"{machine['load_average']}\n"
        f"peak: {peak['basis']}"
    )

    results = []
    for name in args.suites or list(SUITES):
        print(harness.table_header(name), flush=True)
        for case in suite_cases(name, args.quick):
            result = harness.run_case(
                case, device, peak, min_run_time, warmup=warmup, with_compile=not args.no_compile
            )
            result["suite"] = name
            results.append(result)
            print("\n".join(harness.table_rows(result)), flush=True)
        for module in SUITES[name]:
            summary = getattr(importlib.import_module(module), "summary", None)
            if summary is not None:
                print(summary([r for r in results if r["suite"] == name]), flush=True)

    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "results": results}, f, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
