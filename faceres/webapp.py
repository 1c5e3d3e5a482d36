"""faceres web demo: upload photos, get them back with restored faces.

    python app.py [--host 127.0.0.1] [--port 7860] [--model NAME_OR_PATH ...]   (or: faceres app ...)

Runs offline on CPU with the shipped model. The page offers only the models the operator
listed (default: the registry's restorers whose weights are on disk); it never reads a path
or checkpoint supplied by a visitor.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from .allocator import tune_allocator
from .files import write_atomic
from .pipeline import FaceRestorer, RestoreOptions
from .pipeline.detect import DETECTOR_WEIGHTS
from .pipeline.images import ImageError, encode_image, load_photo, to_uint8
from .pipeline.runchecks import check_output_pixels, header_size
from .weights import DEFAULT_RESTORER, REGISTRY, WeightsError, resolve

MAX_UPLOAD = os.environ.get("FACERES_APP_MAX_UPLOAD", "20mb")
MAX_PIXELS = int(float(os.environ.get("FACERES_APP_MAX_PIXELS", 25e6)))
MAX_OUTPUT_PIXELS = int(float(os.environ.get("FACERES_APP_MAX_OUTPUT_PIXELS", 64e6)))  # peak RSS measured in the README
RESULT_TTL_S = 900  # the page promises deletion after about 15 minutes
PREVIEW_MAX_SIDE = 4096  # the before/after preview is WebP (at most 16383 px a side); downloads keep full resolution
CONCURRENCY = int(os.environ.get("FACERES_APP_CONCURRENCY", 2))  # requests served at once, sharing the restorers
MAX_RESTORERS = 2  # (model, detector, background) combinations kept loaded
MAX_FILES = 8
TIME_BUDGET_S = float(os.environ.get("FACERES_APP_TIMEOUT", 300))
DETECTORS = ["auto", "retinaface_resnet50", "retinaface_mobile0.25", "yunet", "dlib"]
WEIGHTS_OF = {**DETECTOR_WEIGHTS, "realesrgan": "realesrgan-x2"}


def missing_weights(choice: str) -> str | None:
    """Why a detector or upsampler cannot run here, in words for a visitor (no server paths); None if it can.
    Only files already on disk count: a request never starts a download."""
    if choice == "dlib":
        return None if importlib.util.find_spec("dlib") else "the dlib detector is not installed on this server"
    if choice not in WEIGHTS_OF:
        return None
    try:
        resolve(WEIGHTS_OF[choice], allow_download=False)
        return None
    except WeightsError:
        return f"the weights of {choice} are not installed on this server; choose another"


class ResultStore:
    """Per-request result folders under one root; folders older than `ttl` seconds are deleted by `sweep`
    (run every minute by a daemon thread), the whole root at shutdown."""

    def __init__(self, ttl: float = RESULT_TTL_S):
        self.root, self.ttl = Path(tempfile.mkdtemp(prefix="faceres-app-")), ttl

    def new_dir(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.root))

    def sweep(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        try:
            old = [d for d in self.root.iterdir() if now - d.stat().st_mtime > self.ttl]
        except FileNotFoundError:  # the store was closed (its folder removed) while the sweeper slept
            return 0
        for d in old:
            shutil.rmtree(d, ignore_errors=True)
        return len(old)

    def start(self, every: float = 60) -> ResultStore:
        def loop():
            while self.root.is_dir():
                time.sleep(every)
                self.sweep()

        threading.Thread(target=loop, daemon=True, name="faceres-results-sweep").start()
        atexit.register(self.close)
        return self

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


_store: ResultStore | None = None


def result_store() -> ResultStore:
    global _store
    with _restorers_lock:
        if _store is None:
            _store = ResultStore().start()
        return _store


def preview(rgb: np.ndarray) -> np.ndarray:
    """uint8 copy at most PREVIEW_MAX_SIDE a side."""
    scale = PREVIEW_MAX_SIDE / max(rgb.shape[:2])
    if scale < 1:
        rgb = cv2.resize(rgb, (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    return to_uint8(rgb)


def unique_name(name: str, taken: set[str]) -> str:
    """`<stem>_restored.png`, then `<stem>_2_restored.png`, ...: two uploads of one name get two results."""
    stem, n = Path(name).stem, 1
    while (candidate := f"{stem}{'' if n == 1 else f'_{n}'}_restored.png").casefold() in taken:
        n += 1
    taken.add(candidate.casefold())
    return candidate


def available_models() -> list[str]:
    names = []
    for spec in REGISTRY.values():
        if spec.kind != "restorer":
            continue
        try:
            resolve(spec.name, allow_download=False)
            names.append(spec.name)
        except WeightsError:
            pass
    # the default first: the page preselects the first entry
    return sorted(names, key=lambda name: name != DEFAULT_RESTORER) or [DEFAULT_RESTORER]


PRECISION = "auto"  # the server's network precision (`--precision`), see faceres.devices
_restorers: OrderedDict[tuple[str, str, str], FaceRestorer] = OrderedDict()
_restorers_lock = threading.Lock()


def get_restorer(model: str, detector: str, bg: str) -> FaceRestorer:
    """One restorer per (model, detector, background upsampler), shared by every request: a FaceRestorer
    is thread-safe and takes upscale, fidelity and the rest per call. The least recently used is dropped
    beyond MAX_RESTORERS."""
    key = (model, detector, bg)
    with _restorers_lock:
        if key not in _restorers:
            _restorers[key] = FaceRestorer(model, detector=detector, bg_upsampler=None if bg == "none" else bg, precision=PRECISION)
            while len(_restorers) > MAX_RESTORERS:
                _restorers.popitem(last=False)
        _restorers.move_to_end(key)
        return _restorers[key]


def error_result(message: str):
    """Errors are shown in the status panel, where they stay visible (a toast goes away)."""
    return None, [], f"**Error:** {message}", []


def restore_files(files, model, detector, upscale, fidelity, bg, aligned, allowed_models):
    """Returns (slider pair, face gallery, status markdown, download paths)."""
    if not files:
        return error_result("upload at least one photo.")
    if model not in allowed_models:
        return error_result("unknown model.")
    if len(files) > MAX_FILES:
        return error_result(f"at most {MAX_FILES} photos per request; you sent {len(files)}. Restore them in smaller groups.")
    for choice in (detector, bg):
        if (why := missing_weights(choice)) is not None:
            return error_result(why + ".")
    try:
        options = RestoreOptions(upscale=float(upscale), fidelity=float(fidelity), aligned=bool(aligned), on_drift="flag")
        restorer = get_restorer(model, detector, bg)
        restorer.prepare(options)
    except (WeightsError, ValueError) as err:
        return error_result(str(err))
    out_dir, taken = result_store().new_dir(), set()
    start, gallery, downloads, lines, first = time.perf_counter(), [], [], [], None
    for path in files:
        name = Path(path).name
        if time.perf_counter() - start > TIME_BUDGET_S:
            lines.append(f"- **{name}**: skipped, the request ran past {TIME_BUDGET_S:.0f} s")
            continue
        try:
            size = header_size(path)
            if size is not None:  # before decoding
                check_output_pixels(size, options.upscale, MAX_OUTPUT_PIXELS, "this server's limit")
            photo = load_photo(path, MAX_PIXELS)
            check_output_pixels(photo.rgb.shape[1::-1], options.upscale, MAX_OUTPUT_PIXELS, "this server's limit")
        except ImageError as err:
            if len(files) == 1:
                return error_result(f"{name}: {err}")
            lines.append(f"- **{name}**: {err}")
            continue
        t = time.perf_counter()
        result = restorer.restore(photo, options)
        seconds = time.perf_counter() - t
        target = out_dir / unique_name(name, taken)
        write_atomic(target, encode_image(result.photo, "png"))
        downloads.append(str(target))
        gallery += [
            (to_uint8(np.concatenate([f.crop, f.restored], axis=1)), f"{name} face {i + 1}: input | restored")
            for i, f in enumerate(result.faces)
        ]
        note = "no face found" if not result.faces else f"{len(result.faces)} face(s)"
        lines.append(f"- **{name}**: {note}, {seconds:.1f} s, {result.image.shape[1]}×{result.image.shape[0]} px")
        lines += [
            f"  - ⚠ face {i + 1}: identity drift ({restorer.guard.name} {f.identity:.3f} < {restorer.drift_threshold(options)}); "
            "try a higher fidelity"
            for i, f in enumerate(result.faces)
            if f.drifted
        ]
        if first is None:
            after = preview(result.image)
            first = (to_uint8(cv2.resize(photo.rgb, after.shape[1::-1], interpolation=cv2.INTER_AREA)), after)
    detector_name = "none (aligned input)" if options.aligned else restorer.detector_name
    status = f"**{detector_name}** detector, model **{model}**, total {time.perf_counter() - start:.1f} s\n\n" + "\n".join(lines)
    return first, gallery, status, downloads


def build_demo(models: list[str]):
    import gradio as gr

    with gr.Blocks(title="faceres — face restoration", delete_cache=(600, 900)) as demo:
        gr.Markdown(
            "# faceres\nRestore faces in old and degraded photos. Files are processed on this server and "
            f"deleted after about {RESULT_TTL_S // 60} minutes. Limits: up to {MAX_FILES} photos per request, "
            f"{MAX_UPLOAD} and {MAX_PIXELS / 1e6:.0f} MP per photo, results up to {MAX_OUTPUT_PIXELS / 1e6:.0f} MP "
            "(photo pixels × upscale²)."
        )
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label="Photos", file_count="multiple", file_types=["image"], elem_id="upload")
                model = gr.Dropdown(models, value=models[0], label="Model")
                detector = gr.Dropdown(DETECTORS, value="auto", label="Face detector")
                upscale = gr.Slider(1, 4, value=2, step=1, label="Upscale")
                fidelity = gr.Slider(0, 1, value=1, step=0.05, label="Fidelity (1 = closest to the input)")
                bg = gr.Dropdown(["none", "realesrgan"], value="none", label="Background upsampler")
                aligned = gr.Checkbox(label="Already aligned face crops")
                run = gr.Button("Restore", variant="primary", elem_id="restore")
            with gr.Column(scale=2):
                slider = gr.ImageSlider(label="Before / after", elem_id="result", type="numpy")
                status = gr.Markdown(elem_id="status")
                faces = gr.Gallery(label="Faces: input | restored", columns=2, object_fit="contain", elem_id="faces")
                download = gr.File(label="Download full resolution", file_count="multiple", elem_id="download")
        run.click(
            lambda *a: restore_files(*a, allowed_models=models),
            [files, model, detector, upscale, fidelity, bg, aligned],
            [slider, faces, status, download],
            concurrency_limit=CONCURRENCY,
        )
    demo.queue(max_size=16, default_concurrency_limit=CONCURRENCY)
    return demo


def main(argv=None):
    tune_allocator()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--model", action="append", help="model(s) to offer (default: restorers found on disk)")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="auto: bf16 where the hardware computes it")
    args = ap.parse_args(argv)
    global PRECISION
    PRECISION = args.precision
    models = args.model or available_models()
    build_demo(models).launch(server_name=args.host, server_port=args.port, max_file_size=MAX_UPLOAD, show_error=True)


if __name__ == "__main__":
    main()
