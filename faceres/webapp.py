"""faceres web demo: upload photos, get them back with restored faces.

    python app.py [--host 127.0.0.1] [--port 7860] [--model NAME_OR_PATH ...]   (or: faceres app ...)

Runs offline on CPU with the shipped model. The page offers only the models the operator
listed (default: the registry's restorers whose weights are on disk); it never reads a path
or checkpoint supplied by a visitor.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from .pipeline import FaceRestorer, RestoreOptions
from .pipeline.images import ImageError, encode_image, load_photo, to_uint8, write_atomic
from .weights import DEFAULT_RESTORER, REGISTRY, WeightsError, resolve

MAX_UPLOAD = os.environ.get("FACERES_APP_MAX_UPLOAD", "20mb")
MAX_PIXELS = int(float(os.environ.get("FACERES_APP_MAX_PIXELS", 25e6)))
MAX_OUTPUT_PIXELS = int(float(os.environ.get("FACERES_APP_MAX_OUTPUT_PIXELS", 100e6)))  # 1.2 GB as a float canvas
CONCURRENCY = int(os.environ.get("FACERES_APP_CONCURRENCY", 2))  # requests served at once, sharing the restorers
MAX_RESTORERS = 2  # (model, detector, background) combinations kept loaded
MAX_FILES = 8
TIME_BUDGET_S = float(os.environ.get("FACERES_APP_TIMEOUT", 300))
DETECTORS = ["auto", "retinaface_resnet50", "retinaface_mobile0.25", "yunet", "dlib"]


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
    return names or [DEFAULT_RESTORER]


_restorers: OrderedDict[tuple[str, str, str], FaceRestorer] = OrderedDict()
_restorers_lock = threading.Lock()


def get_restorer(model: str, detector: str, bg: str) -> FaceRestorer:
    """One restorer per (model, detector, background upsampler), shared by every request: a FaceRestorer
    is thread-safe and takes upscale, fidelity and the rest per call. The least recently used is dropped
    beyond MAX_RESTORERS."""
    key = (model, detector, bg)
    with _restorers_lock:
        if key not in _restorers:
            _restorers[key] = FaceRestorer(model, detector=detector, bg_upsampler=None if bg == "none" else bg)
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
    files = files[:MAX_FILES]
    try:
        options = RestoreOptions(upscale=float(upscale), fidelity=float(fidelity), aligned=bool(aligned), on_drift="flag")
        restorer = get_restorer(model, detector, bg)
        restorer.prepare(options)
    except (WeightsError, ValueError) as err:
        return error_result(str(err))
    out_dir = Path(tempfile.mkdtemp(prefix="faceres-app-"))
    start, gallery, downloads, lines, first = time.perf_counter(), [], [], [], None
    for path in files:
        name = Path(path).name
        if time.perf_counter() - start > TIME_BUDGET_S:
            lines.append(f"- **{name}**: skipped, the request ran past {TIME_BUDGET_S:.0f} s")
            continue
        try:
            photo = load_photo(path, MAX_PIXELS)
            out_mp = photo.rgb.shape[0] * photo.rgb.shape[1] * options.upscale**2 / 1e6
            if out_mp > MAX_OUTPUT_PIXELS / 1e6:
                raise ImageError(f"the result would be {out_mp:.0f} MP, over this server's {MAX_OUTPUT_PIXELS / 1e6:.0f} MP; "
                                 "lower the upscale")
        except ImageError as err:
            if len(files) == 1:
                return error_result(f"{name}: {err}")
            lines.append(f"- **{name}**: {err}")
            continue
        t = time.perf_counter()
        result = restorer.restore(photo, options)
        seconds = time.perf_counter() - t
        target = out_dir / f"{Path(name).stem}_restored.png"
        write_atomic(target, encode_image(result.photo, "png"))
        downloads.append(str(target))
        gallery += [(to_uint8(np.concatenate([f.crop, f.restored], axis=1)), f"{name} face {i + 1}: input | restored")
                    for i, f in enumerate(result.faces)]
        note = "no face found" if not result.faces else f"{len(result.faces)} face(s)"
        lines.append(f"- **{name}**: {note}, {seconds:.1f} s, {result.image.shape[1]}×{result.image.shape[0]} px")
        lines += [f"  - ⚠ face {i + 1}: identity drift ({restorer.guard.name} {f.identity:.3f} < {restorer.drift_threshold(options)}); "
                  "try a higher fidelity" for i, f in enumerate(result.faces) if f.drifted]
        if first is None:
            before = cv2.resize(photo.rgb, result.image.shape[1::-1], interpolation=cv2.INTER_LANCZOS4)
            first = (to_uint8(before), to_uint8(result.image))
    detector_name = "none (aligned input)" if options.aligned else restorer.detector_name
    status = f"**{detector_name}** detector, model **{model}**, total {time.perf_counter() - start:.1f} s\n\n" + "\n".join(lines)
    return first, gallery, status, downloads


def build_demo(models: list[str]):
    import gradio as gr

    with gr.Blocks(title="faceres — face restoration", delete_cache=(600, 900)) as demo:
        gr.Markdown("# faceres\nRestore faces in old and degraded photos. Files are processed on this server and "
                    "deleted after about 15 minutes.")
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
                faces = gr.Gallery(label="Faces: input | restored", columns=3, elem_id="faces")
                download = gr.File(label="Download full resolution", file_count="multiple", elem_id="download")
        run.click(lambda *a: restore_files(*a, allowed_models=models), [files, model, detector, upscale, fidelity, bg, aligned],
                  [slider, faces, status, download], concurrency_limit=CONCURRENCY)
    demo.queue(max_size=16, default_concurrency_limit=CONCURRENCY)
    return demo


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--model", action="append", help="model(s) to offer (default: restorers found on disk)")
    args = ap.parse_args(argv)
    models = args.model or available_models()
    build_demo(models).launch(server_name=args.host, server_port=args.port, max_file_size=MAX_UPLOAD, show_error=True)


if __name__ == "__main__":
    main()
