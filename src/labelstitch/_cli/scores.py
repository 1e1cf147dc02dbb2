"""The commands that score segmentations: ``evaluate``, ``compare`` and ``audit``."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from .. import api
from .common import ExitCode, _params, _progress, _size


def _variants(specs: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """``NAME:RULE,KEY=VALUE,...`` (or just ``NAME`` for a rule's defaults) as variants."""
    variants = []
    for spec in specs:
        name, _, rest = spec.partition(":")
        rule, *pairs = rest.split(",") if rest else [name]
        variants.append((name, rule, _params([p for p in pairs if p])))
    return variants


def _cmd_compare(args: argparse.Namespace) -> ExitCode:
    rows = api.compare(args.config, args.ground_truth, variants=_variants(args.variant), region=args.region,
                       write=args.write, executor=args.executor, workers=args.workers, spark_master=args.spark_master, dask_scheduler=args.dask_scheduler,
                       progress=_progress(args))
    if args.figures:
        config = api.RunConfig.load(args.config)
        os.makedirs(args.figures, exist_ok=True)
        for part in ("merge", "split"):
            api.write_heatmaps(os.path.join(args.figures, f"vi-{part}.png"), [(r.name or "", r.regional) for r in rows],
                               part=part, resolution=config.resolution)
        if args.write:
            api.write_comparison_slices(os.path.join(args.figures, "slices.png"), config.input, args.ground_truth, rows)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows]))
        return ExitCode.OK
    print(api.format_scores(rows))
    if args.figures:
        slices = f" and {args.figures}/slices.png (the middle Z slice of every rule)" if args.write else \
            " (slices.png needs the written volumes: add --write)"
        print(f"wrote {args.figures}/vi-merge.png and vi-split.png (one row per rule, one tile per Z layer of {args.region}^3 "
              f"regions){slices}")
    return ExitCode.OK


def _cmd_evaluate(args: argparse.Namespace) -> ExitCode:
    if args.ground_truth is None and args.skeletons is None:
        raise ValueError("evaluate needs a reference: a ground-truth volume (GT), --skeletons GT_SKELETONS, or both")
    if args.ground_truth is None and (args.floor or args.heatmap):
        raise ValueError("--floor and --heatmap need a ground-truth volume (GT)")
    erl = api.evaluate_skeletons(args.segmentation, args.skeletons) if args.skeletons else None
    if args.ground_truth is None:
        print(json.dumps({"skeletons": erl.to_dict()}) if args.json else erl)
        return ExitCode.OK
    score = api.evaluate(args.segmentation, args.ground_truth, ignore_gt_zero=not args.keep_zero)
    report = score.to_dict()
    if erl is not None:
        report["skeletons"] = erl.to_dict()
    floor = None
    if args.floor:
        floor = api.agglomeration_floor(args.segmentation, args.ground_truth, ignore_gt_zero=not args.keep_zero)
        report["floor"] = floor.to_dict()
    if args.heatmap:
        regional = api.evaluate_regions(args.segmentation, args.ground_truth, region=args.region)
        stem, ext = os.path.splitext(args.heatmap)
        api.write_heatmaps(args.heatmap, [("merge", regional)], part="merge")
        api.write_heatmaps(f"{stem}-split{ext}", [("split", regional)], part="split")
        report["heatmap"] = args.heatmap
    if args.json:
        print(json.dumps(report))
    else:
        print(score)
        if erl is not None:
            print(erl)
        if args.heatmap:
            print(f"wrote {args.heatmap} (false merge VI per {args.region}^3 region, one tile per Z layer) and {stem}-split{ext}")
        if floor is not None:
            print(f"\nperfect agglomeration of these segments (each merged into the ground-truth body it overlaps most):\n{floor}")
            print("its false merges come from segments that straddle bodies: no agglomeration can undo them")
    return ExitCode.OK


def _cmd_audit(args: argparse.Namespace) -> ExitCode:
    found = api.audit(args.output, ground_truth=args.ground_truth, against=args.against, width=args.width,
                      min_contact=args.min_contact, subvolume_size=_size(args.subvolume_size), progress=_progress(args))
    print(json.dumps(found.to_dict()) if args.json else found)
    return ExitCode.OK


def add_commands(sub: Any, where: argparse.ArgumentParser, out: argparse.ArgumentParser) -> None:
    """Add ``compare``, ``evaluate`` and ``audit`` to the ``labelstitch`` parser."""
    p = sub.add_parser("compare", help="stitch with every rule from checkpoints and score each (the paper's Table 2)",
                       parents=[where, out])
    p.add_argument("config")
    p.add_argument("--ground-truth", required=True, help="label volume to score against")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:RULE,KEY=VALUE,...",
                   help="an extra parameter set, e.g. medium100:medium,min_overlap=100 (repeatable)")
    p.add_argument("--figures", metavar="DIR", help="write vi-merge.png and vi-split.png (the paper's Figure 9)")
    p.add_argument("--region", type=int, default=32, help="region size of the figures (default 32)")
    p.add_argument("--write", action="store_true",
                   help="also write every rule's volume (beside the checkpoints, CHECKPOINTS-compare/NAME.zarr) and score "
                   "it from there; without it nothing is written and the scores come from per-subvolume tables")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("evaluate", help="variation of information of a segmentation against ground truth", parents=[out])
    p.add_argument("segmentation", help="volume to score (e.g. out.zarr)")
    p.add_argument("ground_truth", nargs="?", default=None, help="ground-truth label volume (optional with --skeletons)")
    p.add_argument("--skeletons", default=None, metavar="GT_SKELETONS",
                   help="also the expected run length (ERL) along ground-truth skeletons: an SWC file, a folder of "
                   "ID.swc files or a precomputed skeleton folder, in physical units")
    p.add_argument("--heatmap", metavar="FILE.png", help="write per-region false merge/split VI (the paper's Figure 9)")
    p.add_argument("--region", type=int, default=32, help="region size for --heatmap (default 32)")
    p.add_argument("--keep-zero", action="store_true", help="also score voxels where the ground truth is 0")
    p.add_argument("--floor", action="store_true",
                   help="also print the perfect-agglomeration floor: the VI if each segment were merged into the ground-truth body it overlaps most")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("audit", help="do the subvolume faces carry more error than the subvolume middles? (and do two "
                       "runs with other subvolume sizes agree?)", parents=[out])
    p.add_argument("output", help="the segmentation to audit (its subvolume grid comes from its provenance)")
    p.add_argument("--ground-truth", default=None, help="label volume to score the bands against")
    p.add_argument("--against", default=None, metavar="OTHER_OUTPUT",
                   help="another segmentation of the same volume (e.g. other subvolume sizes): their VI, the bodies "
                   "they share, and the bands scored against it")
    p.add_argument("--width", type=int, default=8, help="voxels each side of a face or middle plane (default 8)")
    p.add_argument("--min-contact", type=int, default=10,
                   help="voxel pairs across a plane for a split or merge crossing to count (default 10)")
    p.add_argument("--subvolume-size", default=None, metavar="N or Z,Y,X",
                   help="the grid to audit, for an output labelstitch did not make (default: the one it was made with)")
    p.set_defaults(func=_cmd_audit)
