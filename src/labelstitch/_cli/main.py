"""Entry point of the ``labelstitch`` console script: argument parsing over the public API."""

from __future__ import annotations

import argparse
import inspect
import json
import signal
import sys
import threading
from collections.abc import Sequence

from .. import api
from .common import ExitCode, _ids, _params, _progress
from .process import Stopped, handle_signals, log_to_stderr
from .scores import add_commands
from . import meshes as _meshes
from .._version import __version__


# ----------------------------------------------------------------------------- commands


def _cmd_run(args: argparse.Namespace) -> ExitCode:
    if args.mesh:  # a DVID output needs a local folder for the pieces: said before the run, not after
        config = api.RunConfig.load(args.config)
        api.check_shapes_work(str(config.output), args.work or config.checkpoint_dir)
    result = api.run(
        args.config,
        executor=args.executor,
        workers=args.workers,
        spark_master=args.spark_master, dask_scheduler=args.dask_scheduler,
        overwrite=args.overwrite,
        resume=args.resume,
        create_output=args.create_output,
        progress=_progress(args),
    )
    print(json.dumps(result.to_dict()) if args.json else result.table())
    if result.failures:
        return ExitCode.FAILED
    if args.mesh:
        _meshes.mesh_after_run(args, str(api.RunConfig.load(args.config).output))
    return ExitCode.OK


def _cmd_info(args: argparse.Namespace) -> ExitCode:
    made = api.info(args.output)
    print(json.dumps(made) if args.json else api.format_provenance(made))
    return ExitCode.OK


def _cmd_status(args: argparse.Namespace) -> ExitCode:
    status = api.run_status(args.checkpoints)
    print(json.dumps(status) if args.json else api.format_status(status))
    return ExitCode.OK


def _cmd_stitch(args: argparse.Namespace) -> ExitCode:
    result, seconds = api.restitch(
        args.config, rule=args.rule, rule_params=_params(args.param) if args.rule else None, output=args.output,
        overwrite=args.overwrite, create_output=args.create_output, executor=args.executor, workers=args.workers,
        spark_master=args.spark_master, dask_scheduler=args.dask_scheduler, progress=_progress(args),
    )
    summary = {**result.summary(), "seconds": {k: round(v, 3) for k, v in seconds.items()}}
    print(json.dumps(summary) if args.json else
          f"stitched with {summary['rule']} {summary['params'] or ''}: {summary['matches']} matches, "
          f"{summary['bodies']} bodies in {sum(seconds.values()):.2f} s")
    if args.mesh:  # only the bodies the new stitch changed are meshed again
        _meshes.mesh_after_run(args, args.output or str(api.RunConfig.load(args.config).output))
    return ExitCode.OK


def _cmd_train_segmentor(args: argparse.Namespace) -> ExitCode:
    validation = None
    if args.validation:
        try:
            z0, z1 = (int(v) for v in args.validation.split(":"))
        except ValueError:
            raise ValueError(f"--validation {args.validation!r}: write Z0:Z1, e.g. 150:200") from None
        validation = (z0, z1)
    result = api.train(args.grayscale, args.ground_truth, args.out, validation=validation, trees=args.trees,
                       samples=args.samples, two_stage=args.two_stage, mitochondria=args.mitochondria,
                       affinities=args.affinities, overwrite=args.overwrite, progress=_progress(args))
    if args.json:
        print(json.dumps({"segmentor": result.segmentor, "path": result.path,
                          "choices": [{"choice": n, **s.to_dict()} for n, s in result.choices]}))
        return ExitCode.OK
    print(result.table())
    print(f"\nwrote {result.path}; use it in a config as \"options\": {{\"segmentor\": {json.dumps(result.path)}}} "
          f"(or paste it as options.segmentor.configuration):\n{json.dumps(result.segmentor, indent=2)}")
    return ExitCode.OK


def _cmd_tune(args: argparse.Namespace) -> ExitCode:
    scores, front = api.tune(args.config, args.ground_truth, executor=args.executor, workers=args.workers,
                             spark_master=args.spark_master, dask_scheduler=args.dask_scheduler, progress=_progress(args))
    if args.json:
        print(json.dumps({"front": [s.to_dict() for s in front], "tried": len(scores)}))
        return ExitCode.OK
    print(f"{len(scores)} settings scored; the Pareto front of false merge against false split "
          "(no other setting is better on both):")
    print(api.format_scores(front))
    print("\nuse one: labelstitch stitch CONFIG --rule RULE --param KEY=VALUE ... (+cc: "
          "options.stitch-connected-components: true)")
    return ExitCode.OK


def _cmd_explain(args: argparse.Namespace) -> ExitCode:
    info = api.explain(args.body, args.output, checkpoints=args.checkpoints)
    print(json.dumps(info) if args.json else api.format_explanation(info))
    if not args.json:
        print(f"\nsee it: labelstitch view {args.output} --bodies {args.body}")
    return ExitCode.OK


def _cmd_view(args: argparse.Namespace) -> ExitCode:
    bodies = _ids(args.bodies) or []
    width, _, height = args.size.partition("x")
    with api.view(args.output, grayscale=args.grayscale, bodies=bodies, port=args.port,
                  layout="xy" if args.screenshot else "4panel") as viewing:
        if args.screenshot:
            if viewing.meshes and bodies:  # the selected bodies in 3-D beside the cross-section
                viewing.set_layout("xy-3d")
            if args.hide_segmentation:
                viewing.show("segmentation", False)
            viewing.screenshot(args.screenshot, size=(int(width), int(height)))
            print(json.dumps({"screenshot": args.screenshot, "layers": viewing.layers}) if args.json else f"wrote {args.screenshot}")
            return ExitCode.OK
        print(json.dumps({"url": viewing.url, "layers": viewing.layers}) if args.json else
              f"Neuroglancer: {viewing.url}\n(layers: {', '.join(viewing.layers)}; serving on 127.0.0.1 until Ctrl-C)", flush=True)
        if not args.no_browser:
            import webbrowser

            webbrowser.open(viewing.url)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return ExitCode.OK


def _cmd_plugins(args: argparse.Namespace) -> ExitCode:
    found, executors = api.describe_plugins(), api.describe_executors()
    if args.json:
        print(json.dumps({
            **{stage: {name: {"plugin": info["plugin"], "across_blocks": info["across_blocks"], "reads": info["reads"],
                              "writes": info["writes"], "bytes_per_voxel": info["bytes_per_voxel"],
                              "parameters": {k: (None if v is inspect.Parameter.empty else v)
                                             for k, v in info["parameters"].items()}}
                       for name, info in functions.items()}
               for stage, functions in found.items()},
            "executors": executors,
        }))
        return ExitCode.OK
    print(api.format_plugins(found, executors))
    return ExitCode.OK


def _cmd_config(args: argparse.Namespace) -> ExitCode:
    if args.schema:
        print(json.dumps(api.config_schema(), indent=2))
    elif args.example:
        print(json.dumps(api.config_example(), indent=2))
    elif args.keys:
        print(api.config_keys())
    elif args.check:
        _, plan, notes = api.check_config(args.check, executor=args.executor, workers=args.workers,
                                          spark_master=args.spark_master, dask_scheduler=args.dask_scheduler)
        if args.json:
            print(json.dumps({"config": args.check, "valid": True, "subvolumes": len(plan), "chunk-size": list(plan.block),
                              "overlap": list(plan.halo), "notes": notes}))
            return ExitCode.OK
        print(f"{args.check}: valid; {len(plan)} subvolumes of {plan.block} with a {plan.halo} halo")
        for note in notes:
            print(f"  {note}")
    else:
        print("give --schema, --example, --keys or --check CONFIG", file=sys.stderr)
        return ExitCode.USAGE_ERROR
    return ExitCode.OK


def _cmd_train(args: argparse.Namespace) -> ExitCode:
    info = api.train_pixel_classifier(
        args.grayscale, args.labels, args.output, annotations=args.annotations, trees=args.trees, samples=args.samples,
        two_stage=args.two_stage, mitochondria=args.mitochondria, affinities=args.affinities,
    )
    stages = " in two stages" if args.two_stage else " and an affinity forest" if args.affinities else ""
    print(json.dumps({**info, "path": args.output}, default=str) if args.json else
          f"trained on {info['samples']} voxels with {args.trees} trees{stages}; wrote {args.output}")
    return ExitCode.OK


def _cmd_demo(args: argparse.Namespace) -> ExitCode:
    from ..demo import run_demo

    rows, setup = run_demo(
        (args.depth, args.size, args.size),
        block=args.block,
        halo=args.halo,
        n_neurites=args.neurites,
        seed=args.seed,
        output=args.output,
        progress=_progress(args),
    )
    if args.json:
        print(json.dumps({"setup": setup, "rows": [r.to_dict() for r in rows]}))
        return ExitCode.OK
    print(
        f"Synthetic EM volume {tuple(setup['shape'])} with {setup['true_bodies']} true bodies and an image artifact "
        f"(faded membranes) in the box {setup['artifact'][0]}-{setup['artifact'][1]}.\n"
        f"Segmented in {setup['subvolumes']} subvolumes of {args.block}^3 with a {args.halo}-voxel overlap "
        f"({setup['supervoxels']} supervoxels, {setup['seconds_segment']:.1f} s), then stitched with each rule:\n"
    )
    print(api.format_scores(rows))
    none = next(r for r in rows if r.rule == "none")
    best = min(rows, key=lambda r: r.total)
    print(f"\nBest total VI: {best.rule} ({best.total:.3f} bits, vs {none.total:.3f} without stitching).")
    print(f"Wrote {args.output}/: grayscale.zarr, truth.zarr, segmentation.zarr, compare/<rule>.zarr, summary.json, "
          "slices.png, vi-merge.png, vi-split.png")
    print(f"\nLook at it in Neuroglancer: labelstitch view {args.output}/segmentation.zarr")
    return ExitCode.OK


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labelstitch", description="Segment very large EM volumes block by block and stitch the blocks."
    )
    parser.add_argument("--version", action="version", version=f"labelstitch {__version__}")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True)
    # every command takes the same output flags
    out = argparse.ArgumentParser(add_help=False)
    shown = out.add_argument_group("output")
    shown.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    shown.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr (warnings and errors still)")
    # every command that runs work takes the same executor options
    where = argparse.ArgumentParser(add_help=False)
    group = where.add_argument_group("where the work runs")
    group.add_argument("--executor", default="serial",
                       help="serial (default: one process), processes (every core of this machine), spark (a Spark "
                            "session: needs Java 17 or 21; local[*] or --spark-master), dask (a Dask cluster: "
                            "labelstitch[dask]; a local one or --dask-scheduler), or an executor plugin's name "
                            "(installed with a package; see docs/cluster.md)")
    group.add_argument("--workers", type=int, default=None, help="worker processes for --executor processes (default: all cores)")
    group.add_argument("--spark-master", default=None, help="Spark master URL for --executor spark (default local[*])")
    group.add_argument("--dask-scheduler", default=None, metavar="tcp://HOST:PORT",
                       help="Dask scheduler for --executor dask (default: a local cluster of --workers processes)")

    p = sub.add_parser("run", help="segment and stitch a volume as a config file says", parents=[where, out])
    p.add_argument("config", help="JSON or YAML config (see `labelstitch config --example`)")
    p.add_argument("--resume", action="store_true", help="continue a crashed run from options.checkpoint-dir")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output (only once the run succeeds)")
    p.add_argument("--create-output", action="store_true", help="create a missing DVID output instance (labelmap, 32³)")
    p.add_argument("--mesh", action="store_true", help="then mesh every body (as `labelstitch mesh OUTPUT --resume`)")
    p.add_argument("--work", default=None, metavar="DIR", help="with --mesh and a DVID output: a local folder for the "
                   "meshes' pieces (default: options.checkpoint-dir)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("info", help="how an output was made: versions, commit, config, input fingerprints, models, "
                       "executor, hosts, times and counts of every run that wrote it", parents=[out])
    p.add_argument("output", help="an output volume (any volume string)")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("status", help="how a run is going or how it ended: blocks done, retried, failed (from another "
                       "shell too)", parents=[out])
    p.add_argument("checkpoints", help="the run's options.checkpoint-dir")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("stitch", help="stitch again from a finished run's checkpoints (no segmentation)", parents=[where, out])
    p.add_argument("config")
    p.add_argument("--rule", default=None, help="stitching rule (default: the config's)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="a rule parameter (repeatable)")
    p.add_argument("--output", default=None, help="where to write (default: the config's output)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--create-output", action="store_true", help="create a missing DVID output instance")
    p.add_argument("--mesh", action="store_true", help="then mesh the bodies that changed (as `labelstitch mesh OUTPUT --resume`)")
    p.set_defaults(func=_cmd_stitch)

    add_commands(sub, where, out)
    _meshes.add_commands(sub, where, out)

    p = sub.add_parser("tune", help="search the stitching rules' thresholds on a finished run; print the Pareto front",
                       parents=[where, out])
    p.add_argument("config")
    p.add_argument("--ground-truth", required=True, help="label volume to score against")
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser("explain", help="the chain of matches that built one body of an output", parents=[out])
    p.add_argument("body", type=int)
    p.add_argument("--output", required=True, help="the output volume (its .stitch.npz record is read)")
    p.add_argument("--checkpoints", default=None, help="for a DVID output: the run's checkpoint folder, which holds the record")
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("view", help="look at a segmentation over its EM in Neuroglancer (served on 127.0.0.1)", parents=[out])
    p.add_argument("output", help="the segmentation (any volume string; an OME-Zarr output shows its pyramid)")
    p.add_argument("--grayscale", default=None, help="the EM to show under it (default: the image the run recorded)")
    p.add_argument("--bodies", default=None, metavar="ID,ID,...", help="select these bodies")
    p.add_argument("--port", type=int, default=0, help="port of the viewer (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="print the URL without opening a browser")
    p.add_argument("--screenshot", metavar="FILE.png", help="draw it in a headless Chromium, write the PNG and exit "
                   "(with --bodies and meshes from `labelstitch mesh`: the bodies in 3-D beside the cross-section)")
    p.add_argument("--size", default="800x600", metavar="WxH", help="screenshot size in pixels (default 800x600)")
    p.add_argument("--hide-segmentation", action="store_true", help="screenshot the EM alone")
    p.set_defaults(func=_cmd_view)

    p = sub.add_parser("plugins", help="list every stage function with its parameters and defaults", parents=[out])
    p.set_defaults(func=_cmd_plugins)

    p = sub.add_parser("config", help="print the config schema or an example, or check a config (for the executor given)",
                       parents=[where, out])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--schema", action="store_true", help="print the JSON schema")
    g.add_argument("--example", action="store_true", help="print an example config")
    g.add_argument("--keys", action="store_true", help="print every config key: meaning, unit and default (Markdown)")
    g.add_argument("--check", metavar="CONFIG", help="validate a config and its volumes and plugins")
    p.set_defaults(func=_cmd_config)

    p = sub.add_parser("train-pixel-classifier", help="fit the pixel_classifier plugin from labelled voxels", parents=[out])
    p.add_argument("grayscale", help="grayscale volume")
    p.add_argument("labels", help="a label volume (membranes = label changes and 0) or, with --annotations, 1/2/3/0 marks")
    p.add_argument("output", help="classifier file to write")
    p.add_argument("--annotations", action="store_true", help="labels are annotations: 1 membrane, 2 inside, 3 mitochondrion, 0 unknown")
    p.add_argument("--trees", type=int, default=50, help="random-forest size (default 50)")
    p.add_argument("--samples", type=int, default=200_000, help="annotated voxels used at most (default 200000)")
    p.add_argument("--two-stage", action="store_true", help="add a second, auto-context forest (two_stage_predictions)")
    p.add_argument("--mitochondria", metavar="VOLUME",
                   help="a mitochondria mask (non-zero = mitochondrion): predict a second channel, their probability")
    p.add_argument("--affinities", action="store_true",
                   help="also a forest of nearest-neighbour affinities from the labels (the affinity_classifier stage)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("train", help="train and tune a whole segmentor on a volume with ground truth; writes DIR/segmentor.json", parents=[out])
    p.add_argument("grayscale", help="grayscale volume")
    p.add_argument("ground_truth", help="its neurons (label volume)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the models and segmentor.json")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DIR (once training has succeeded)")
    p.add_argument("--validation", metavar="Z0:Z1", help="held-out Z range to tune on (default: the last quarter, then the first quarter; each setting scored by its mean)")
    p.add_argument("--trees", type=int, default=50, help="voxel classifier's forest size (the agglomeration's is twice)")
    p.add_argument("--samples", type=int, default=200_000,
                   help="annotated voxels (and voxel pairs) each voxel classifier learns from at most (default 200000)")
    p.add_argument("--two-stage", action="store_true", help="a two-stage (auto-context) voxel classifier")
    p.add_argument("--mitochondria", metavar="VOLUME",
                   help="a mitochondria mask (non-zero = mitochondrion): a mitochondria channel, and context-aware "
                        "agglomerations (mitochondria merged last) tried too")
    p.add_argument("--affinities", action="store_true",
                   help="also an affinity forest, and among the choices affinity_agglomeration with its affinities and "
                        "the learned agglomeration (greedy, multicut) with their features")
    p.set_defaults(func=_cmd_train_segmentor)

    p = sub.add_parser("demo", help="the whole pipeline on a synthetic EM volume, stitched with every rule", parents=[out])
    p.add_argument("--size", type=int, default=160, help="Y and X size in voxels (default 160)")
    p.add_argument("--depth", type=int, default=96, help="Z size in voxels (default 96)")
    p.add_argument("--block", type=int, default=48, help="subvolume interior size (default 48)")
    p.add_argument("--halo", type=int, default=8, help="overlap voxels on each side (default 8)")
    p.add_argument("--neurites", type=int, default=120, help="number of true bodies (default 120)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--output", default="demo-output", help="folder for volumes, summary.json and slices.png")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log_to_stderr()
    if argv is None:  # the console script, not a call from Python (which keeps its own handlers)
        handle_signals()
    try:
        try:
            return int(args.func(args))
        except Exception as exc:  # after a signal, whatever fails on the stopped workers is the stop
            if api.stop_requested() is None:
                raise
            raise api.stop_requested() from exc
    except ValueError as exc:  # config, store, plugin and input errors are all ValueErrors
        if args.debug:
            raise
        print(f"labelstitch: error: {exc}", file=sys.stderr)
        unreachable = isinstance(exc, api.DvidError) and (exc.status is None or exc.status >= 500)
        return int(ExitCode.FAILED if unreachable else ExitCode.USAGE_ERROR)
    except (RuntimeError, OSError) as exc:  # a worker died, the cluster went away, a disk failed
        if args.debug:
            raise
        print(f"labelstitch: error: {exc}", file=sys.stderr)
        return int(ExitCode.FAILED)
    except KeyboardInterrupt as exc:
        note = api.interruption_note(args.config) if args.command == "run" else ""
        signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
        how = "stopped by SIGTERM" if signum == signal.SIGTERM else "interrupted"
        print(f"labelstitch: {how}{'; ' + note if note else ''}", file=sys.stderr)
        return 128 + int(signum)  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
    except Exception as exc:  # anything else is a bug
        if args.debug:
            raise
        print(
            f"labelstitch: internal error: {type(exc).__name__}: {exc}\n"
            "labelstitch: this is a bug; please report it with the command and `--debug` output",
            file=sys.stderr,
        )
        return int(ExitCode.INTERNAL_ERROR)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
