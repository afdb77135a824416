"""Benchmark graph convexity: speechdissect.convexity vs the nnconvexity reference.

Data: N points of 768 dims in 40 classes (Gaussian class means of scale 0.25
plus unit noise, float32, class sizes from a Dirichlet(5) draw: mildly
imbalanced like phones). Every measurement runs in a fresh subprocess so that
its peak resident memory (``ru_maxrss``) is its own; the data are regenerated
from the seed in each, identically.

For each N:

* ``ours``: ``graph_convexity(X, y)`` with the defaults (k=10,
  max_paths=5000, sampling="fast"): wall time (median of 3 runs, all listed:
  the 2 cores are shared) and peak RSS.
* ``reference``: ``nnconvexity.graph.compute_graph_convexity`` on the same
  data. It builds its kNN graph from a dense N × N pandas distance matrix and
  then runs one igraph Dijkstra + Python loop per pair, so its time is
  ``build + per_path × n_paths``. When running all paths (max_n_paths=5000)
  would take too long, it is run with fewer paths per class and its time is
  extrapolated *explicitly*: ``compute_paths`` is wrapped with a timer, the
  build time and the per-path time are measured, and
  ``estimated_total_s = build_s + per_path_s × n_paths_at_5000`` (the
  JSON says ``"extrapolated": true`` and gives the measured parts). Its peak
  memory is measured in full either way (the build is always complete).
* ``agreement``: ours with ``sampling="nnconvexity"`` and the reference's
  ``max_n_paths``, after ``np.random.seed(seed)``, so both evaluate exactly the
  same pairs; the reference's 2-decimal rounding is switched off (its module
  global ``round`` is replaced by identity) to report the unrounded largest
  difference, and the difference after rounding ours like the reference is
  reported too.
* ``reference_extrapolation_check`` (not with --quick): at N=1000 the
  reference is run both ways, to show how close the extrapolation is.
* ``knn_recall`` (not with --quick): recall of the pynndescent candidates
  against the exact kNN graph at the largest N, and whether the final graph
  is identical.

Usage: ``python benchmarks/bench_convexity.py [--quick] [--out PATH]``.
Writes ``results/bench/convexity.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIM, N_CLASSES, K, MAX_PATHS, SEED = 768, 40, 10, 5000, 0
#: run the reference on all paths only if its estimated time is below this
REF_BUDGET_S = 300.0


def make_data(n: int, seed: int = SEED):
    import numpy as np

    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(N_CLASSES, 5.0))
    y = rng.choice(N_CLASSES, size=n, p=p)
    means = rng.normal(size=(N_CLASSES, DIM)).astype(np.float32) * 0.25
    x = means[y] + rng.normal(size=(n, DIM)).astype(np.float32)
    # the reference indexes classes 0..C-1 (see speechdissect.convexity):
    # relabel to the sorted unique values so it sees every class
    _, y = np.unique(y, return_inverse=True)
    return x.astype(np.float32), y.astype(np.int64)


def n_paths_for(y, max_paths: int) -> int:
    import numpy as np

    m = np.bincount(y)
    return int(np.minimum(m * (m - 1), max_paths).sum())


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ----------------------------------------------------------- worker modes


def worker_ours(n: int, max_paths: int, sampling: str) -> dict:
    import numpy as np

    from speechdissect.convexity import graph_convexity

    x, y = make_data(n)
    base = rss_mb()
    t0 = time.perf_counter()
    r = graph_convexity(x, y, n_neighbors=K, max_paths=max_paths, seed=SEED, sampling=sampling)
    dt = time.perf_counter() - t0
    return {
        "time_s": dt,
        "peak_rss_mb": rss_mb(),
        "rss_before_call_mb": base,
        "peak_minus_before_mb": rss_mb() - base,
        "loadavg_1min_after": os.getloadavg()[0],
        "score": r.score,
        "per_class": {str(k): v for k, v in r.per_class.items()},
        "n_paths": r.n_paths,
        "n_unreachable": r.n_unreachable,
        "knn_method": r.knn_method,
        "n_exact_fallback_rows": r.extra["n_exact_fallback"],
        "_x_checksum": float(np.float64(x.sum())),
    }


def worker_ref(n: int, max_paths: int, rounded: bool) -> dict:
    import warnings

    import numpy as np
    import nnconvexity.graph as ref

    x, y = make_data(n)
    if not rounded:
        ref.round = lambda v, nd=None: v  # module global shadows the builtin
    timing = {"paths_s": 0.0, "n_paths": 0}
    original = ref.compute_paths

    def timed_compute_paths(graph, indices, n_paths):
        t = time.perf_counter()
        out = original(graph, indices, n_paths)
        timing["paths_s"] += time.perf_counter() - t
        timing["n_paths"] += len(out)
        return out

    ref.compute_paths = timed_compute_paths
    base = rss_mb()
    np.random.seed(SEED)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score, per_class = ref.compute_graph_convexity(x, y, n_neighbors=K, max_n_paths=max_paths, n_parallel=1)
    dt = time.perf_counter() - t0
    return {
        "time_s": dt,
        "build_s": dt - timing["paths_s"],
        "paths_s": timing["paths_s"],
        "n_paths": timing["n_paths"],
        "peak_rss_mb": rss_mb(),
        "rss_before_call_mb": base,
        "peak_minus_before_mb": rss_mb() - base,
        "loadavg_1min_after": os.getloadavg()[0],
        "score": float(score),
        "per_class": {str(k): float(v) for k, v in per_class.items()},
        "rounded": rounded,
        "_x_checksum": float(np.float64(x.sum())),
    }


def worker_recall(n: int) -> dict:
    import numpy as np

    from speechdissect.convexity import knn_graph

    x, _ = make_data(n)
    t0 = time.perf_counter()
    g_exact = knn_graph(x, K, method="exact").graph
    t_exact = time.perf_counter() - t0
    t0 = time.perf_counter()
    g_nnd = knn_graph(x, K, method="nndescent", seed=SEED).graph
    t_nnd_first = time.perf_counter() - t0  # includes numba JIT compilation
    t0 = time.perf_counter()
    g_nnd2 = knn_graph(x, K, method="nndescent", seed=SEED).graph
    t_nnd = time.perf_counter() - t0
    e_exact = set(zip(*g_exact.nonzero()))
    e_nnd = set(zip(*g_nnd.nonzero()))
    return {
        "n": n,
        "exact_s": t_exact,
        "nndescent_first_call_s_incl_jit": t_nnd_first,
        "nndescent_s": t_nnd,
        "edge_recall": len(e_exact & e_nnd) / max(1, len(e_exact)),
        "edge_precision": len(e_exact & e_nnd) / max(1, len(e_nnd)),
        "identical_graph": bool((g_exact != g_nnd).nnz == 0),
        "nndescent_deterministic": bool((g_nnd != g_nnd2).nnz == 0),
    }


# ----------------------------------------------------------------- driver


def run_worker(args: list[str], timeout: float = 3600.0) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", *args, "--worker-out", out]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{proc.stderr[-4000:]}")
    res = json.loads(Path(out).read_text())
    os.unlink(out)
    res["subprocess_wall_s"] = time.perf_counter() - t0
    return res


def max_diff(a: dict, b: dict, round_a: bool = False) -> float:
    import math

    diffs = []
    for k, v in b.items():
        w = a[k]
        if v is None or w is None or (isinstance(v, float) and math.isnan(v)):
            continue
        diffs.append(abs((round(w, 2) if round_a else w) - v))
    return max(diffs) if diffs else 0.0


def bench_n(n: int, quick: bool, log) -> dict:
    import numpy as np

    _, y = make_data(n)
    full_paths = n_paths_for(y, MAX_PATHS)
    sizes = np.bincount(y)
    log(f"N={n}: classes {len(sizes)}, sizes {sizes.min()}..{sizes.max()}, paths at max_paths={MAX_PATHS}: {full_paths}")

    # ours is cheap: repeat it and keep the median, since the 2 shared cores
    # are often busy with other work (the reference is too slow to repeat)
    runs = [run_worker(["ours", str(n), str(MAX_PATHS), "fast"]) for _ in range(1 if quick else 3)]
    times = sorted(r["time_s"] for r in runs)
    ours = dict(runs[0])
    ours.update(
        time_s=float(np.median(times)),
        time_s_all_runs=times,
        peak_rss_mb=max(r["peak_rss_mb"] for r in runs),
        peak_minus_before_mb=max(r["peak_minus_before_mb"] for r in runs),
    )
    assert all(r["score"] == runs[0]["score"] for r in runs), "not deterministic"
    log(f"  ours: {ours['time_s']:.1f} s, peak RSS {ours['peak_rss_mb']:.0f} MB, score {ours['score']:.2f}")

    # reference: probe with few paths to measure build and per-path time
    probe_paths = 50 if quick else (250 if n >= 5000 else 500)
    probe = run_worker(["ref", str(n), str(probe_paths), "raw"])
    per_path = probe["paths_s"] / max(1, probe["n_paths"])
    est_full = probe["build_s"] + per_path * full_paths
    log(
        f"  reference probe (max_n_paths={probe_paths}): build {probe['build_s']:.1f} s, "
        f"{per_path * 1e3:.2f} ms/path, peak RSS {probe['peak_rss_mb']:.0f} MB -> est. {est_full:.0f} s at {MAX_PATHS}"
    )
    if est_full <= REF_BUDGET_S and not quick:
        full = run_worker(["ref", str(n), str(MAX_PATHS), "raw"])
        reference = {
            "extrapolated": False,
            "max_n_paths": MAX_PATHS,
            "time_s": full["time_s"],
            "build_s": full["build_s"],
            "paths_s": full["paths_s"],
            "n_paths": full["n_paths"],
            "peak_rss_mb": max(full["peak_rss_mb"], probe["peak_rss_mb"]),
            "rss_before_call_mb": full["rss_before_call_mb"],
            "peak_minus_before_mb": full["peak_minus_before_mb"],
            "probe_estimate_s": est_full,
        }
        ref_for_cmp, cmp_paths = full, MAX_PATHS
    else:
        reference = {
            "extrapolated": True,
            "how": (
                f"run with max_n_paths={probe_paths} ({probe['n_paths']} paths); time of the reference's "
                f"compute_paths measured separately; estimated_total_s = build_s + per_path_s * "
                f"{full_paths} (the number of paths at max_n_paths={MAX_PATHS})"
            ),
            "measured_max_n_paths": probe_paths,
            "measured_time_s": probe["time_s"],
            "build_s": probe["build_s"],
            "measured_paths_s": probe["paths_s"],
            "measured_n_paths": probe["n_paths"],
            "per_path_s": per_path,
            "n_paths_at_max_paths": full_paths,
            "time_s": est_full,
            "peak_rss_mb": probe["peak_rss_mb"],
            "rss_before_call_mb": probe["rss_before_call_mb"],
            "peak_minus_before_mb": probe["peak_minus_before_mb"],
        }
        ref_for_cmp, cmp_paths = probe, probe_paths
    log(
        f"  reference: {'~' if reference['extrapolated'] else ''}{reference['time_s']:.0f} s"
        f"{' (extrapolated)' if reference['extrapolated'] else ''}, speed-up x{reference['time_s'] / ours['time_s']:.0f}"
    )

    # agreement on exactly the reference's pairs
    same = run_worker(["ours", str(n), str(cmp_paths), "nnconvexity"])
    agreement = {
        "max_n_paths": cmp_paths,
        "same_pairs": True,
        "n_paths": same["n_paths"],
        "ours_score": same["score"],
        "reference_score_unrounded": ref_for_cmp["score"],
        "score_abs_diff_unrounded": abs(same["score"] - ref_for_cmp["score"]),
        "max_per_class_abs_diff_unrounded": max_diff(same["per_class"], ref_for_cmp["per_class"]),
        "ours_time_s_same_pairs": same["time_s"],
        "data_identical": same["_x_checksum"] == ref_for_cmp["_x_checksum"],
    }
    # the reference's own output is round(unrounded, 2): compare like that too
    rounded_ref = {k: (None if v != v else round(v, 2)) for k, v in ref_for_cmp["per_class"].items()}
    agreement["max_per_class_abs_diff_rounded_2dp"] = max_diff(same["per_class"], rounded_ref, round_a=True)
    agreement["score_abs_diff_rounded_2dp"] = abs(round(same["score"], 2) - round(ref_for_cmp["score"], 2))
    log(
        f"  agreement on {agreement['n_paths']} identical pairs: |score diff| {agreement['score_abs_diff_unrounded']:.2e}, "
        f"max per-class {agreement['max_per_class_abs_diff_unrounded']:.2e}"
    )
    for d in (ours, same):
        d.pop("_x_checksum", None)
        d.pop("per_class", None)
    return {
        "n": n,
        "dim": DIM,
        "n_classes": int(len(sizes)),
        "class_size_min": int(sizes.min()),
        "class_size_max": int(sizes.max()),
        "ours": ours,
        "reference": reference,
        "speedup": reference["time_s"] / ours["time_s"],
        "memory_ratio_reference_over_ours": reference["peak_rss_mb"] / ours["peak_rss_mb"],
        "agreement": agreement,
    }


def extrapolation_check(n: int, log) -> dict:
    """Validate the reference's time extrapolation where a full run is cheap."""
    _, y = make_data(n)
    full_paths = n_paths_for(y, MAX_PATHS)
    probe = run_worker(["ref", str(n), "50", "raw"])
    est = probe["build_s"] + probe["paths_s"] / max(1, probe["n_paths"]) * full_paths
    full = run_worker(["ref", str(n), str(MAX_PATHS), "raw"])
    log(f"  extrapolation check at N={n}: estimated {est:.0f} s from {probe['n_paths']} paths, measured {full['time_s']:.0f} s")
    return {
        "n": n,
        "probe_max_n_paths": 50,
        "probe_n_paths": probe["n_paths"],
        "full_n_paths": full["n_paths"],
        "estimated_s": est,
        "measured_s": full["time_s"],
        "ratio_estimated_over_measured": est / full["time_s"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N=2000 only, reference on few paths (smoke test)")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench" / "convexity.json"))
    ap.add_argument("--sizes", type=int, nargs="*", default=None)
    ap.add_argument("--worker", nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)

    if a.worker:
        mode, *rest = a.worker
        if mode == "ours":
            res = worker_ours(int(rest[0]), int(rest[1]), rest[2])
        elif mode == "ref":
            res = worker_ref(int(rest[0]), int(rest[1]), rounded=rest[2] == "rounded")
        elif mode == "recall":
            res = worker_recall(int(rest[0]))
        else:
            raise SystemExit(f"unknown worker mode {mode}")
        Path(a.worker_out).write_text(json.dumps(res))
        return 0

    sizes = a.sizes or ([2000] if a.quick else [2000, 5000, 10000])

    def log(msg):
        print(msg, flush=True)

    import numpy
    import scipy

    results = []
    for n in sizes:
        results.append(bench_n(n, a.quick, log))
    check = None
    if not a.quick:
        check = extrapolation_check(1000, log)
    recall = None
    if not a.quick:
        recall = run_worker(["recall", str(max(sizes))])
        log(f"  pynndescent at N={recall['n']}: edge recall {recall['edge_recall']:.4f}, identical graph {recall['identical_graph']}")
    summary = {
        "benchmark": "graph convexity: speechdissect.convexity.graph_convexity vs nnconvexity.graph.compute_graph_convexity",
        "quick": a.quick,
        "settings": {"n_neighbors": K, "max_paths": MAX_PATHS, "seed": SEED, "dim": DIM, "n_classes": N_CLASSES},
        "data": "Gaussian class means (scale 0.25) + unit noise, float32, Dirichlet(5) class sizes",
        "peak_memory": "ru_maxrss of a fresh subprocess per measurement (includes interpreter, imports and the data)",
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "loadavg_at_end": os.getloadavg(),
            "numpy": numpy.__version__,
            "scipy": scipy.__version__,
        },
        "results": results,
        "reference_extrapolation_check": check,
        "knn_recall": recall,
        "max_score_abs_diff_unrounded": max(
            max(r["agreement"]["score_abs_diff_unrounded"], r["agreement"]["max_per_class_abs_diff_unrounded"])
            for r in results
        ),
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(out)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
