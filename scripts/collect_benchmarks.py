"""Gather Snakemake `benchmark:` files into one JSON: per-rule and total wall time of a run.

Usage: python scripts/collect_benchmarks.py results/benchmarks results/bench/reproduce.json [--wall SECONDS]
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pandas as pd


def collect(root: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        table = pd.read_csv(path, sep="\t")
        rel = path.relative_to(root)
        rows.append({"rule": rel.parts[0], "job": str(rel.with_suffix("")), "seconds": float(table["s"].iloc[-1]),
                     "max_rss_mb": float(table["max_rss"].iloc[-1]) if "max_rss" in table else None})
    return pd.DataFrame(rows, columns=["rule", "job", "seconds", "max_rss_mb"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--wall", type=float, default=None, help="measured wall time of the whole run (s)")
    args = parser.parse_args()
    jobs = collect(args.root)
    per_rule = jobs.groupby("rule")["seconds"].agg(["count", "sum", "max"]).reset_index()
    summary = {
        "wall_seconds": args.wall,
        "sum_job_seconds": float(jobs["seconds"].sum()),
        "n_jobs": int(len(jobs)),
        "per_rule": per_rule.to_dict(orient="records"),
        "jobs": jobs.to_dict(orient="records"),
    }
    previous = json.loads(args.out.read_text()) if args.out.is_file() else None
    if previous and previous.get("jobs") == summary["jobs"]:
        # no job ran (every benchmark file as before): keep the run that computed them, note this one
        summary = {**previous, "noop_wall_seconds": args.wall}
        print(f"{args.out}: nothing was recomputed ({args.wall:.1f} s wall); kept the figures of the run that was")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, args.out)
    print(f"{args.out}: {len(jobs)} jobs, {summary['sum_job_seconds']:.0f} s of job time"
          + (f", {summary['wall_seconds']:.0f} s wall" if summary.get("wall_seconds") else ""))


if __name__ == "__main__":
    main()
