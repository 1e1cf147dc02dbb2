"""What a run says about itself: its counts, its processes' peak memory, and warnings
about results that look wrong (logged to the ``labelstitch`` logger as they are found)."""

from __future__ import annotations

import logging
from typing import Any

from ..stitching import StitchResult
from .planning import PreparedRun
from .values import SegmentedSubvolume

__all__ = ["bodies_of", "counts_of", "peak_memory", "suspicious"]

log = logging.getLogger("labelstitch")


def bodies_of(prepared: PreparedRun, result: StitchResult) -> int:
    """The output's bodies: the stitched ones and the preserved ones."""
    return result.n_bodies + (len(prepared.task.preserved.ids) if prepared.task.preserved is not None else 0)


def counts_of(prepared: PreparedRun, segmented: dict[int, SegmentedSubvolume], computed: int, restored: int,
            result: StitchResult) -> dict[str, Any]:
    plan = prepared.plan
    stored = sum(s.size for s in segmented.values())
    raw = sum(sv.outer.size * 8 for sv in plan)
    return {
        "subvolumes": len(plan),
        "segmented now": computed,
        "restored from checkpoints": restored,
        "supervoxels": sum(s.supervoxels for s in segmented.values()),
        "segments": sum(s.segments for s in segmented.values()),
        "matches": len(result.matches),
        "bodies": bodies_of(prepared, result),
        "checkpoint bytes": stored,
        "uncompressed label bytes": raw,
        "compression ratio": round(raw / stored, 1) if stored else 0,
        "blocks via driver": sum(1 for s in segmented.values() if s.data is not None),
        **({"stitched supervoxels": result.agglomeration["supervoxels"], "graph edges": result.agglomeration["edges"],
            "graph MB on the driver": round(result.agglomeration["graph_bytes"] / 1e6, 1)}
           if result.agglomeration is not None else {}),
    }


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process (the driver) and of its largest child process
    so far (the processes executor's workers), in MB.

    The driver's peak is the kernel's high-water mark of this process's own memory
    (``VmHWM``): ``ru_maxrss`` would also count the memory of the process that started
    ours, since Linux carries the parent's high-water mark across fork and exec (a
    benchmark holding a 1 GB array read as a 2.4 GB driver)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return {}
    driver = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        with open("/proc/self/status") as status:
            hwm = next(line for line in status if line.startswith("VmHWM:"))
        driver = int(hwm.split()[1]) / 1024
    except (OSError, StopIteration, ValueError):  # not Linux: ru_maxrss is the best there is
        pass
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"driver peak MB": round(driver, 1), "worker peak MB": round(workers, 1)}


#: fewer labelled voxels per body than this, over at least DEGENERATE_BODIES bodies: split apart
MIN_MEAN_BODY_VOXELS = 2000
DEGENERATE_BODIES = 100
#: one body with this share of the labelled voxels: merged together
MAX_BODY_SHARE = 0.9
_TRY = ("options.segmentor.configuration (`labelstitch config --example` has untrained settings measured on EM, "
        "docs/quality.md), or train a segmentor on a volume with ground truth (labelstitch train)")


def _degenerate(result: StitchResult) -> list[str]:
    """Warnings about a segmentation that no EM volume plausibly holds: far more bodies than
    neurons could fill, or almost every voxel one body."""
    sizes = result.body_voxels()[1:]
    total = int(sizes.sum())
    if not total:
        return []
    found = []
    mean = total / sizes.size
    if sizes.size >= DEGENERATE_BODIES and mean < MIN_MEAN_BODY_VOXELS:
        found.append(f"{sizes.size} bodies for {total:,} labelled voxels, one per {mean:.0f} voxels on average: the "
                     f"neurons look split apart; merge more (a higher threshold of the agglomeration, fewer seeds, "
                     f"smoother predictions) in {_TRY}")
    share = float(sizes.max()) / total
    if sizes.size > 1 and share >= MAX_BODY_SHARE:
        found.append(f"one body holds {100 * share:.1f}% of the labelled voxels: the neurons look merged together; "
                     f"merge less (a lower threshold of the agglomeration, more seeds) in {_TRY}, and check "
                     f"options.intensity-range")
    return found


def suspicious(prepared: PreparedRun, segmented: dict[int, SegmentedSubvolume], result: StitchResult) -> list[str]:
    """Warnings about results that look wrong, logged as they are found."""
    bodies = bodies_of(prepared, result)
    found = []
    records = prepared.config.output.capabilities.voxel_size or prepared.grayscale_copy is not None
    if prepared.resolution_note.startswith("unknown") and records:  # only where an output records it
        found.append(f"the voxel size is {prepared.resolution_note} (nanometres, [z, y, x])")
    empty = sorted(s.sv_id for s in segmented.values() if s.unmasked > 0 and s.segments == 0)
    if empty:
        listed = ", ".join(map(str, empty[:8])) + (" ..." if len(empty) > 8 else "")
        found.append(
            f"{len(empty)} subvolumes produced no segment although they hold unmasked voxels (subvolumes {listed}); "
            f"check options.intensity-range (used: {prepared.intensity_note}) and the stage parameters"
        )
    if bodies <= 1:
        found.append(
            f"the run produced {bodies} {'body' if bodies == 1 else 'bodies'}; check options.intensity-range "
            f"(used: {prepared.intensity_note}), options.background-value and the stage parameters"
        )
    else:
        found += _degenerate(result)
    for warning in found:
        log.warning("%s", warning)
    return found
