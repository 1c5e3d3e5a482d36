"""Resident memory of the training dataset's face cache (datasets.train.cache_mb): one process per
setting decodes the same faces twice (two epochs) and reports RSS and the time of each pass.

    python bench/dataset_cache.py [--size 512] [--subset 50:1000] [--cache-mb 0 256 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(size: int, subset: tuple[int, int], cache_mb: float) -> dict:
    from faceres.data import DatasetOpts, FaceDataset

    shared = Path(os.environ.get("FACERES_SHARED", ROOT.parent / "shared"))
    ds = FaceDataset(DatasetOpts(str(shared / "data/celebahq-512/images"), size=size, subset=subset, cache_mb=cache_mb))
    before, passes = rss_mb(), []
    for _ in range(2):
        t = time.perf_counter()
        for i in range(len(ds)):
            ds._face(i)  # decode + resize: what the cache holds (degradation is per draw and never cached)
        passes.append(round(time.perf_counter() - t, 2))
    return {
        "cache_mb": cache_mb,
        "faces": len(ds),
        "size": size,
        "cached_faces": len(ds.cache),
        "cached_mb": round(ds.cache.nbytes / 2**20, 1),
        "rss_before_mb": round(before),
        "rss_after_mb": round(rss_mb()),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "seconds_per_pass": passes,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--subset", default="50:1000")
    ap.add_argument("--cache-mb", type=float, nargs="+", default=[0, 256, 2048])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    subset = tuple(int(x) for x in args.subset.split(":"))
    if args.child:
        print(json.dumps(measure(args.size, subset, args.cache_mb[0])))
        return
    rows = []
    for mb in args.cache_mb:  # a fresh process each: RSS is not given back to the OS reliably
        cmd = [sys.executable, __file__, "--child", "--size", str(args.size), "--subset", args.subset, "--cache-mb", str(mb)]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
        print(json.dumps(rows[-1]))
    result = {"date": str(date.today()), "machine": f"{platform.machine()}, {os.cpu_count()} cpus", "rows": rows}
    out = ROOT / "bench/results/dataset_cache.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
