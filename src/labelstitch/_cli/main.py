"""Entry point of the ``labelstitch`` console script."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from enum import IntEnum

from .. import __version__


class ExitCode(IntEnum):
    """Exit codes of the ``labelstitch`` command."""

    #: everything worked
    OK = 0
    #: the work ran but some of it failed
    FAILED = 1
    #: the command line or the input was wrong (argparse uses 2 as well)
    USAGE_ERROR = 2
    #: a bug in labelstitch
    INTERNAL_ERROR = 3


def _cmd_demo(args: argparse.Namespace) -> ExitCode:
    from ..demo import format_table, run_demo

    rows, setup = run_demo(
        (args.depth, args.size, args.size),
        block=args.block,
        halo=args.halo,
        n_neurites=args.neurites,
        seed=args.seed,
        output=None if args.no_output else args.output,
    )
    if args.json:
        print(json.dumps({"setup": setup, "rows": [{**r.__dict__, "total": r.total} for r in rows]}))
        return ExitCode.OK
    print(
        f"Synthetic neurites {tuple(setup['shape'])}, {setup['true_bodies']} true bodies, cut into "
        f"{setup['subvolumes']} subvolumes of {args.block}^3 with a {args.halo}-voxel halo "
        f"({setup['faces']} faces).\nEach block was segmented imperfectly: shifted boundaries, "
        f"false splits, and false merges in the artifact subvolumes {setup['artifact_subvolumes']}.\n"
    )
    print(format_table(rows))
    best = min(rows, key=lambda r: r.total)
    none = next(r for r in rows if r.rule == "none")
    print(f"\nBest total VI: {best.rule} ({best.total:.3f} bits, vs {none.total:.3f} without stitching).")
    if not args.no_output:
        print(f"Wrote {args.output}/summary.json and {args.output}/slices.png (truth, then each rule).")
    return ExitCode.OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labelstitch",
        description="Segment very large EM volumes block by block and stitch the blocks.",
    )
    parser.add_argument("--version", action="version", version=f"labelstitch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="stitch a synthetic, imperfectly segmented volume with every rule and score each",
        description="Build a synthetic neurite volume, segment it blockwise with realistic errors, stitch it "
        "with every rule and print false-merge / false-split VI per rule (the paper's Table 2, in small).",
    )
    demo.add_argument("--size", type=int, default=192, help="Y and X size in voxels (default 192)")
    demo.add_argument("--depth", type=int, default=96, help="Z size in voxels (default 96)")
    demo.add_argument("--block", type=int, default=64, help="subvolume interior size (default 64)")
    demo.add_argument("--halo", type=int, default=8, help="overlap voxels on each side (default 8)")
    demo.add_argument("--neurites", type=int, default=150, help="number of true bodies (default 150)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--output", default="demo-output", help="folder for summary.json and slices.png")
    demo.add_argument("--no-output", action="store_true", help="write no files")
    demo.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ValueError as exc:
        print(f"labelstitch: error: {exc}", file=sys.stderr)
        return int(ExitCode.USAGE_ERROR)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
