"""Memory must stay flat as input grows: peak RSS at 5M events within 20% of 1M.

Runs `paymetrics bench` (the real `paymetrics run` in a child process, one core)
at each size and prints events/s and peak RSS side by side.

    .venv/bin/python benchmarks/scaling.py --sizes 1000000 5000000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from paymetrics.bench import run_bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--work-dir", type=Path, default=Path("bench-data"))
    parser.add_argument("--cores", type=int, default=1)
    args = parser.parse_args()
    results = []
    for size in args.sizes:
        result = run_bench(events=size, work_dir=args.work_dir, cores=args.cores)
        results.append(result)
        print(
            f"{size:>10,} events: {result['events_per_second']:>10,.0f} events/s, "
            f"peak RSS {result['peak_rss_mib']:,.0f} MiB",
            flush=True,
        )
    smallest, largest = results[0], results[-1]
    growth = largest["peak_rss_mib"] / smallest["peak_rss_mib"] - 1
    verdict = "flat (within 20%)" if growth <= 0.20 else "NOT flat (over 20%)"
    print(f"peak RSS growth {args.sizes[0]:,} → {args.sizes[-1]:,}: {growth:+.1%}: {verdict}")
    print(json.dumps({"runs": results, "rss_growth": growth}, indent=2))


if __name__ == "__main__":
    main()
