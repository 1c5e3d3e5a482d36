"""Whole-process time of `faceres restore --aligned` on 8 aligned 512² faces: the default model vs a
file in GFPGAN v1.4's released format (random weights: speed only), in the same run.

    python bench/cli_aligned.py [--faces 8] [--repeats 2]

Writes bench/results/cli_aligned.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

from faceres.archs import build_network
from faceres.weights import DEFAULT_RESTORER

SHARED = Path(os.environ.get("FACERES_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def gfpgan_file(folder: Path) -> Path:
    """GFPGANv1.4.pth as released: `params_ema` wrapper, the v1.4 configuration, random weights."""
    torch.manual_seed(0)
    net = build_network("gfpgan_v1_clean")
    path = folder / "GFPGANv1.4.pth"
    torch.save({"params_ema": {k: v.half() for k, v in net.state_dict().items()}}, path)
    return path


def run(model: str, faces: Path, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "faceres.cli",
            "restore",
            str(faces),
            "--aligned",
            "-o",
            str(out),
            "--model",
            model,
            "-s",
            "1",
            "--device",
            "cpu",
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        faces = tmp / "faces"
        faces.mkdir()
        for src in sorted((SHARED / "data/celebahq-512/images").iterdir())[: args.faces]:
            shutil.copy(src, faces / src.name)
        models = {"default": DEFAULT_RESTORER, "gfpgan-v1.4 format": str(gfpgan_file(tmp))}
        seconds = {name: min(run(m, faces, tmp / "out") for _ in range(args.repeats)) for name, m in models.items()}
    ratio = seconds["default"] / seconds["gfpgan-v1.4 format"]
    for name, sec in seconds.items():
        print(f"{name:20s} {sec:.1f} s for {args.faces} faces (whole process)")
    print(f"default / GFPGAN: {ratio:.2f}")
    out = Path(__file__).parent / "results/cli_aligned.json"
    out.write_text(
        json.dumps(
            {
                "date": str(date.today()),
                "faces": args.faces,
                "models": models,
                "seconds": seconds,
                "ratio_default_to_gfpgan": round(ratio, 3),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
