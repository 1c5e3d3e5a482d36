"""Network latency per face (forward only, random weights), same process and threads.

    python bench/latency.py [--sizes 512] [--batches 1 4] [--repeats 3] [--profile] [--device cpu|cuda] [--bf16]

Prints a table, the ratios faceres/GPEN and faceres/GFPGAN (GFPGAN's v1.4 architecture,
GFPGANv1Clean, only when the `gfpgan` package imports), and writes bench/results/latency.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import torch

from faceres.archs import CodecPriorNet, GPENGenerator


def gfpgan_arch(size: int):
    try:
        from gfpgan.archs.gfpganv1_clean_arch import GFPGANv1Clean
    except Exception as err:  # basicsr (its dependency) fails to import with modern torchvision
        return None, f"gfpgan not importable ({err.__class__.__name__})"
    return GFPGANv1Clean(out_size=size, num_style_feat=512, channel_multiplier=2, decoder_load_path=None, fix_decoder=False,
                         num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True), None


def build(name: str, size: int):
    if name == "faceres":
        return CodecPriorNet(size), None
    if name == "gpen":
        return GPENGenerator(size), None
    return gfpgan_arch(size)


@torch.no_grad()
def time_model(model, size, batch, repeats, device, bf16):
    x = torch.randn(batch, 3, size, size, device=device)
    ctx = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    with ctx:
        model(x)  # warm-up
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    return min(times) / batch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[512])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--profile", action="store_true", help="print where faceres spends its time")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results/latency.json")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        machine = torch.cuda.get_device_name(device)
    else:
        machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    rows = []
    for size in args.sizes:
        for name in ("faceres", "gpen", "gfpgan"):
            model, why = build(name, size)
            if model is None:
                print(f"{name:8s} {size}: skipped: {why}")
                continue
            model = model.to(device).eval()
            for batch in args.batches:
                sec = time_model(model, size, batch, args.repeats, device, args.bf16)
                rows.append({"model": name, "size": size, "batch": batch, "seconds_per_face": sec})
                print(f"{name:8s} {size} batch {batch}: {sec:.3f} s/face")
        if args.profile:
            model = CodecPriorNet(size).to(device).eval()
            x = torch.randn(1, 3, size, size, device=device)
            with torch.no_grad(), torch.profiler.profile() as prof:
                model(x)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))
            with torch.no_grad():
                t = time.perf_counter()
                model.codec(x)
                print(f"faceres {size}: codec {time.perf_counter() - t:.3f} s of the forward")
    ratios = {}
    for r in rows:
        if r["model"] == "faceres":
            for other in ("gpen", "gfpgan"):
                match = [o for o in rows if o["model"] == other and o["size"] == r["size"] and o["batch"] == r["batch"]]
                if match:
                    key = f"faceres/{other} {r['size']} b{r['batch']}"
                    ratios[key] = r["seconds_per_face"] / match[0]["seconds_per_face"]
                    print(f"{key}: {ratios[key]:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": str(date.today()), "machine": machine, "torch": torch.__version__, "bf16": args.bf16,
                                    "rows": rows, "ratios": ratios}, indent=1))


if __name__ == "__main__":
    main()
