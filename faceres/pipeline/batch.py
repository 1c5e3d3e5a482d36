"""The folder job: restore many photos into an output folder, resumable, shardable, with a report.

    report = restore_folder(["old_photos/"], "restored/", FaceRestorer(), RestoreOptions(upscale=2))

Writes OUT/restored_imgs/ (whole photos), cropped_faces/, restored_faces/, cmp/ (input | restored)
and report.json. Output names are decided for all inputs before sharding, so every shard and every
re-run agrees on them; a photo whose restored image exists is skipped unless `overwrite`. Every file
is written to a temporary name and renamed, the restored image last: its presence marks "done".
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .images import DEFAULT_MAX_PIXELS, ImageError, Photo, encode_image, list_images, load_photo, write_atomic
from .options import DEFAULT_OPTIONS, RestoreOptions
from .restorer import FaceRestorer, RestoreResult

OUTPUT_DIRS = ("restored_imgs", "cropped_faces", "restored_faces", "cmp")
EXT_FOR_INPUT = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp", ".tif": "tif", ".tiff": "tif", ".bmp": "bmp"}
OUTPUT_EXTS = ("auto", "png", "jpg", "webp", "tif")


@dataclass(frozen=True)
class BatchJob:
    source: Path
    stem: Path  # unique among the batch's inputs; per-face files are <stem>_NN.png
    image: Path  # OUT/restored_imgs/<stem><suffix>.<ext>


@dataclass
class BatchReport:
    header: dict  # model, detector, device, identity metric, settings
    images: list[dict] = field(default_factory=list)  # one entry per photo: output, faces, timings, or error/skipped
    failed: int = 0
    faces: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    path: Path | None = None  # where report.json was written
    write_error: str | None = None  # why it could not be

    @property
    def ok(self) -> int:
        return len(self.images) - self.failed

    def to_dict(self) -> dict:
        return {**self.header, "images": self.images, "failed": self.failed, "faces": self.faces,
                "interrupted": self.interrupted, "seconds": round(self.seconds, 3)}


def _unique_stem(stem: Path, suffix: str, taken: set[str]) -> Path:
    """`stem`, else `stem_<input ext>`, else `stem_<input ext>_2`, ...: the first free one (case-insensitive)."""
    candidates = [stem, stem.with_name(f"{stem.name}_{suffix.lstrip('.').lower()}")]
    n = 2
    while True:
        for candidate in candidates:
            key = str(candidate).casefold()
            if key not in taken:
                taken.add(key)
                return candidate
        candidates = [candidates[1].with_name(f"{candidates[1].name}_{n}")]
        n += 1


def plan_jobs(inputs: Iterable[str | Path], out_dir: str | Path, *, recursive: bool = False, ext: str = "auto", suffix: str = "",
              shard: tuple[int, int] = (0, 1)) -> list[BatchJob]:
    """Inputs (files, folders, globs) -> this shard's jobs. Names are made unique over all inputs first:
    `a.jpg` and `a.png` in one folder become `a` and `a_png` (their faces would collide otherwise)."""
    if ext not in OUTPUT_EXTS:
        raise ValueError(f"ext must be one of {', '.join(OUTPUT_EXTS)}, got {ext!r}")
    shard_i, shard_n = shard
    if not 0 <= shard_i < shard_n:
        raise ValueError(f"shard {shard_i}/{shard_n}: need 0 <= i < n")
    out_dir, taken, jobs = Path(out_dir), set(), []
    for path, rel in list_images([str(i) for i in inputs], recursive):
        stem = _unique_stem(rel.with_suffix(""), rel.suffix, taken)
        image_ext = ext if ext != "auto" else EXT_FOR_INPUT.get(rel.suffix.lower(), "png")
        jobs.append(BatchJob(path, stem, out_dir / "restored_imgs" / f"{stem}{suffix}.{image_ext}"))
    return jobs[shard_i::shard_n]


def clean_partial_files(out_dir: Path) -> int:
    """Remove temporary files a killed run left behind."""
    removed = 0
    for d in OUTPUT_DIRS:
        for f in (out_dir / d).rglob(".*.part") if (out_dir / d).is_dir() else []:
            f.unlink(missing_ok=True)
            removed += 1
    return removed


def save_faces(result: RestoreResult, stem: Path, out_dir: Path) -> None:
    for idx, face in enumerate(result.faces):
        name = f"{stem}_{idx:02d}.png"
        cmp = np.concatenate([face.crop, face.restored], axis=1)
        for folder, rgb in (("cropped_faces", face.crop), ("restored_faces", face.restored), ("cmp", cmp)):
            write_atomic(out_dir / folder / name, encode_image(Photo(rgb, gray=result.photo.gray), "png"))


def restore_one(restorer: FaceRestorer, job: BatchJob, out_dir: Path, options: RestoreOptions, *, faces: bool = True,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """Restore one photo and write its outputs; returns its report entry."""
    t = time.perf_counter()
    photo = load_photo(job.source, max_pixels)
    decode = time.perf_counter() - t
    result = restorer.restore(photo, options)
    if faces:
        save_faces(result, job.stem, out_dir)
    t = time.perf_counter()
    write_atomic(job.image, encode_image(result.photo, job.image.suffix))  # last: its presence marks "done"
    timings = {"decode": decode, **result.timings, "encode": time.perf_counter() - t}
    entry = {"input": str(job.source), "output": str(job.image), "faces": len(result.faces),
             "boxes": [[round(float(v), 1) for v in f.box] for f in result.faces],
             "scores": [round(f.score, 4) for f in result.faces],
             "identity": [None if f.identity is None else round(f.identity, 4) for f in result.faces],
             "drifted": [i for i, f in enumerate(result.faces) if f.drifted],
             "seconds": {k: round(v, 4) for k, v in timings.items()}}
    actions = {i: f.action for i, f in enumerate(result.faces) if f.action}
    if actions:
        entry["drift_actions"] = actions
    references = [f.reference for f in result.faces if f.reference]
    if references:
        entry["reference"] = references
    if photo.notes:
        entry["notes"] = list(photo.notes)
    if not result.faces:
        entry["notes"] = entry.get("notes", []) + ["no face found"]
    return entry


def report_header(restorer: FaceRestorer, options: RestoreOptions, model_name: str | None = None) -> dict:
    guarded = options.on_drift != "off"
    return {"model": model_name or restorer.model_name,
            "detector": "none (aligned input)" if options.aligned else restorer.detector_name,
            "device": str(restorer.device),
            "identity_metric": restorer.guard.name if guarded else None,
            "drift_threshold": restorer.drift_threshold(options) if guarded else None,
            "upscale": options.upscale, "fidelity": options.fidelity,
            "flip_ensemble": restorer.flip_ensemble if options.flip_ensemble is None else options.flip_ensemble}


def report_name(shard: tuple[int, int]) -> str:
    return "report.json" if shard[1] == 1 else f"report.shard{shard[0]}-of-{shard[1]}.json"


def restore_jobs(jobs: list[BatchJob], out_dir: str | Path, restorer: FaceRestorer, options: RestoreOptions = DEFAULT_OPTIONS, *,
                 overwrite: bool = False, faces: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS, shard: tuple[int, int] = (0, 1),
                 model_name: str | None = None, on_entry: Callable[[dict, BatchReport], None] | None = None) -> BatchReport:
    """Run planned jobs. A bad photo becomes an entry with an `error` and the batch goes on; Ctrl-C
    (KeyboardInterrupt) stops after the current photo is written or abandoned, and the report is still
    written. `on_entry(entry, report)` is called after every photo (progress display)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_partial_files(out_dir)
    report = BatchReport(report_header(restorer, options, model_name))
    t0 = time.perf_counter()
    try:
        for job in jobs:
            report.images.append(_run_job(restorer, job, out_dir, options, overwrite, faces, max_pixels))
            entry = report.images[-1]
            report.failed += "error" in entry
            report.faces += entry.get("faces", 0)
            if on_entry is not None:
                on_entry(entry, report)
    except KeyboardInterrupt:
        report.interrupted = True
    report.seconds = time.perf_counter() - t0
    report.path = out_dir / report_name(shard)
    try:
        write_atomic(report.path, json.dumps(report.to_dict(), indent=1).encode())
    except OSError as err:
        report.path, report.write_error = None, str(err)
    return report


def _run_job(restorer, job: BatchJob, out_dir: Path, options, overwrite: bool, faces: bool, max_pixels: int) -> dict:
    if job.image.exists() and not overwrite:
        return {"input": str(job.source), "output": str(job.image), "skipped": "output exists"}
    try:
        return restore_one(restorer, job, out_dir, options, faces=faces, max_pixels=max_pixels)
    except (ImageError, OSError) as err:
        return {"input": str(job.source), "error": str(err)}
    except Exception as err:  # one bad file must not stop the batch
        return {"input": str(job.source), "error": f"{err.__class__.__name__}: {err}"}


def restore_folder(inputs: Iterable[str | Path], out_dir: str | Path, restorer: FaceRestorer, options: RestoreOptions = DEFAULT_OPTIONS,
                   *, recursive: bool = False, ext: str = "auto", suffix: str = "", overwrite: bool = False,
                   shard: tuple[int, int] = (0, 1), faces: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS,
                   on_entry: Callable[[dict, BatchReport], None] | None = None) -> BatchReport:
    """Files, folders or globs -> OUT/ (see the module docstring). Raises ValueError when nothing matches."""
    inputs = list(inputs)
    jobs = plan_jobs(inputs, out_dir, recursive=recursive, ext=ext, suffix=suffix, shard=shard)
    if not jobs:
        raise ValueError(f"no images found in {' '.join(str(i) for i in inputs)}")
    return restore_jobs(jobs, out_dir, restorer, options, overwrite=overwrite, faces=faces, max_pixels=max_pixels, shard=shard,
                        on_entry=on_entry)
