"""`python -m tickscope_dashboards [--check]` (dashboards/ on sys.path): see generate.py."""

from __future__ import annotations

import argparse
import sys

from tickscope_dashboards.generate import ROOT, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tickscope_dashboards", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if anything is stale"
    )
    args = parser.parse_args(argv)
    stale = run(check=args.check)
    for path in stale:
        verb = "stale" if args.check else "wrote"
        print(f"{verb}: {path.relative_to(ROOT)}")
    if args.check and stale:
        print("run `make dashboards` and commit the result", file=sys.stderr)
        return 1
    if not stale:
        print("dashboards, alert links and docs/dashboards.md are current")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
