"""Compare two results folders' tables (timings are not in the tables): the check that a reproduction matches.

    python benchmarks/compare_results.py results/demo /tmp/fresh/results/demo

Prints the differences and exits 1 when there are any.
"""

from __future__ import annotations

import argparse
import sys

from dynad.results import compare_tables


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="exit status: 0 identical, 1 different")
    p.add_argument("a", help="a results/<preset> folder (or its tables/)")
    p.add_argument("b", help="the folder to compare it with")
    args = p.parse_args(argv)
    try:
        diffs = compare_tables(args.a, args.b)
    except FileNotFoundError as e:
        p.error(str(e))
    for d in diffs:
        print(d)
    print(f"{len(diffs)} differences between the tables of {args.a} and {args.b}")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
