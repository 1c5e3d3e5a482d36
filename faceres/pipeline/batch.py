"""The folder job: restore many photos into an output folder, resumable, shardable, with a report.

    report = restore_folder(["old_photos/"], "restored/", FaceRestorer(), RestoreOptions(upscale=2))

Writes OUT/restored_imgs/ (whole photos), cropped_faces/, restored_faces/, cmp/ (input | restored)
and report.json. Output names are decided for all inputs before sharding, so every shard and every
re-run agrees on them; a photo whose restored image exists is skipped unless `overwrite`. Every file
is written to a temporary name and renamed, the restored image last: its presence marks "done".
"""

from __future__ import annotations

import glob
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..files import write_atomic
from .images import DEFAULT_MAX_PIXELS, ImageError, Photo, check_output_size, encode_image, list_images, load_photo
from .options import DEFAULT_OPTIONS, RestoreOptions
from .restorer import FaceRestorer, RestoreResult
from .runchecks import (
    DEFAULT_MAX_OUTPUT_PIXELS,
    LOCK_NAME,
    OutputLock,
    check_output_pixels,
    check_suffix,
    header_size,
    held_by_live_run,
    shard_tag,
)

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
    skipped: int = 0  # outputs already there (resume): their entries list the files found
    faces: int = 0  # restored by this run
    interrupted: bool = False
    seconds: float = 0.0
    path: Path | None = None  # where report.json was written
    write_error: str | None = None  # why it could not be

    @property
    def ok(self) -> int:
        return len(self.images) - self.failed - self.skipped

    def to_dict(self) -> dict:
        faces_total = sum(e.get("faces", 0) for e in self.images)
        return {
            **self.header,
            "images": self.images,
            "ok": self.ok,
            "skipped": self.skipped,
            "failed": self.failed,
            "faces": self.faces,
            "faces_total": faces_total,
            "interrupted": self.interrupted,
            "seconds": round(self.seconds, 3),
        }


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


def plan_jobs(
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    *,
    recursive: bool = False,
    ext: str = "auto",
    suffix: str = "",
    shard: tuple[int, int] = (0, 1),
) -> list[BatchJob]:
    """Inputs (files, folders, globs) -> this shard's jobs. Names are made unique over all inputs first:
    `a.jpg` and `a.png` in one folder become `a` and `a_png` (their faces would collide otherwise)."""
    if ext not in OUTPUT_EXTS:
        raise ValueError(f"ext must be one of {', '.join(OUTPUT_EXTS)}, got {ext!r}")
    check_suffix(suffix)
    shard_i, shard_n = shard
    if not 0 <= shard_i < shard_n:
        raise ValueError(f"shard {shard_i}/{shard_n}: need 0 <= i < n")
    out_dir, taken, jobs = Path(out_dir), set(), []
    for path, rel in list_images([str(i) for i in inputs], recursive):
        if _written_by_faceres(path, out_dir):
            continue
        stem = _unique_stem(rel.with_suffix(""), rel.suffix, taken)
        image_ext = ext if ext != "auto" else EXT_FOR_INPUT.get(rel.suffix.lower(), "png")
        jobs.append(BatchJob(path, stem, out_dir / "restored_imgs" / f"{stem}{suffix}.{image_ext}"))
    return jobs[shard_i::shard_n]


def _written_by_faceres(path: Path, out_dir: Path) -> bool:
    """A run never reads what faceres wrote: files under OUT's output folders are not inputs."""
    resolved = path.resolve()
    return any(resolved.is_relative_to((out_dir / d).resolve()) for d in OUTPUT_DIRS)


def other_runs(out_dir: Path, own: Path | None = None) -> list[Path]:
    """Lock files of other live runs (shards) writing into out_dir."""
    return [f for f in out_dir.glob(LOCK_NAME + "*") if f != own and held_by_live_run(f)]


def clean_partial_files(out_dir: Path, own_lock: Path | None = None) -> int:
    """Remove temporary files a killed run left behind; none while another run (shard) writes here,
    since its temporary files look the same."""
    if other_runs(out_dir, own_lock):
        return 0
    removed = 0
    for d in OUTPUT_DIRS:
        for f in (out_dir / d).rglob(".*.part") if (out_dir / d).is_dir() else []:
            f.unlink(missing_ok=True)
            removed += 1
    return removed


def save_faces(result: RestoreResult, stem: Path, out_dir: Path) -> list[str]:
    written = []
    for idx, face in enumerate(result.faces):
        name = f"{stem}_{idx:02d}.png"
        cmp = np.concatenate([face.crop, face.restored], axis=1)
        for folder, rgb in (("cropped_faces", face.crop), ("restored_faces", face.restored), ("cmp", cmp)):
            write_atomic(out_dir / folder / name, encode_image(Photo(rgb, gray=result.photo.gray), "png"))
            written.append(str(out_dir / folder / name))
    return written


def face_files_on_disk(stem: Path, out_dir: Path) -> list[str]:
    """The per-face files an earlier run wrote for this stem (resume)."""
    pattern = f"{glob.escape(stem.name)}_[0-9][0-9].png"
    return [str(f) for d in OUTPUT_DIRS[1:] for f in sorted((out_dir / d / stem.parent).glob(pattern))]


def check_sizes(job: BatchJob, upscale: float, max_output_pixels: float, size: tuple[int, int] | None = None) -> None:
    """Before any processing of this photo: the output pixel cap and what the output format can hold."""
    size = size or header_size(job.source)
    if size is not None:
        check_output_pixels(size, upscale, max_output_pixels)
        check_output_size((round(size[1] * upscale), round(size[0] * upscale)), job.image.suffix)


def restore_one(
    restorer: FaceRestorer,
    job: BatchJob,
    out_dir: Path,
    options: RestoreOptions,
    *,
    faces: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_output_pixels: float = DEFAULT_MAX_OUTPUT_PIXELS,
) -> dict:
    """Restore one photo and write its outputs; returns its report entry."""
    check_sizes(job, options.upscale, max_output_pixels)  # from the header: before decoding
    t = time.perf_counter()
    photo = load_photo(job.source, max_pixels)
    check_sizes(job, options.upscale, max_output_pixels, photo.rgb.shape[1::-1])  # EXIF rotation may swap the sides
    decode = time.perf_counter() - t
    result = restorer.restore(photo, options)
    written = save_faces(result, job.stem, out_dir) if faces else []
    t = time.perf_counter()
    write_atomic(job.image, encode_image(result.photo, job.image.suffix))  # last: its presence marks "done"
    timings = {"decode": decode, **result.timings, "encode": time.perf_counter() - t}
    entry = {
        "input": str(job.source),
        "output": str(job.image),
        "outputs": [str(job.image), *written],
        "faces": len(result.faces),
        "boxes": [[round(float(v), 1) for v in f.box] for f in result.faces],
        "scores": [round(f.score, 4) for f in result.faces],
        "identity": [None if f.identity is None else round(f.identity, 4) for f in result.faces],
        "drifted": [i for i, f in enumerate(result.faces) if f.drifted],
        "seconds": {k: round(v, 4) for k, v in timings.items()},
    }
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
    return {
        "model": model_name or restorer.model_name,
        "detector": "none (aligned input)" if options.aligned else restorer.detector_name,
        "device": str(restorer.device),
        "identity_metric": restorer.guard.name if guarded else None,
        "drift_threshold": restorer.drift_threshold(options) if guarded else None,
        "upscale": options.upscale,
        "fidelity": options.fidelity,
        "flip_ensemble": restorer.flip_ensemble if options.flip_ensemble is None else options.flip_ensemble,
    }


def report_name(shard: tuple[int, int]) -> str:
    return f"report{shard_tag(shard)}.json"


def restore_jobs(
    jobs: list[BatchJob],
    out_dir: str | Path,
    restorer: FaceRestorer,
    options: RestoreOptions = DEFAULT_OPTIONS,
    *,
    overwrite: bool = False,
    faces: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_output_pixels: float = DEFAULT_MAX_OUTPUT_PIXELS,
    shard: tuple[int, int] = (0, 1),
    model_name: str | None = None,
    on_entry: Callable[[dict, BatchReport], None] | None = None,
) -> BatchReport:
    """Run planned jobs. A bad photo becomes an entry with an `error` and the batch goes on; Ctrl-C
    (KeyboardInterrupt) stops after the current photo is written or abandoned, and the report is still
    written. `on_entry(entry, report)` is called after every photo (progress display)."""
    out_dir = Path(out_dir)
    with OutputLock(out_dir, shard) as lock:
        clean_partial_files(out_dir, lock.path)
        return _restore_locked(
            jobs, out_dir, restorer, options, overwrite, faces, max_pixels, max_output_pixels, shard, model_name, on_entry
        )


def _restore_locked(
    jobs, out_dir: Path, restorer, options, overwrite, faces, max_pixels, max_output_pixels, shard, model_name, on_entry
) -> BatchReport:
    report = BatchReport(report_header(restorer, options, model_name))
    t0 = time.perf_counter()
    try:
        for job in jobs:
            report.images.append(_run_job(restorer, job, out_dir, options, overwrite, faces, max_pixels, max_output_pixels))
            entry = report.images[-1]
            report.failed += "error" in entry
            report.skipped += "skipped" in entry
            report.faces += 0 if "skipped" in entry else entry.get("faces", 0)
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


def _run_job(
    restorer, job: BatchJob, out_dir: Path, options, overwrite: bool, faces: bool, max_pixels: int, max_output_pixels: float
) -> dict:
    if job.image.exists() and not overwrite:
        face_files = face_files_on_disk(job.stem, out_dir)
        n_faces = sum(Path(f).is_relative_to(out_dir / "restored_faces") for f in face_files)
        return {
            "input": str(job.source),
            "output": str(job.image),
            "outputs": [str(job.image), *face_files],
            "faces": n_faces,
            "skipped": "output exists",
        }
    try:
        return restore_one(restorer, job, out_dir, options, faces=faces, max_pixels=max_pixels, max_output_pixels=max_output_pixels)
    except (ImageError, OSError) as err:
        return {"input": str(job.source), "error": str(err)}
    except Exception as err:  # one bad file must not stop the batch
        return {"input": str(job.source), "error": f"{err.__class__.__name__}: {err}"}


def restore_folder(
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    restorer: FaceRestorer,
    options: RestoreOptions = DEFAULT_OPTIONS,
    *,
    recursive: bool = False,
    ext: str = "auto",
    suffix: str = "",
    overwrite: bool = False,
    shard: tuple[int, int] = (0, 1),
    faces: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_output_pixels: float = DEFAULT_MAX_OUTPUT_PIXELS,
    on_entry: Callable[[dict, BatchReport], None] | None = None,
) -> BatchReport:
    """Files, folders or globs -> OUT/ (see the module docstring). Raises ValueError when nothing matches."""
    inputs = list(inputs)
    jobs = plan_jobs(inputs, out_dir, recursive=recursive, ext=ext, suffix=suffix, shard=shard)
    if not jobs:
        raise ValueError(f"no images found in {' '.join(str(i) for i in inputs)}")
    return restore_jobs(
        jobs,
        out_dir,
        restorer,
        options,
        overwrite=overwrite,
        faces=faces,
        max_pixels=max_pixels,
        max_output_pixels=max_output_pixels,
        shard=shard,
        on_entry=on_entry,
    )
