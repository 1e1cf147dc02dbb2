"""How the untrained defaults were chosen: every combination of the built-in untrained
stages' main settings, scored (VI, bits) on a synthetic EM volume and on gala_train (the
tuning volumes), then the chosen setting checked on volumes it never saw (another
synthetic seed, gala_test).

Each setting segments the whole volume at once (the stages a run applies per subvolume;
blocking and stitching are measured elsewhere). A setting is ranked by its worst score
over the two tuning volumes divided by that volume's best score (the setting that is
never far from the best on either), so that one volume cannot choose alone.

    python benchmarks/quality_defaults.py            # the table for docs/quality.md
    python benchmarks/quality_defaults.py --quick    # a smaller grid and synthetic volume
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np

import labelstitch as ls
from labelstitch.plugins.builtin import (
    distance_transform_watershed, naive_membrane_predictions, rag_agglomeration, seeded_watershed,
)
from labelstitch.synthetic import em_volume

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def volumes(quick: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    shape = (64, 128, 128) if quick else (128, 256, 256)
    n = 50 if quick else 200
    found = {
        "synthetic seed 0 (tune)": em_volume(shape, n_neurites=n, seed=0),
        "synthetic seed 1 (check)": em_volume(shape, n_neurites=n, seed=1),
    }
    for name, role in (("gala_train", "tune"), ("gala_test", "check")):
        if (SHARED / f"{name}.npz").exists():
            with np.load(SHARED / f"{name}.npz") as data:
                found[f"{name} ({role})"] = (data["raw"], data["gt"])
    return found


def settings(quick: bool) -> list[tuple[str, dict, str, dict, float]]:
    sigmas = [0.0, 0.5, 1.0, 2.0] if not quick else [0.0, 1.0]
    supervoxels: list[tuple[str, dict]] = [("seeded_watershed", {"seed_threshold": t, "min_segment_size": m})
                                           for t in (0.2, 0.3, 0.4) for m in (0, 50)]
    supervoxels += [("distance_transform_watershed", {"threshold": t}) for t in (0.4, 0.5, 0.6)]
    thresholds = [0.2, 0.3, 0.4, 0.5, 0.6] if not quick else [0.3, 0.5]
    return [(f"naive sigma={s}", {"sigma": s}, sv, p, t) for s in sigmas for sv, p in supervoxels for t in thresholds]


FUNCTIONS = {"seeded_watershed": seeded_watershed, "distance_transform_watershed": distance_transform_watershed}


def score_all(gray: np.ndarray, truth: np.ndarray, grid: list) -> dict[tuple, tuple[float, int]]:
    """VI total and body count of every setting, reusing predictions and supervoxels."""
    mask = np.zeros(gray.shape, bool)
    out = {}
    for (pname, pparams), group in itertools.groupby(grid, key=lambda g: (g[0], tuple(sorted(g[1].items())))):
        predictions = naive_membrane_predictions(gray, mask, **dict(pparams))
        for (svname, svparams), inner in itertools.groupby(list(group), key=lambda g: (g[2], tuple(sorted(g[3].items())))):
            supervoxels = FUNCTIONS[svname](predictions, mask, **dict(svparams))
            for *_, threshold in inner:
                seg = rag_agglomeration(predictions, supervoxels, threshold=threshold)
                score = ls.vi(seg, truth)
                bodies = int(np.unique(seg).size)
                out[(pname, svname, svparams, threshold)] = (score.total, bodies)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    grid = settings(args.quick)
    found = volumes(args.quick)
    scores = {}
    for name, (gray, truth) in found.items():
        start = time.perf_counter()
        scores[name] = score_all(gray, truth, grid)
        print(f"# {name}: {gray.shape}, {len(grid)} settings in {time.perf_counter() - start:.0f} s", flush=True)
    tune = [n for n in found if "(tune)" in n]
    check = [n for n in found if "(check)" in n]
    best = {n: min(v[0] for v in scores[n].values()) for n in found}
    keys = list(scores[tune[0]])
    def ratios(k: tuple) -> list[float]:
        return [scores[n][k][0] / best[n] for n in tune]

    ranked = sorted(keys, key=lambda k: (round(max(ratios(k)), 3), sum(ratios(k))))  # the worst volume, then both
    header = "| predict | supervoxels | agglomeration | " + " | ".join(f"{n} VI (bodies)" for n in found) + " |"
    print(header)
    print("|" + "---|" * (3 + len(found)))
    best_each = [min(keys, key=lambda k, n=n: scores[n][k][0]) for n in tune]
    for k in ranked[:10] + [b for b in best_each if b not in ranked[:10]]:
        pname, svname, svparams, threshold = k
        cells = " | ".join(f"{scores[n][k][0]:.3f} ({scores[n][k][1]})" for n in found)
        params = ", ".join(f"{a}={b}" for a, b in svparams)
        print(f"| {pname} | {svname}({params}) | rag threshold={threshold} | {cells} |")
    print("| best of the grid on each volume | | | " + " | ".join(f"{best[n]:.3f}" for n in found) + " |")
    chosen = ranked[0]
    print(f"\nchosen on {', '.join(tune)}: {chosen}")
    for n in check:
        rank = sorted(scores[n].values()).index(scores[n][chosen]) + 1
        print(f"  on {n}: VI {scores[n][chosen][0]:.3f}, rank {rank} of {len(keys)} (best there {best[n]:.3f})")


if __name__ == "__main__":
    main()
