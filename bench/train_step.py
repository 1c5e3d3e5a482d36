"""Training step time of a recipe (one G + D + local-D update), on CPU or a GPU, in fp32 and bf16 (same run).

    python bench/train_step.py options/train_faceres_128_cpu.yml [--steps 3] [--batch 4] [--device cpu]
    python bench/train_step.py options/train_faceres_512.yml --batch 1 --substitutes --set path.prior_g=null --set path.prior_d=null

--substitutes swaps the losses whose weights do not exist here (VGG19, ArcFace) for the named
offline substitute / off, so the timing runs anywhere (and says so).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import torch

from faceres.allocator import tune_allocator
from faceres.data import FaceDataset
from faceres.train.options import load_options
from faceres.train.trainer import Trainer


def step_seconds(trainer, opts, device, steps: int) -> float:
    ds = FaceDataset(opts.datasets.train)
    batch = torch.utils.data.default_collate([ds[(i, i)] for i in range(opts.train.batch_size)])
    trainer.step(batch)  # warm-up
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        trainer.step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("options", type=Path)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--substitutes", action="store_true")
    ap.add_argument("--dataroot", default=None, help="override datasets.train.dataroot (e.g. the shared CelebA-HQ)")
    ap.add_argument("--landmarks", default=None)
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--no-allocator", action="store_true", help="leave glibc's allocator as it is")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="any option override")
    args = ap.parse_args()
    over = []
    if args.batch:
        over.append(f"train.batch_size={args.batch}")
    if args.substitutes:
        over += ["train.losses.feature_matching.type=discriminator_features", "train.losses.identity.type=none"]
    if args.dataroot:
        over.append(f"datasets.train.dataroot={args.dataroot}")
    over.append(f"datasets.train.landmarks={args.landmarks}" if args.landmarks else "train.losses.gan_local=0")
    over += args.overrides
    device = torch.device(args.device)
    allocator = not args.no_allocator and tune_allocator()
    seconds, losses = {}, None
    for precision in args.precisions:  # the same recipe, batch and data in each precision, one process
        opts = load_options(args.options, [*over, f"train.precision={precision}"])
        trainer = Trainer(opts, device)
        seconds[precision] = step_seconds(trainer, opts, device, args.steps)
        losses = trainer.describe_losses()
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()}, {torch.get_num_threads()} threads"
    result = {
        "date": str(date.today()),
        "options": str(args.options),
        "overrides": args.overrides,
        "batch": opts.train.batch_size,
        "machine": machine,
        "allocator_tuned": allocator,
        "seconds_per_step": seconds,
        "losses": losses,
        "local_d": trainer.local_d is not None,
    }
    if "fp32" in seconds and "bf16" in seconds:
        result["bf16_speedup"] = round(seconds["fp32"] / seconds["bf16"], 2)
    print(json.dumps(result, indent=1))
    out = Path(__file__).parent / "results" / f"train_step_{args.options.stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
