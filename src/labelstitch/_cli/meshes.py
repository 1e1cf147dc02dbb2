"""The commands that make shapes of bodies: ``mesh`` and ``skeletonize``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .. import api
from .common import ExitCode, _ids, _progress, _size


def _cmd_mesh(args: argparse.Namespace) -> ExitCode:
    summary = api.mesh(args.output, bodies=_ids(args.bodies), executor=args.executor, workers=args.workers,
                       spark_master=args.spark_master, dask_scheduler=args.dask_scheduler, resume=args.resume,
                       overwrite=args.overwrite, max_error=args.max_error, lods=args.lods, sharded=args.sharded, subvolume_size=_size(args.subvolume_size),
                       work=args.work, supervoxels=args.supervoxels, progress=_progress(args))
    print(json.dumps(summary.to_dict()) if args.json else summary)
    return ExitCode.OK


def _cmd_skeletonize(args: argparse.Namespace) -> ExitCode:
    summary = api.skeletonize(args.output, bodies=_ids(args.bodies), executor=args.executor, workers=args.workers,
                              spark_master=args.spark_master, dask_scheduler=args.dask_scheduler, resume=args.resume,
                              overwrite=args.overwrite, swc=args.swc, context=args.context, scale=args.scale,
                              const=args.const, sharded=args.sharded, subvolume_size=_size(args.subvolume_size), work=args.work,
                              progress=_progress(args))
    print(json.dumps(summary.to_dict()) if args.json else summary)
    return ExitCode.OK


def mesh_after_run(args: argparse.Namespace, output: str) -> None:
    """``run --mesh``: mesh the output just written, keeping whatever meshes are current (and,
    for a DVID labelmap output, its supervoxels' meshes too)."""
    for supervoxels in (False, True) if api.keeps_supervoxels(output) else (False,):
        summary = api.mesh(output, executor=args.executor, workers=args.workers, spark_master=args.spark_master,
                           dask_scheduler=args.dask_scheduler, resume=True, supervoxels=supervoxels,
                           work=getattr(args, "work", None), progress=_progress(args))
        if not args.json:
            print(summary)


def add_commands(sub: Any, where: argparse.ArgumentParser, out: argparse.ArgumentParser) -> None:
    """Add ``mesh`` and ``skeletonize`` to the ``labelstitch`` parser."""
    p = sub.add_parser("mesh", help="a 3-D mesh of every body, made subvolume by subvolume, in Neuroglancer's "
                       "precomputed format beside the output", parents=[where, out])
    p.add_argument("output", help="the segmentation to mesh (any volume string; its subvolume grid comes from its provenance)")
    p.add_argument("--bodies", default=None, metavar="IDS", help="only these bodies, e.g. 3,17,20 (default: all)")
    p.add_argument("--resume", action="store_true",
                   help="keep the meshes that are current; mesh only the subvolumes and bodies whose labels changed")
    p.add_argument("--overwrite", action="store_true", help="make every mesh again")
    p.add_argument("--max-error", type=float, default=None, metavar="NM",
                   help="how far simplification may move a vertex, in physical units (default: one voxel; 0: none)")
    p.add_argument("--lods", type=int, default=1, metavar="N",
                   help="levels of detail: above 1, Neuroglancer's multi-resolution format (Draco), each level "
                   "simplified with twice the error of the one before (default 1: the legacy format)")
    p.add_argument("--subvolume-size", default=None, metavar="N or Z,Y,X",
                   help="the grid to mesh in (default: the one the output was made with, else 256)")
    p.add_argument("--sharded", action="store_true", help="pack the meshes into Neuroglancer's shard files (multi-resolution "
                   "format; for volumes with many bodies)")
    p.add_argument("--work", default=None, metavar="DIR", help="for a DVID output: a local folder for the pieces "
                   "(default: its run's checkpoint folder); the meshes go to DVID's NAME_meshes keyvalue instance")
    p.add_argument("--supervoxels", action="store_true", help="for a DVID labelmap output: mesh each supervoxel instead, "
                   "into its NAME_sv_meshes tarsupervoxels instance (Draco; --bodies are then supervoxel ids)")
    p.set_defaults(func=_cmd_mesh)

    p = sub.add_parser("skeletonize", help="a skeleton (kimimaro's TEASAR) of every body, made subvolume by subvolume "
                       "and joined into one tree, in Neuroglancer's precomputed format beside the output (and as SWC)",
                       parents=[where, out])
    p.add_argument("output", help="the segmentation (any volume string; its subvolume grid comes from its provenance)")
    p.add_argument("--bodies", default=None, metavar="IDS", help="only these bodies, e.g. 3,17,20 (default: all)")
    p.add_argument("--swc", default=None, metavar="DIR", help="also write one SWC file per body (ID.swc) into DIR")
    p.add_argument("--resume", action="store_true",
                   help="keep the skeletons that are current; make only the subvolumes and bodies whose labels changed")
    p.add_argument("--overwrite", action="store_true", help="make every skeleton again")
    p.add_argument("--context", type=int, default=16, metavar="VOXELS",
                   help="voxels each subvolume reads around its interior (default 16; at least the bodies' width)")
    p.add_argument("--scale", type=float, default=1.5, help="TEASAR: no branch within scale * radius + const of a path (default 1.5)")
    p.add_argument("--const", type=float, default=None, metavar="NM", help="TEASAR's const, physical units (default: 10 voxels)")
    p.add_argument("--subvolume-size", default=None, metavar="N or Z,Y,X",
                   help="the grid to work in (default: the one the output was made with, else 256)")
    p.add_argument("--sharded", action="store_true", help="pack the skeletons into Neuroglancer's shard files")
    p.add_argument("--work", default=None, metavar="DIR", help="for a DVID output: a local folder for the pieces "
                   "(default: its run's checkpoint folder); the skeletons go to DVID's NAME_skeletons keyvalue instance")
    p.set_defaults(func=_cmd_skeletonize)
