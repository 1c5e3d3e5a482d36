"""Whole-photo pipeline timing split into decode, detect, align, restore, paste, encode, and the
peak memory of a 100-photo batch through the CLI.

    FACERES_WEIGHTS_DIR=../shared/weights python bench/pipeline.py [--model NAME] [--photos N] [--repeats 2]
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
from faceres.registry import DEFAULT_RESTORER

SHARED = Path(os.environ.get("FACERES_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def split_times(restorer, paths, repeats: int):
    """Per stage, the sum over the photos of each photo's best of `repeats` runs (after a warm-up that
    loads the networks)."""
    restorer.restore(load_photo(paths[0]))
    best = [min((_photo_times(restorer, p) for _ in range(repeats)), key=lambda t: sum(t[0].values())) for p in paths]
    totals = {k: sum(t[0][k] for t in best) for k in best[0][0]}
    return totals, sum(t[1] for t in best)


def _photo_times(restorer, path):
    t = time.perf_counter()
    photo = load_photo(path)
    decode = time.perf_counter() - t
    result = restorer.restore(photo)
    t = time.perf_counter()
    encode_image(result.photo, "jpg")
    parts = {"decode": decode, **{k: v for k, v in result.timings.items() if k != "total"}, "encode": time.perf_counter() - t}
    return parts, len(result.faces)


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
    ap.add_argument("--model", default=DEFAULT_RESTORER)
    ap.add_argument("--detector", default="auto")
    ap.add_argument("--photos", type=int, default=100, help="photos in the peak-memory batch (0 = skip)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per photo, the best counts")
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
        totals, faces = split_times(restorer, paths, args.repeats)
        network = totals["restore"]
        overhead = sum(totals.values()) - network
        report["sets"][name] = {"photos": len(paths), "faces": faces, "seconds": totals, "overhead_over_network": overhead / network}
        print(f"{name}: {len(paths)} photos, {faces} faces, " + ", ".join(f"{k} {v:.2f}s" for k, v in totals.items()))
        print(f"  everything but the network: {overhead:.2f} s = {overhead / network:.2f}x the network's {network:.2f} s")
    if args.photos:
        report["peak_rss_mb_100_photos"] = peak_memory_mb(args.model, args.photos)
        print(f"peak RSS for {args.photos} photos: {report['peak_rss_mb_100_photos']:.0f} MB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
