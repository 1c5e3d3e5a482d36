"""Whole-photo pipeline timing split into decode, detect, align, restore, paste, encode, and the
peak memory of a 100-photo batch through the CLI.

    FACERES_WEIGHTS_DIR=../shared/weights python bench/pipeline.py [--model faceres-v0] [--photos N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from faceres.pipeline import FaceRestorer
from faceres.pipeline.images import encode_image, load_photo

SHARED = Path(os.environ.get("FACERES_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def split_times(restorer, paths):
    totals, faces = {}, 0
    for p in paths:
        t = time.perf_counter()
        photo = load_photo(p)
        decode = time.perf_counter() - t
        result = restorer.restore(photo)
        t = time.perf_counter()
        encode_image(result.photo, "jpg")
        parts = {"decode": decode, **{k: v for k, v in result.timings.items() if k != "total"}, "encode": time.perf_counter() - t}
        for k, v in parts.items():
            totals[k] = totals.get(k, 0.0) + v
        faces += len(result.faces)
    return totals, faces


def peak_memory_mb(model: str, n: int) -> float:
    src = sorted((SHARED / "data/multi-face").iterdir()) + sorted((SHARED / "data/old-photos").iterdir())
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "in"
        inp.mkdir()
        for i in range(n):
            shutil.copy(src[i % len(src)], inp / f"{i:03d}{src[i % len(src)].suffix}")
        cmd = [
            sys.executable,
            "-c",
            "import resource, sys; from faceres.cli import main; rc = main(sys.argv[1:]); "
            "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)",
            "restore",
            str(inp),
            "-o",
            str(Path(tmp) / "out"),
            "--model",
            model,
            "--no-faces",
            "-s",
            "1",
        ]
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("PEAK")]
        if not line:
            raise RuntimeError(out.stderr[-2000:])
        return int(line[0].split()[1]) / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="faceres-v0")
    ap.add_argument("--detector", default="auto")
    ap.add_argument("--photos", type=int, default=100, help="photos in the peak-memory batch (0 = skip)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results/pipeline.json")
    args = ap.parse_args()
    restorer = FaceRestorer(args.model, detector=args.detector, device="cpu")  # restore(): upscale 2 by default
    report = {
        "date": str(date.today()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "model": args.model,
        "detector": restorer.detector_name,
        "sets": {},
    }
    for name in ("multi-face", "old-photos"):
        paths = sorted((SHARED / "data" / name).iterdir())
        totals, faces = split_times(restorer, paths)
        report["sets"][name] = {"photos": len(paths), "faces": faces, "seconds": totals}
        print(f"{name}: {len(paths)} photos, {faces} faces, " + ", ".join(f"{k} {v:.2f}s" for k, v in totals.items()))
    if args.photos:
        report["peak_rss_mb_100_photos"] = peak_memory_mb(args.model, args.photos)
        print(f"peak RSS for {args.photos} photos: {report['peak_rss_mb_100_photos']:.0f} MB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
