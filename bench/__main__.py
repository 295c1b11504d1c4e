"""``python -m bench [--smoke]``: run the benchmarks and write bench/results/*.json."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
from pathlib import Path

# No progress bars from the contenders (omero2pandas): tqdm reads this when it loads.
os.environ.setdefault("TQDM_DISABLE", "1")

from bench import memory  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure omero-flight side by side and write the figures to bench/results/.",
    )
    parser.add_argument("--smoke", action="store_true",
                        help="small tables (CI); figures go to bench/results/smoke/")
    parser.add_argument("--rows", type=int, nargs="+",
                        help="table sizes for the memory benchmark (default 1M, 5M and 10M rows)")
    parser.add_argument("--only", choices=["memory", "client_memory", "outputs", "perf", "soak",
                                           "sql", "listings"],
                        help="run only one benchmark (default: all of them)")
    args = parser.parse_args()
    sizes = args.rows or ([100_000, 400_000] if args.smoke else [1_000_000, 5_000_000, 10_000_000])
    out_dir = RESULTS / "smoke" if args.smoke else RESULTS
    print(f"omero-flight benchmarks on {platform.node()} ({platform.machine()}, "
          f"{platform.python_version()})\n")
    if args.only in (None, "memory"):
        memory.run(sizes, out_dir / "memory.json")
    if args.only in (None, "client_memory"):
        from bench import client_memory

        client_memory.run(args.rows or ([100_000] if args.smoke else [1_000_000, 10_000_000]),
                          out_dir / "client_memory.json", reps=1 if args.smoke else 3,
                          command=("python -m bench " + shlex.join(sys.argv[1:])).strip())
    if args.only in (None, "outputs"):
        from bench import outputs

        outputs.run(sizes[:2], out_dir / "outputs.json")
    if args.only in (None, "soak"):
        from bench import soak

        soak.run(20 if args.smoke else 300, 2_000 if args.smoke else 20_000, out_dir / "soak.json")
    if args.only in (None, "sql"):
        from bench import sql

        sql.run(200_000 if args.smoke else 5_000_000, 1 if args.smoke else 3,
                out_dir / "sql.json")
    if args.only in (None, "listings"):
        from bench import listings

        listings.run(listings.SMOKE if args.smoke else listings.FULL,
                     out_dir / "listings.json",
                     ("python -m bench " + shlex.join(sys.argv[1:])).strip())
    if args.only in (None, "perf"):
        from bench import perf

        command = "python -m bench " + shlex.join(sys.argv[1:])
        perf.run(perf.SMOKE if args.smoke else perf.FULL, out_dir / "perf.json",
                 command.strip())


if __name__ == "__main__":
    main()
