"""What a run checks before it does any work: the settings, each photo's output size, and that no other
run writes into the same output folder.

Memory is bounded by capping output pixels: the full-resolution canvas, its background resize, the paste
masks and the encoder's copy cost about 62 bytes per output pixel (measured, see the README).
"""

from __future__ import annotations

import math
import os
import re
import socket
from pathlib import Path

from PIL import Image

from .images import ImageError
from .options import require

DEFAULT_MAX_OUTPUT_PIXELS = 100_000_000  # about 6 GB at peak: fits a 24 GB machine with room for the model and the OS
LOCK_NAME = ".faceres.lock"
DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device(device: str) -> None:
    """One line for a device this machine does not have or torch does not know."""
    import torch

    require(bool(DEVICE_RE.match(device)), f"unknown device {device!r}; choose auto, cpu, cuda, cuda:N or mps")
    if device.startswith("cuda"):
        require(torch.cuda.is_available(), f"device {device}: no CUDA GPU is available here (use --device cpu or auto)")
        index = int(device.partition(":")[2] or 0)
        require(index < torch.cuda.device_count(), f"device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    if device == "mps":
        require(
            bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available(),
            "device mps: Apple's Metal backend is not available here (use --device cpu or auto)",
        )


def check_run_settings(
    output: str | os.PathLike,
    *,
    batch_size: int = 4,
    device: str = "auto",
    drift_threshold: float | None = None,
    suffix: str = "",
    max_output_pixels: float = DEFAULT_MAX_OUTPUT_PIXELS,
) -> None:
    """The folder job's settings that RestoreOptions does not hold; ValueError with one line."""
    require(str(output) != "", "the output folder (-o) must not be empty")
    require(isinstance(batch_size, int) and batch_size >= 1, f"--batch-size must be a positive integer, got {batch_size}")
    if drift_threshold is not None:
        require(math.isfinite(drift_threshold) and 0 < drift_threshold < 1, f"--drift-threshold must be in (0, 1), got {drift_threshold}")
    check_suffix(suffix)
    require(math.isfinite(max_output_pixels) and max_output_pixels >= 1, f"--max-output-pixels must be >= 1, got {max_output_pixels}")
    check_device(device)


def check_suffix(suffix: str) -> None:
    require(
        "/" not in suffix and "\\" not in suffix and ".." not in suffix and "\0" not in suffix,
        f"--suffix {suffix!r}: must not contain a path separator or '..'",
    )


def check_output_pixels(size: tuple[int, int], upscale: float, max_output_pixels: float, limit: str = "the limit") -> None:
    """size (W, H) of the input; ImageError when the result would be larger than the cap, naming the largest upscale that fits."""
    w, h = size
    out_w, out_h = round(w * upscale), round(h * upscale)
    if out_w * out_h > max_output_pixels:
        fits = math.floor(math.sqrt(max_output_pixels / (w * h)) * 100) / 100
        raise ImageError(
            f"the result would be {out_w}x{out_h} px ({out_w * out_h / 1e6:.0f} MP), over {limit} of "
            f"{max_output_pixels / 1e6:.0f} MP; use an upscale of at most {fits:g}"
            + (" or raise --max-output-pixels" if limit == "the limit" else "")
        )


def header_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(W, H) from the file's header without decoding it; None when PIL cannot tell (load_photo says why)."""
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # noqa: BLE001 -- any failure is reported by the real decode
        return None


# ---------------------------------------------------------------------------- output folder lock


class OutputLocked(ValueError):
    pass


def _alive(pid: int, host: str) -> bool:
    if host != socket.gethostname():
        return True  # cannot tell for another machine: assume it runs
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_owner(path: Path) -> tuple[int, str] | None:
    """(pid, host) written in a lock file; None while it is being written or unreadable."""
    try:
        pid, host = path.read_text().split()
        return int(pid), host
    except (OSError, ValueError):
        return None


def held_by_live_run(path: Path) -> bool:
    owner = lock_owner(path)
    return owner is None or _alive(*owner)


def shard_tag(shard: tuple[int, int]) -> str:
    """What a shard's run-wide files (lock, report) add to their names: nothing for an unsharded run."""
    return "" if shard[1] == 1 else f".shard{shard[0]}-of-{shard[1]}"


def lock_path(out_dir: str | os.PathLike, shard: tuple[int, int] = (0, 1)) -> Path:
    return Path(out_dir) / (LOCK_NAME + shard_tag(shard))


class OutputLock:
    """OUT/.faceres.lock (one per shard) holding "pid host": a second run into the same folder fails with
    one line. A lock left by a killed run (its pid gone on this host) is taken over."""

    def __init__(self, out_dir: str | os.PathLike, shard: tuple[int, int] = (0, 1)):
        self.path = lock_path(out_dir, shard)
        self.held = False

    def acquire(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = lock_owner(self.path)
                if held_by_live_run(self.path):
                    who = f"process {owner[0]} on {owner[1]}" if owner else "another run"
                    raise OutputLocked(
                        f"{self.path.parent}: {who} is writing into this folder (lock {self.path.name}); wait for it or choose another -o"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its run was killed
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {socket.gethostname()}\n")
            self.held = True
            return self
        raise OutputLocked(f"{self.path}: cannot take the lock")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
