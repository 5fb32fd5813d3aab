"""Cold-start imports of every Lambda function, as `sam build` built it.

For each function of template.yaml: import the built handler (`.aws-sam/build/<LogicalId>/app.py`)
in a fresh isolated interpreter (`python3.12 -I -S -B`), `sys.path` = the function folder, its
built layers' `python/` folders in the template's order and a boto3 of the Lambda runtime's
version; the template's environment, tracing on (see `tests/deployed_support.py`). 1 warm-up
(the OS's file cache), then `--runs` timed runs, then one run under `-X importtime` for the
heaviest imports (cumulative). Prints a table and writes `bench/results/coldstart.json`.

    ./scripts/lint.sh            # or: uvx --from aws-sam-cli==<version> sam build
    uv run python bench/coldstart.py

Times are those of the import alone (what Lambda's Init phase spends in the handler module),
wall clock and CPU (the process's, steadier when other work shares the machine), on this
machine: a Lambda's CPU share depends on its memory size, so absolute numbers differ there.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.deployed_support import (  # noqa: E402
    BUILD,
    RUNTIME_BOTO3_VERSION,
    DeployedFunction,
    deployed_functions,
    import_probe,
    parse_probe,
    python312,
    run_deployed,
    runtime_sdk,
)

RESULTS = ROOT / "bench" / "results"
HEAVY = ("deeplake", "numpy", "openai", "onnxruntime")


def importtime(stderr: str) -> list[dict[str, Any]]:
    """`-X importtime` lines as {module, depth, self_ms, cumulative_ms}."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "[us]" in line:
            continue
        own, cumulative, name = line.removeprefix("import time:").split("|", 2)
        depth = (len(name) - len(name.lstrip())) // 2
        rows.append(
            {
                "module": name.strip(),
                "depth": depth,
                "self_ms": int(own) / 1000,
                "cumulative_ms": int(cumulative) / 1000,
            }
        )
    return rows


def measure(function: DeployedFunction, sdk: Path, python: str, runs: int) -> dict[str, Any]:
    code = import_probe(function)
    parse_probe(run_deployed(function, code, sdk, python=python))  # warm-up
    seconds, cpu, modules = [], [], []
    for _ in range(runs):
        probe = parse_probe(run_deployed(function, code, sdk, python=python))
        assert probe["callable"], f"{function.logical_id}: the handler is not callable"
        seconds.append(probe["seconds"])
        cpu.append(probe["cpu_seconds"])
        modules = probe["modules"]
    traced = run_deployed(function, code, sdk, python=python, options=("-X", "importtime"))
    parse_probe(traced)
    rows = [r for r in importtime(traced.stderr) if r["module"] != function.module]
    heaviest = sorted(rows, key=lambda r: r["cumulative_ms"], reverse=True)[:10]
    return {
        "function": function.logical_id,
        "layers": [p.parent.name for p in function.layers],
        "runs_s": seconds,
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "cpu_runs_s": cpu,
        "cpu_median_s": statistics.median(cpu),
        "modules": len(modules),
        "heavy_modules": sorted({m.split(".")[0] for m in modules} & set(HEAVY)),
        "heaviest": heaviest,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per function")
    parser.add_argument("--only", nargs="*", help="logical ids (default: every function)")
    parser.add_argument("--label", default="", help="a note stored in the JSON (e.g. before)")
    parser.add_argument("--output", type=Path, default=RESULTS / "coldstart.json")
    parser.add_argument(
        "--build", type=Path, default=BUILD, help="a copy of .aws-sam/build (to compare builds)"
    )
    args = parser.parse_args()

    if not args.build.is_dir():
        print(f"{args.build} does not exist: run `sam build` (./scripts/lint.sh)", file=sys.stderr)
        return 2
    sdk = runtime_sdk()
    python = python312()
    functions = [
        f
        for f in deployed_functions(args.build.resolve())
        if not args.only or f.logical_id in args.only
    ]
    results = []
    for function in functions:
        result = measure(function, sdk, python, args.runs)
        results.append(result)
        print(
            f"{function.logical_id:24} median {result['median_s']:.3f} s  "
            f"min {result['min_s']:.3f} s  cpu {result['cpu_median_s']:.3f} s  "
            f"{result['modules']} modules",
            flush=True,
        )

    print()
    print("| function | layers | median (s) | min (s) | CPU median (s) | modules |")
    print("|---|---|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['function']} | {' + '.join(r['layers'])} | {r['median_s']:.2f} | "
            f"{r['min_s']:.2f} | {r['cpu_median_s']:.2f} | {r['modules']} |"
        )
    for r in results:
        print(f"\n{r['function']}: heaviest imports (cumulative ms, self ms)")
        for row in r["heaviest"]:
            indent = "  " * row["depth"]
            print(f"  {row['cumulative_ms']:8.1f} {row['self_ms']:7.1f}  {indent}{row['module']}")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "label": args.label,
                "build": str(args.build),
                "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "loadavg": Path("/proc/loadavg").read_text().strip(),
                "python": platform.python_version(),
                "runtime_boto3": RUNTIME_BOTO3_VERSION,
                "runs": args.runs,
                "functions": results,
            },
            indent=2,
        )
    )
    print(f"\nwritten: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
