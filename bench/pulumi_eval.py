"""Benchmark 5 - Pulumi program evaluation time under mocks, for the dev stack.

The real ``__main__.py`` runs with ``Pulumi.dev.yaml``'s config under
``pulumi.runtime.set_mocks`` (the harness the Pulumi tests use), so what is timed
is the program itself: config validation, the components, the manifest
builders and the engine's resource registrations against in-process mocks -
no CLI, no engine process, no cluster. The first run in a process also imports
``pulumi_kubernetes`` and the components (cold); later runs are warm.

    python bench/pulumi_eval.py [--runs 20] [--write]
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence

from _common import REPO_ROOT, Row, base_parser, print_rows, summarize, update_benchmarks_md

__all__ = ["main"]

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print its figures; with ``--write`` update BENCHMARKS.md."""
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else "pulumi evaluation")
    parser.add_argument("--runs", type=int, default=20, help="warm runs after the cold one")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    start = time.perf_counter()
    from tests.pulumi.harness import dev_config, run_stack

    import_s = time.perf_counter() - start
    config = dev_config()
    start = time.perf_counter()
    first = run_stack(config)
    cold_s = time.perf_counter() - start
    warm: list[float] = []
    for _ in range(args.runs):
        start = time.perf_counter()
        run = run_stack(config)
        warm.append(time.perf_counter() - start)
        if len(run.resources) != len(first.resources):
            raise RuntimeError("runs declared different resources")
    w = summarize(warm)
    kinds = Counter(
        "provider" if r.typ.startswith("pulumi:providers:") else r.typ.split(":")[-1]
        for r in first.resources
    )
    rows = [
        Row(
            "5a",
            "Pulumi program evaluation under mocks, dev stack (warm run)",
            "reported",
            f"median {w.median * 1e3:.0f} ms, p95 {w.p95 * 1e3:.0f} ms "
            f"({len(first.resources)} resources)",
            "n/a",
            "n/a",
        ),
        Row(
            "5b",
            "Pulumi program evaluation under mocks, dev stack (first run in a process)",
            "reported",
            f"{cold_s * 1e3:.0f} ms (+ {import_s * 1e3:.0f} ms importing pulumi)",
            "n/a",
            "n/a",
        ),
    ]
    declared = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    extra = [f"declared: {declared}", f"outputs: {', '.join(sorted(first.outputs))}"]
    print_rows("5. Pulumi program evaluation", rows, extra)
    if args.write:
        command = f"python bench/pulumi_eval.py --runs {args.runs} --write"
        notes = f"""### 5. Pulumi program evaluation

`__main__.py` with the config of `Pulumi.dev.yaml`, run under `pulumi.runtime.set_mocks`
by the harness of the Pulumi tests (`tests/pulumi/harness.py`: a fresh
`contextvars.Context` per run, resources collected by the mocks, stack outputs
resolved). No Pulumi CLI or engine process is involved (none is installed here), so this
is the program's own cost: config validation, components, manifest builders and resource
registration. {len(first.resources)} resources declared ({declared}).

- first run in the process (imports `pulumi_kubernetes` and the components):
  {cold_s * 1e3:.0f} ms, after {import_s * 1e3:.0f} ms importing `pulumi` and the harness
- {args.runs} warm runs: median {w.median * 1e3:.0f} ms, p95 {w.p95 * 1e3:.0f} ms, min
  {w.minimum * 1e3:.0f} ms, max {w.maximum * 1e3:.0f} ms
"""
        update_benchmarks_md(5, rows, command, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
