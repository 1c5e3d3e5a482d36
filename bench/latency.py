"""Network latency per 512² face, every restoration family in one process, fp32 and bf16.

    python bench/latency.py [--models faceres-512 default gpen-512 gfpgan restoreformer codeformer]
                            [--precisions fp32 bf16] [--batch 1] [--repeats 3] [--profile] [--no-allocator]

Random weights, forward only (`net.restore`), each model prepared by `prepare_for_inference` exactly as
the pipeline does. Per model: seconds per face, GFLOPs per face (torch.utils.flop_counter), and the
fraction of this CPU's measured bf16 convolution ceiling (a 3x3 conv at 128 channels, 256², NHWC).
Writes bench/results/latency.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from faceres.allocator import tune_allocator
from faceres.archs import ARCHS, build_network
from faceres.checkpoints import read_metadata
from faceres.devices import prepare_for_inference

SHIPPED = Path(__file__).parents[1] / "weights/faceres_v1.safetensors"

FAMILIES = {
    "faceres-512": dict(arch="codec_prior", size=512),  # the paper's configuration
    "default": read_metadata(SHIPPED)["arch"]["base"],  # the shipped faceres-v1's architecture (its fidelity end)
    "gpen-512": dict(arch="gpen", size=512),
    "gfpgan": dict(arch="gfpgan_v1_clean"),  # released v1.2-v1.4 configuration
    "restoreformer": dict(arch="restoreformer"),
    "codeformer": dict(arch="codeformer"),
}


def seconds_per_face(net, x, repeats: int) -> float:
    with torch.no_grad():
        net.restore(x)  # warm-up (oneDNN picks its kernels)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            net.restore(x)
            times.append(time.perf_counter() - t)
    return min(times) / x.shape[0]


def gflops_per_face(net, size: int) -> float:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net.restore(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def conv_ceiling_tflops(repeats: int = 5) -> float:
    """What a large bf16 NHWC 3x3 convolution reaches here: the roof the networks are compared to."""
    x = torch.randn(4, 128, 256, 256).to(torch.bfloat16, memory_format=torch.channels_last)
    w = torch.randn(128, 128, 3, 3).to(torch.bfloat16, memory_format=torch.channels_last)
    with torch.no_grad():
        F.conv2d(x, w, padding=1)
        best = min(_timed(lambda: F.conv2d(x, w, padding=1)) for _ in range(repeats))
    return 2 * 128 * 128 * 9 * 4 * 256 * 256 / best / 1e12


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def profile(net, x):
    with torch.no_grad(), torch.profiler.profile() as prof:
        net.restore(x)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="operator table of each model in bf16")
    ap.add_argument("--no-allocator", action="store_true", help="leave glibc's allocator as it is")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results/latency.json")
    args = ap.parse_args()
    allocator = not args.no_allocator and tune_allocator()
    ceiling = conv_ceiling_tflops()
    print(f"bf16 conv ceiling: {ceiling:.2f} TFLOP/s; allocator tuned: {allocator}")
    rows = []
    for name in args.models:
        config = FAMILIES[name]
        if config["arch"] not in ARCHS:
            print(f"{name}: skipped (architecture {config['arch']} not in this faceres)")
            continue
        torch.manual_seed(0)
        base = build_network(**config).eval()
        size = base.spec.size
        gflops = gflops_per_face(base, size)
        x = torch.rand(args.batch, 3, size, size) * 2 - 1
        for precision in args.precisions:
            net = prepare_for_inference(copy.deepcopy(base), precision, "cpu")
            sec = seconds_per_face(net, x, args.repeats)
            share = gflops / 1e3 / sec / ceiling if precision == "bf16" else None
            rows.append(
                {
                    "model": name,
                    "precision": precision,
                    "seconds_per_face": round(sec, 4),
                    "gflops": round(gflops, 1),
                    "ceiling_share": None if share is None else round(share, 3),
                }
            )
            print(f"{name:14s} {precision}: {sec:.3f} s/face, {gflops:.0f} GFLOP" + (f", {share:.0%} of the ceiling" if share else ""))
            if args.profile and precision == "bf16":
                profile(net, x)
    best = {r["model"]: min(o["seconds_per_face"] for o in rows if o["model"] == r["model"]) for r in rows}
    ratios = {
        f"{a}/{b}": round(best[a] / best[b], 2)
        for a in ("faceres-512", "default")
        for b in ("gfpgan", "gpen-512")
        if a in best and b in best
    }
    print(json.dumps(ratios))
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "date": str(date.today()),
                "machine": machine,
                "torch": torch.__version__,
                "batch": args.batch,
                "allocator_tuned": allocator,
                "conv_ceiling_tflops": round(ceiling, 3),
                "rows": rows,
                "ratios_best_precision": ratios,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
