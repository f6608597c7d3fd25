"""Compare two results folders' tables (timings are not in the tables): the check that a reproduction matches.

    python benchmarks/compare_results.py results/demo /tmp/fresh/results/demo

Prints the differences and exits 1 when there are any.
"""

from __future__ import annotations

import sys

from dynad.results import compare_tables


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    diffs = compare_tables(args[0], args[1])
    for d in diffs:
        print(d)
    print(f"{len(diffs)} differences between the tables of {args[0]} and {args[1]}")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
