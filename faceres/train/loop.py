"""The training loop, whatever the family: processes, data order, LR schedule (in the model),
validation, logging and the checkpoint cadence. A run's folder (experiments_root/name) holds
options.yml (its resolved options), train_log.jsonl, checkpoints/, models/ and visualization/."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.utils.data import DataLoader

from ..data import FaceDataset, IterationSampler
from ..devices import pick_device
from ..files import write_atomic
from ..metrics import psnr, ssim
from .base import TrainingModel
from .models import build_model
from .options import Options, OptionsError, dump_options


def init_distributed(device: str) -> tuple[torch.device, int, int]:
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world == 1:
        return pick_device(device), 0, 1
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
    return torch.device(f"cuda:{local}" if use_cuda else "cpu"), rank, world


class Logger:
    def __init__(self, root: Path, enabled: bool, tensorboard: bool):
        self.enabled = enabled
        self.jsonl = root / "train_log.jsonl" if enabled else None
        self.tb = None
        if enabled:
            root.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self.tb = SummaryWriter(str(root / "tb"))
                except ImportError:
                    print("faceres: tensorboard not installed; logging to console and train_log.jsonl only")

    def __call__(self, message: str):
        if self.enabled:
            print(message, flush=True)

    def scalars(self, it: int, values: dict, prefix: str = "train"):
        if not self.enabled:
            return
        with open(self.jsonl, "a") as f:
            f.write(json.dumps({"iter": it, "kind": prefix, **values}) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"{prefix}/{k}", v, it)


# -------------------------------------------------------------------- run folder


def latest_checkpoint(root: Path) -> Path | None:
    ckpts = sorted((root / "checkpoints").glob("iter_*.pt"))
    return ckpts[-1] if ckpts else None


def load_latest_checkpoint(root: Path, device, warn) -> tuple[Path | None, dict | None]:
    """The newest checkpoint that loads; a truncated or corrupt one (full disk, interrupted copy) is skipped with a warning."""
    for ckpt in sorted((root / "checkpoints").glob("iter_*.pt"), reverse=True):
        try:
            return ckpt, torch.load(ckpt, map_location=device, weights_only=True)
        except Exception as err:  # truncated zip, not a checkpoint at all
            warn(f"warning: {ckpt} cannot be loaded ({err.__class__.__name__}); falling back to the previous checkpoint")
    return None, None


def save_run_options(opts: Options, root: Path, start_iter: int) -> Path:
    """root/options.yml: this run's options after every override, with path.resume auto, so that
    `faceres train -opt root/options.yml` continues the run. When a later stage changes them, the
    previous file is kept as options_until_<start_iter>.yml."""
    path = root / "options.yml"
    text = "# resolved options of this run (overrides applied); `faceres train -opt` this file continues it\n" + dump_options(
        opts, resume="auto"
    )
    # compared as data: a default written as 2 reads back as the float 2.0 and is the same option
    if path.is_file() and yaml.safe_load(path.read_text()) != yaml.safe_load(text):
        os.replace(path, root / f"options_until_{start_iter:08d}.yml")
    write_atomic(path, text.encode())
    return path


# -------------------------------------------------------------------- validation


@torch.no_grad()
def validate(model: TrainingModel, dataset: FaceDataset, max_images: int, out_dir: Path | None = None) -> dict[str, float]:
    rows, scores = [], {"psnr": [], "ssim": [], "psnr_lq": [], "ssim_lq": []}
    to_np = lambda t: ((t.float().cpu()[0] if t.ndim == 4 else t).permute(1, 2, 0).numpy() + 1) / 2
    for i in range(min(max_images, len(dataset))):
        item = dataset[(i, i)]  # fixed degradation per validation image
        out = model.validation_output(item["lq"][None].to(model.device)).clamp(-1, 1)
        o, g, q = to_np(out), to_np(item["gt"]), to_np(item["lq"])
        scores["psnr"].append(psnr(o, g))
        scores["ssim"].append(ssim(o, g))
        scores["psnr_lq"].append(psnr(q, g))
        scores["ssim_lq"].append(ssim(q, g))
        if len(rows) < 4:
            rows.append(np.concatenate([q, o, g], axis=1))
    if out_dir is not None and rows:
        import cv2

        out_dir.mkdir(parents=True, exist_ok=True)
        grid = (np.clip(np.concatenate(rows, 0), 0, 1) * 255 + 0.5).astype(np.uint8)[..., ::-1]
        cv2.imwrite(str(out_dir / f"val_{model.iter:08d}.png"), grid)
    return {k: float(np.mean(v)) for k, v in scores.items()}


# -------------------------------------------------------------------- loop


def _leave_stop_signals_to_the_trainer(worker_id: int) -> None:
    """Data workers ignore SIGTERM/SIGINT (Ctrl-C and `pkill -f` reach them too): the main process
    finishes its iteration and saves, then shuts them down itself."""
    for s in StopRequest.SIGNALS:
        signal.signal(s, signal.SIG_IGN)


class StopRequest:
    """SIGTERM or Ctrl-C asks the loop to stop after the current iteration and save a checkpoint there,
    so a killed run loses nothing; a second signal stops at once. Only in the main thread (where
    Python delivers signals)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.name: str | None = None

    def __enter__(self):
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        if self.name is not None:
            raise KeyboardInterrupt
        self.name = signal.Signals(signum).name


def start(model: TrainingModel, opts: Options, device: torch.device, logger: Logger) -> None:
    """Resume from path.resume (a checkpoint or auto = the latest), else path.init_state, else fresh."""
    resume, state = opts.path.resume, None
    if resume == "auto":
        resume, state = load_latest_checkpoint(opts.experiment_dir, device, logger)
    elif resume:
        try:
            state = torch.load(resume, map_location=device, weights_only=True)
        except Exception as err:
            raise OptionsError(f"path.resume {resume}: not a loadable checkpoint ({err.__class__.__name__})") from None
    if state is not None:
        model.load_state_dict(state)
        logger(f"resumed from {resume} at iteration {model.iter}")
    elif opts.path.init_state:
        model.init_from_release(opts.path.init_state)


def train(opts: Options, device: str = "auto", max_iters: int | None = None) -> TrainingModel:
    """Run (or resume) training. `max_iters` stops after that many more iterations (for tests and
    benchmarks) without changing the schedule, which always follows train.total_iter."""
    dev, rank, world = init_distributed(device)
    root = opts.experiment_dir
    logger = Logger(root, rank == 0, opts.logger.tensorboard)
    model = build_model(opts, dev, rank, world, log=logger)
    start(model, opts, dev, logger)
    if rank == 0:
        save_run_options(opts, root, model.iter)
    logger(f"{opts.name}: {opts.train.mode} on {dev} x{world}, losses: {', '.join(model.describe_losses())}")
    ds = FaceDataset(opts.datasets.train)
    val_ds = FaceDataset(opts.datasets.val) if opts.datasets.val and rank == 0 else None
    end = opts.train.total_iter if max_iters is None else min(opts.train.total_iter, model.iter + max_iters)
    sampler = IterationSampler(len(ds), opts.train.batch_size, opts.seed, end, model.iter, rank, world)
    loader = DataLoader(
        ds,
        batch_size=opts.train.batch_size,
        sampler=sampler,
        num_workers=opts.datasets.train.num_workers,
        pin_memory=dev.type == "cuda",
        persistent_workers=opts.datasets.train.num_workers > 0,
        worker_init_fn=_leave_stop_signals_to_the_trainer,
    )
    with StopRequest() as stop:
        _run(model, opts, loader, val_ds, end, rank, logger, stop)
    if world > 1:
        dist.barrier()
    return model


def _run(model, opts, loader, val_ds, end, rank, logger, stop: StopRequest) -> None:
    root = opts.experiment_dir
    t0, done = time.perf_counter(), 0
    for batch in loader:
        logs = model.step(batch)
        done += 1
        if not all(math.isfinite(v) for v in logs.values()):
            raise FloatingPointError(f"iteration {model.iter}: non-finite loss {logs}")
        if model.iter % opts.logger.print_every == 0 or model.iter == end:
            rate = done / (time.perf_counter() - t0)
            logger(f"iter {model.iter:7d}  {rate:.2f} it/s  " + "  ".join(f"{k} {v:.4f}" for k, v in logs.items()))
            logger.scalars(model.iter, logs)
        if val_ds is not None and (model.iter % opts.val.every == 0 or model.iter == end):
            scores = validate(model, val_ds, opts.val.max_images, root / "visualization")
            logger(f"val iter {model.iter}: " + "  ".join(f"{k} {v:.4f}" for k, v in scores.items()))
            logger.scalars(model.iter, scores, "val")
        if rank == 0 and (model.iter % opts.logger.save_every == 0 or model.iter == end or stop.name):
            logger(f"saved {model.save(root)}")
        if stop.name:
            logger(f"stopped by {stop.name} at iteration {model.iter}; `faceres train -opt {root / 'options.yml'}` resumes from here")
            return
