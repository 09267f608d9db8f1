"""The datasets command line: `python -m tfllm.datasets list | get NAME[:SPLIT] ...`."""

import argparse
import sys

from tfllm.cli import exit_code
from tfllm.datasets.fetch import cache_dir, dataset_path, is_cached, parse
from tfllm.datasets.registry import DATASETS


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m tfllm.datasets",
        description="Public datasets by name, downloaded from pinned commits, checked against "
                    "SHA-256 and cached in $TFLLM_DATA (default ~/.cache/tfllm/data).")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every dataset: name, what, splits, size, licence, cached")
    get = sub.add_parser("get", help="fetch datasets; print one file path per NAME[:SPLIT]")
    get.add_argument("specs", nargs="+", metavar="NAME[:SPLIT]",
                     help="a dataset (its training file) or one of its splits, e.g. sst2:valid")
    return p.parse_args(argv)


def _megabytes(n):
    return f"{n / 1e6:.1f} MB"


def table():
    """The `list` output: one row per dataset (the default split first, starred)."""
    rows = [("name", "what", "splits", "size", "licence", "cached")]
    for d in DATASETS.values():
        splits = [f"{d.default}*"] + [s for s in d.splits if s != d.default]
        rows.append((d.name, d.what, ",".join(splits), _megabytes(d.size), d.licence,
                     "yes" if is_cached(d) else "no"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1]
             for row in rows]
    return "\n".join([*lines, f"cache: {cache_dir()} (set TFLLM_DATA to move it); "
                      "* = the split NAME alone means"])


def main(argv=None):
    args = parse_args(argv)

    def run():
        if args.command == "list":
            print(table())
        else:
            for spec in args.specs:  # every name checked before the first download
                parse(spec)
            for spec in args.specs:
                print(dataset_path(spec))

    return exit_code(run)


if __name__ == "__main__":
    sys.exit(main())
