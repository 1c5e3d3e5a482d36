"""`faceres restore`: settings checked up front, then the folder job (faceres.pipeline.batch) with a progress bar."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from .cli import FLIP_CHOICES, fail


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def cmd_restore(args) -> int:
    from .pipeline.batch import plan_jobs, restore_jobs
    from .pipeline.images import ImageError
    from .pipeline.options import RestoreOptions
    from .pipeline.reference import SAIRConfig
    from .pipeline.restorer import FaceRestorer
    from .pipeline.runchecks import OutputLocked, check_run_settings, held_by_live_run, lock_path
    from .weights import DEFAULT_RESTORER, WeightsError

    model = args.model or DEFAULT_RESTORER
    try:
        check_run_settings(
            args.output,
            batch_size=args.batch_size,
            device=args.device,
            drift_threshold=args.drift_threshold,
            suffix=args.suffix,
            max_output_pixels=args.max_output_pixels,
        )
        options = RestoreOptions(
            upscale=args.upscale,
            fidelity=args.fidelity,
            only_center_face=args.only_center_face,
            aligned=args.aligned,
            min_eye_distance=args.min_eye_distance,
            flip_ensemble=FLIP_CHOICES[args.flip_ensemble],
            on_drift=args.on_drift,
            drift_threshold=args.drift_threshold,
        )
        out = Path(args.output)
        jobs = plan_jobs(args.inputs, out, recursive=args.recursive, ext=args.ext, suffix=args.suffix, shard=args.shard)
        if not jobs:
            return fail(f"no images found in {' '.join(args.inputs)}")
        if not any(job.source.exists() for job in jobs):  # before the model loads; one missing among others is per file
            more = f" (and {len(jobs) - 1} more inputs)" if len(jobs) > 1 else ""
            return fail(f"{jobs[0].source}: no such file{more}")
        lock = lock_path(out, args.shard)
        if lock.exists() and held_by_live_run(lock):  # before the model loads; restore_jobs takes the lock itself
            raise OutputLocked(f"{out}: another run is writing into this folder (lock {lock.name}); wait for it or choose another -o")
        out.mkdir(parents=True, exist_ok=True)
        restorer = FaceRestorer(
            model,
            detector=args.detector,
            device=args.device,
            precision=args.precision,
            batch_size=args.batch_size,
            bg_upsampler=args.bg_upsampler,
            parse=args.parse,
            reference=args.reference,
            sair=SAIRConfig(steps=args.reference_steps),
        )
        restorer.prepare(options)
    except (WeightsError, ValueError, OSError, ImageError) as err:
        return fail(str(err))
    detector = "none (aligned input)" if options.aligned else restorer.detector_name
    print(f"faceres: model {model} on {restorer.device}, detector {detector}, {len(jobs)} image(s)", file=sys.stderr)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    return _run(jobs, out, restorer, options, model, args, restore_jobs)


def _run(jobs, out: Path, restorer, options, model: str, args, restore_jobs) -> int:
    from tqdm import tqdm

    from .pipeline.runchecks import OutputLocked

    bar, t0 = tqdm(total=len(jobs), unit="img", file=sys.stderr), time.perf_counter()

    def on_entry(entry, report):
        if "error" in entry:
            tqdm.write(f"faceres: {entry['input']}: {entry['error']}", file=sys.stderr)
        bar.update(1)
        bar.set_postfix(faces=report.faces, faces_per_s=f"{report.faces / (time.perf_counter() - t0):.2f}")

    try:
        report = restore_jobs(
            jobs,
            out,
            restorer,
            options,
            overwrite=args.overwrite,
            faces=not args.no_faces,
            max_pixels=int(args.max_pixels),
            max_output_pixels=args.max_output_pixels,
            shard=args.shard,
            model_name=model,
            on_entry=on_entry,
        )
    except OutputLocked as err:
        return fail(str(err))
    finally:
        bar.close()
    if report.interrupted:
        print("faceres: interrupted; finished outputs are complete, re-run to continue", file=sys.stderr)
    if report.write_error:
        print(f"faceres: cannot write report: {report.write_error}", file=sys.stderr)
    skipped = f", {report.skipped} already done" if report.skipped else ""
    print(f"faceres: {report.ok} ok{skipped}, {report.failed} failed, {report.faces} faces -> {out}", file=sys.stderr)
    return 130 if report.interrupted else (1 if report.failed else 0)
