"""FaceRestorer: detect -> align -> restore -> paste, the one pipeline the CLI, the batch job and the app share.

A FaceRestorer holds resources (network, detector, face parser, background upsampler, identity guard,
reference photo); what to do with a photo comes with each call as `RestoreOptions`. `restore` never
changes the restorer, so one instance serves several threads at once; resources a call needs for the
first time (the detector, the guard, ...) are built once, under a lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from ..checkpoints import load_model
from ..devices import pick_device, prepare_for_inference
from ..weights import DEFAULT_RESTORER, inference_defaults
from .align import estimate_affine, warp_face
from .background import FaceParser, RealESRGANUpsampler, parser_on_disk
from .detect import DETECTORS, Face, build_detector
from .images import Photo, load_photo, looks_gray
from .options import DEFAULT_OPTIONS, RestoreOptions, require
from .paste import paste_face
from .reference import DEFAULT_DRIFT_THRESHOLD, SAIR, IdentityGuard, SAIRConfig, default_recognizer


@dataclass
class RestoredFace:
    box: np.ndarray
    score: float
    landmarks: np.ndarray
    affine: np.ndarray  # 2x3, photo -> crop
    crop: np.ndarray  # float RGB (size, size, 3): the aligned input face
    restored: np.ndarray | None  # float RGB (size, size, 3); None until restored
    identity: float | None = None  # drift guard: similarity of input and restored face
    drifted: bool = False
    action: str | None = None  # drift fallback taken: "fidelity 1" | "kept input"
    reference: dict | None = None  # SAIR: which reference face, similarity, seconds


@dataclass
class RestoreResult:
    photo: Photo  # restored, upscaled; keeps the input's alpha/grey/bit depth
    faces: list[RestoredFace]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def image(self) -> np.ndarray:
        return self.photo.rgb


def center_face(faces: list[Face], shape) -> list[Face]:
    if not faces:
        return faces
    cy, cx = shape[0] / 2, shape[1] / 2
    return [min(faces, key=lambda f: (f.box[0] + f.box[2] - 2 * cx) ** 2 + (f.box[1] + f.box[3] - 2 * cy) ** 2)]


def to_crops(y: torch.Tensor) -> list[np.ndarray]:
    """(N, 3, H, W) in [-1, 1] -> float RGB [0, 1] HWC crops."""
    return list(((y.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy())


class FaceRestorer:
    """Restore every face in a photo: `FaceRestorer(model, ...).restore(image, options)`.

    model: registry name, checkpoint path (.safetensors, GPEN/GFPGAN/... .pth) or a `RestorationNet`.
    detector: auto | retinaface_resnet50 | retinaface_mobile0.25 | yunet | dlib (built on the first
        photo that needs one). precision: auto | fp32 | bf16 (see `faceres.devices`).
    batch_size: faces per network call. det_max_side: detection runs on a copy no larger than this.
    bg_upsampler: None | "realesrgan" (Real-ESRGAN x2 over tiles) for the rest of the photo.
    parse: auto | on | off: multiply the paste mask by a face-parsing mask (facexlib's ParseNet when its
        weights are on disk, else faceres's own parser, which ships in weights/; auto: none if neither is).
    recognizer: identity network for the drift guard (default: dlib) and for SAIR (default: dlib's face ResNet).
    reference: a photo of the same person: faces are restored by SAIR (latent optimisation of the
        prior toward the reference's identity), configured by `sair`.
    """

    def __init__(
        self,
        model: str | Path | nn.Module = DEFAULT_RESTORER,
        *,
        detector: str = "auto",
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 4,
        det_max_side: int | None = 2048,
        bg_upsampler: str | None = None,
        parse: str = "auto",
        recognizer: nn.Module | None = None,
        reference=None,
        sair: SAIRConfig | None = None,
    ):
        require(detector == "auto" or detector in DETECTORS, f"unknown detector {detector!r}; choose from auto, {', '.join(DETECTORS)}")
        require(bg_upsampler in (None, "none", "realesrgan"), f"unknown background upsampler {bg_upsampler!r}; choose none or realesrgan")
        require(parse in ("auto", "on", "off"), f"parse must be auto, on or off, got {parse!r}")
        require(isinstance(batch_size, int) and batch_size >= 1, f"batch_size must be a positive integer, got {batch_size!r}")
        self.device = pick_device(device)
        if isinstance(model, (str, Path)):
            net, self.model_config = load_model(model)
            self.model_name = str(model)
        else:
            net, self.model_config, self.model_name = model, {"arch": type(model).__name__}, type(model).__name__
        self.net = prepare_for_inference(net, precision, self.device)
        self.size = int(self.net.spec.size)
        self.flip_ensemble = bool(inference_defaults(model).get("flip_ensemble", False))  # the model's default
        self.batch_size, self.det_max_side = batch_size, det_max_side
        self.detector_choice, self.parse, self.recognizer = detector, parse, recognizer
        self.bg_upsampler = RealESRGANUpsampler(device=self.device) if bg_upsampler == "realesrgan" else None
        self._lock = threading.RLock()  # builds resources on first need
        self._detect_lock = threading.Lock()  # OpenCV's, dlib's and facexlib's detectors keep per-call state
        self._guard_lock = threading.Lock()  # dlib's C++ aligner is not re-entrant
        self._built: dict = {}
        self.sair = self._reference_photo = None
        if reference is not None:
            self.sair = SAIR(self.net, (default_recognizer() if recognizer is None else recognizer).to(self.device), sair)
            self._reference_photo = self._as_photo(reference)

    # ------------------------------------------------------------------ resources, built on first need

    def _once(self, key, build):
        if key not in self._built:
            with self._lock:
                if key not in self._built:
                    self._built[key] = build()
        return self._built[key]

    @property
    def detector(self):
        return self._once("detector", lambda: build_detector(self.detector_choice, str(self.device)))

    @property
    def detector_name(self) -> str:
        return self.detector.name

    @property
    def parser(self) -> FaceParser | None:
        return self._once("parser", self._build_parser)

    @property
    def guard(self) -> IdentityGuard:
        return self._once("guard", lambda: IdentityGuard(DEFAULT_DRIFT_THRESHOLD, self.recognizer))

    def _build_parser(self) -> FaceParser | None:
        """auto: the best parser on disk (ParseNet, else faceres's own), none if neither is; on: the same,
        but one is required (ParseNet is then downloaded); off: square feather only."""
        if self.parse == "off":
            return None
        weights = parser_on_disk()
        if weights is None and self.parse == "auto":
            return None
        return FaceParser(weights or "parsenet", device=self.device)

    def _reference(self, aligned: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The reference photo's faces (aligned like the inputs) and their identity embeddings."""
        return self._once(("reference", aligned), lambda: self._embed_reference(aligned))

    def _embed_reference(self, aligned: bool):
        photo = self._reference_photo
        if aligned:
            crops = [cv2.resize(photo.rgb, (self.size, self.size), interpolation=cv2.INTER_AREA)]
        else:
            faces = self.detect(photo)
            require(bool(faces), "no face found in the reference photo")
            crops = [warp_face(photo.rgb, estimate_affine(f.landmarks, self.size), self.size) for f in faces]
        tensors = [self._to_tensor([c]) for c in crops]
        with torch.no_grad():
            return tensors, [self.sair.embed(t) for t in tensors]

    def prepare(self, options: RestoreOptions = DEFAULT_OPTIONS) -> None:
        """Build now what calls with `options` will need, so a missing file or a bad setting is reported
        before a batch starts rather than on its first photo."""
        self.net.spec.check_fidelity(options.fidelity, self.model_name)
        if not options.aligned:
            _ = self.detector, self.parser
        if options.on_drift != "off":
            _ = self.guard
        if self.sair is not None:
            self._reference(options.aligned)

    # ------------------------------------------------------------------ network

    @torch.no_grad()
    def restore_crops(self, crops: list[np.ndarray], options: RestoreOptions = DEFAULT_OPTIONS) -> list[np.ndarray]:
        """Aligned float RGB crops (size x size) -> restored crops, in batches."""
        self.net.spec.check_fidelity(options.fidelity, self.model_name)
        flip = self.flip_ensemble if options.flip_ensemble is None else options.flip_ensemble
        out = []
        for i in range(0, len(crops), self.batch_size):
            x = self._to_tensor(crops[i : i + self.batch_size])
            y = self.net.restore(x, options.fidelity)
            if flip:
                y = (y + self.net.restore(x.flip(-1), options.fidelity).flip(-1)) / 2
            out.extend(to_crops(y))
        return out

    def _to_tensor(self, crops: list[np.ndarray]) -> torch.Tensor:
        """float RGB [0, 1] HWC crops -> (N, 3, H, W) in [-1, 1] on the model's device."""
        return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().to(self.device) * 2 - 1

    # ------------------------------------------------------------------ stages

    def detect(self, photo: Photo, options: RestoreOptions = DEFAULT_OPTIONS) -> list[Face]:
        bgr = photo.bgr8
        scale = 1.0
        if self.det_max_side and max(bgr.shape[:2]) > self.det_max_side:
            scale = self.det_max_side / max(bgr.shape[:2])
            bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        detector = self.detector
        with self._detect_lock:
            faces = detector.detect(bgr)
        for f in faces:
            f.box, f.landmarks = f.box / scale, f.landmarks / scale
        faces = [f for f in faces if f.eye_distance >= options.min_eye_distance]
        return center_face(faces, photo.rgb.shape) if options.only_center_face else faces

    def restore(self, image: Photo | np.ndarray | str | Path, options: RestoreOptions | None = None, **changes) -> RestoreResult:
        """image: a Photo, a path, or an RGB array (uint8, or float in [0, 1]). options: per-call settings;
        keyword arguments change single fields, e.g. `restore(img, fidelity=0.5)`."""
        options = replace(options or DEFAULT_OPTIONS, **changes)
        self.net.spec.check_fidelity(options.fidelity, self.model_name)
        photo = self._as_photo(image)
        if options.aligned:
            return self._restore_aligned(photo, options)
        timings = {}
        t0 = t = time.perf_counter()
        faces = self.detect(photo, options)
        timings["detect"] = time.perf_counter() - t
        t = time.perf_counter()
        affines = [estimate_affine(f.landmarks, self.size) for f in faces]
        crops = [warp_face(photo.rgb, M, self.size) for M in affines]
        timings["align"] = time.perf_counter() - t
        t = time.perf_counter()
        results = [RestoredFace(f.box, f.score, f.landmarks, M, c, None) for f, M, c in zip(faces, affines, crops)]
        self._restore_faces(results, photo, options)
        timings["restore"] = time.perf_counter() - t
        if options.on_drift != "off":
            t = time.perf_counter()
            for face in results:
                self._guard(face, photo, options)
            timings["identity"] = time.perf_counter() - t
        t = time.perf_counter()
        h, w = photo.rgb.shape[:2]
        out_size = (round(w * options.upscale), round(h * options.upscale))
        canvas = self._background(photo.rgb, out_size)
        parser = self.parser
        for face in results:
            if face.action == "kept input":
                continue
            mask = parser.mask(face.restored) if parser is not None else None
            canvas = paste_face(canvas, face.restored, face.affine, options.upscale, mask)
        alpha = None if photo.alpha is None else cv2.resize(photo.alpha, out_size, interpolation=cv2.INTER_LINEAR)
        timings["paste"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0
        out = Photo(np.clip(canvas, 0, 1).astype(np.float32), alpha, photo.gray, photo.bits, photo.notes)
        return RestoreResult(out, results, timings)

    def _restore_faces(self, faces: list[RestoredFace], photo: Photo, options: RestoreOptions):
        """Fill in `restored` for each face: by the network in batches, or by SAIR with a reference."""
        if self.sair is None:
            for face, restored in zip(faces, self.restore_crops([f.crop for f in faces], options)):
                face.restored = restored
        else:
            for face in faces:
                self._restore_with_reference(face, options)
        for face in faces:
            face.restored = self._match_gray(face.restored, photo)

    def _restore_with_reference(self, face: RestoredFace, options: RestoreOptions):
        """SAIR with the reference face most similar to this input face."""
        references, reference_ids = self._reference(options.aligned)
        lq = self._to_tensor([face.crop])
        with torch.no_grad():
            query = self.sair.embed(lq)
            sims = [float((query * r).sum()) for r in reference_ids]
        best = int(np.argmax(sims))
        image, history = self.sair.restore(lq, references[best])
        face.restored = to_crops(image)[0]
        face.reference = {"face": best, "of": len(sims), "similarity": round(sims[best], 4), "seconds": round(history["seconds"], 2)}

    def drift_threshold(self, options: RestoreOptions) -> float:
        return self.guard.threshold if options.drift_threshold is None else options.drift_threshold

    def _check_identity(self, face: RestoredFace, options: RestoreOptions):
        guard = self.guard
        with self._guard_lock:
            face.identity, face.drifted = guard.check(face.crop, face.restored, self.drift_threshold(options))

    def _guard(self, face: RestoredFace, photo: Photo, options: RestoreOptions):
        self._check_identity(face, options)
        if not face.drifted or options.on_drift != "fallback":
            return
        if options.fidelity < 1 and self.sair is None:
            face.restored = self._match_gray(self.restore_crops([face.crop], replace(options, fidelity=1.0))[0], photo)
            self._check_identity(face, options)
            face.action = "fidelity 1"
        if face.drifted:
            face.restored, face.action = face.crop, "kept input"

    def _background(self, rgb: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
        if self.bg_upsampler is not None:
            return self.bg_upsampler(rgb, out_size)
        if out_size == rgb.shape[1::-1]:
            return rgb.copy()  # faces are pasted in place
        return cv2.resize(rgb, out_size, interpolation=cv2.INTER_LANCZOS4)

    def _restore_aligned(self, photo: Photo, options: RestoreOptions) -> RestoreResult:
        t = time.perf_counter()
        h, w = photo.rgb.shape[:2]
        crop = cv2.resize(photo.rgb, (self.size, self.size), interpolation=cv2.INTER_AREA if h > self.size else cv2.INTER_LINEAR)
        M = np.array([[self.size / w, 0, 0], [0, self.size / h, 0]], np.float32)
        face = RestoredFace(np.array([0, 0, w, h], np.float32), 1.0, np.zeros((5, 2), np.float32), M, crop, None)
        self._restore_faces([face], photo, options)
        if options.on_drift != "off":
            self._guard(face, photo, options)
        out_size = (round(w * options.upscale), round(h * options.upscale))
        source = photo.rgb if face.action == "kept input" else face.restored
        rgb = cv2.resize(source, out_size, interpolation=cv2.INTER_LANCZOS4)
        alpha = None if photo.alpha is None else cv2.resize(photo.alpha, out_size)
        timings = {"restore": time.perf_counter() - t}
        timings["total"] = timings["restore"]
        return RestoreResult(Photo(np.clip(rgb, 0, 1), alpha, photo.gray, photo.bits, photo.notes), [face], timings)

    @staticmethod
    def _match_gray(face: np.ndarray, photo: Photo) -> np.ndarray:
        """Greyscale photos stay greyscale: drop any colour the prior adds."""
        if not photo.gray:
            return face
        return np.repeat(cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)

    @staticmethod
    def _as_photo(image) -> Photo:
        if isinstance(image, Photo):
            return image
        if isinstance(image, (str, Path)):
            return load_photo(image)
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        arr = arr[..., :3].astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 1.0)
        return Photo(arr, None, looks_gray(arr))
