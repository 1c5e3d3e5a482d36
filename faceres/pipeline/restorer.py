"""FaceRestorer: detect -> align -> restore -> paste, the one pipeline the CLI and the app share."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from ..devices import pick_device
from ..weights import DEFAULT_RESTORER, WeightsError, inference_defaults, resolve
from ..checkpoints import load_model
from .align import estimate_affine, warp_face
from .background import FaceParser, RealESRGANUpsampler
from .detect import Face, build_detector
from .images import Photo, load_photo, looks_gray
from .paste import paste_face
from .reference import DEFAULT_DRIFT_THRESHOLD, SAIR, IdentityGuard, SAIRConfig


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
    """Restore every face in a photo.

    model: registry name, checkpoint path (.safetensors, or a GPEN .pth) or an nn.Module with `.size`.
    fidelity: 0..1, scales the input-derived features the network feeds into the StyleGAN2
        prior's noise branches. 1 (default) = as trained, closest to the input; lower values let
        the prior invent more (smoother, more generic faces). It changes the network's computation,
        not a pixel blend.
    upscale: output size factor for the whole photo; faces are pasted at that scale.
    bg_upsampler: None | "realesrgan" (Real-ESRGAN x2 over tiles) for the rest of the photo.
    parse: "auto" | "on" | "off": multiply the paste mask by a face-parsing mask (ParseNet).
    on_drift: "off" | "flag" | "fallback": compare identity of input and restored face (ArcFace when a
        recognizer is given, dlib otherwise); flag faces below the threshold, and with "fallback"
        retry at fidelity 1, then keep the input face.
    reference: a photo of the same person: faces are restored by SAIR (latent optimisation of the
        prior toward the reference's identity) with `recognizer` (default: dlib's face ResNet).
    """

    def __init__(self, model: str | Path | nn.Module = DEFAULT_RESTORER, detector: str = "auto", device: str = "auto",
                 upscale: float = 2, fidelity: float = 1.0, only_center_face: bool = False, aligned: bool = False,
                 min_eye_distance: float = 5.0, batch_size: int = 4, det_max_side: int | None = 2048,
                 bg_upsampler: str | None = None, parse: str = "auto", on_drift: str = "off",
                 drift_threshold: float | None = None, reference=None, recognizer: nn.Module | None = None,
                 sair: SAIRConfig | None = None, flip_ensemble: bool | None = None):
        if not 0.0 <= fidelity <= 1.0:
            raise ValueError(f"fidelity must be in [0, 1], got {fidelity}")
        if upscale <= 0:
            raise ValueError(f"upscale must be positive, got {upscale}")
        self.device = pick_device(device)
        if isinstance(model, nn.Module):
            self.net, self.model_config = model, {"arch": type(model).__name__}
        else:
            self.net, self.model_config = load_model(model)
        self.net = self.net.to(self.device).eval()
        self.net.spec.check_fidelity(fidelity, type(self.net).__name__)
        self.size = int(self.net.size)
        self.upscale, self.fidelity = upscale, fidelity
        # average with the restored mirror image (self-ensemble); None: the model's registry default
        self.flip_ensemble = inference_defaults(model).get("flip_ensemble", False) if flip_ensemble is None else flip_ensemble
        self.only_center_face, self.aligned = only_center_face, aligned
        self.min_eye_distance, self.batch_size, self.det_max_side = min_eye_distance, batch_size, det_max_side
        self.detector = None if aligned else build_detector(detector, str(self.device))
        self.bg_upsampler = RealESRGANUpsampler(device=self.device) if bg_upsampler == "realesrgan" else None
        if bg_upsampler not in (None, "none", "realesrgan"):
            raise ValueError(f"unknown background upsampler {bg_upsampler!r}; choose none or realesrgan")
        self.parser = self._build_parser(parse)
        if on_drift not in ("off", "flag", "fallback"):
            raise ValueError(f"on_drift must be off, flag or fallback, got {on_drift!r}")
        self.on_drift = on_drift
        self.guard = None
        if on_drift != "off":
            self.guard = IdentityGuard(drift_threshold or DEFAULT_DRIFT_THRESHOLD, recognizer)
        self.sair = self.reference_faces = None
        if reference is not None:
            self._setup_reference(reference, recognizer, sair)

    def _setup_reference(self, reference, recognizer, cfg):
        if recognizer is None:
            from .reference import default_recognizer

            recognizer = default_recognizer()  # dlib's face ResNet (offline); pass build_arcface(...) for ArcFace
        self.sair = SAIR(self.net, recognizer.to(self.device), cfg)
        photo = self._as_photo(reference)
        if self.aligned:
            crops = [cv2.resize(photo.rgb, (self.size, self.size), interpolation=cv2.INTER_AREA)]
        else:
            faces = self.detect(photo)
            if not faces:
                raise ValueError("no face found in the reference photo")
            crops = [warp_face(photo.rgb, estimate_affine(f.landmarks, self.size), self.size) for f in faces]
        self.reference_faces = [self._to_tensor([c]) for c in crops]
        with torch.no_grad():
            self.reference_ids = [self.sair.embed(t) for t in self.reference_faces]

    def _build_parser(self, parse: str) -> FaceParser | None:
        """on: required; auto: used when its weights are already on disk; off: square feather only."""
        if parse == "off" or self.aligned:
            return None
        if parse == "auto":
            try:
                resolve("parsenet", allow_download=False)
            except WeightsError:
                return None
        elif parse != "on":
            raise ValueError(f"parse must be auto, on or off, got {parse!r}")
        return FaceParser(device=self.device)

    @property
    def detector_name(self) -> str:
        return "none (aligned input)" if self.detector is None else self.detector.name

    # ------------------------------------------------------------------ network

    @torch.no_grad()
    def restore_crops(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """Aligned float RGB crops (size x size) -> restored crops, in batches."""
        out = []
        for i in range(0, len(crops), self.batch_size):
            x = self._to_tensor(crops[i:i + self.batch_size])
            y = self._forward(x)
            if self.flip_ensemble:
                y = (y + self._forward(x.flip(-1)).flip(-1)) / 2
            out.extend(to_crops(y))
        return out

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.restore(x, fidelity=self.fidelity)

    # ------------------------------------------------------------------ stages

    def detect(self, photo: Photo) -> list[Face]:
        bgr = photo.bgr8
        scale = 1.0
        if self.det_max_side and max(bgr.shape[:2]) > self.det_max_side:
            scale = self.det_max_side / max(bgr.shape[:2])
            bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        faces = self.detector.detect(bgr)
        for f in faces:
            f.box, f.landmarks = f.box / scale, f.landmarks / scale
        faces = [f for f in faces if f.eye_distance >= self.min_eye_distance]
        return center_face(faces, photo.rgb.shape) if self.only_center_face else faces

    def restore(self, image: Photo | np.ndarray | str | Path) -> RestoreResult:
        """image: a Photo, a path, or an RGB array (uint8, or float in [0, 1])."""
        photo = self._as_photo(image)
        timings = {}
        if self.aligned:
            return self._restore_aligned(photo, timings)
        t = time.perf_counter()
        faces = self.detect(photo)
        timings["detect"] = time.perf_counter() - (t0 := t)
        t = time.perf_counter()
        affines = [estimate_affine(f.landmarks, self.size) for f in faces]
        crops = [warp_face(photo.rgb, M, self.size) for M in affines]
        timings["align"] = time.perf_counter() - t
        t = time.perf_counter()
        results = [RestoredFace(f.box, f.score, f.landmarks, M, c, None) for f, M, c in zip(faces, affines, crops)]
        self._restore_faces(results, photo)
        timings["restore"] = time.perf_counter() - t
        if self.guard is not None:
            t = time.perf_counter()
            for face in results:
                self._guard(face)
            timings["identity"] = time.perf_counter() - t
        t = time.perf_counter()
        h, w = photo.rgb.shape[:2]
        out_size = (round(w * self.upscale), round(h * self.upscale))
        canvas = self._background(photo.rgb, out_size)
        for face in results:
            if face.action == "kept input":
                continue
            mask = self.parser.mask(face.restored) if self.parser is not None else None
            canvas = paste_face(canvas, face.restored, face.affine, self.upscale, mask)
        alpha = None if photo.alpha is None else cv2.resize(photo.alpha, out_size, interpolation=cv2.INTER_LINEAR)
        timings["paste"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0
        out = Photo(np.clip(canvas, 0, 1).astype(np.float32), alpha, photo.gray, photo.bits, photo.notes)
        return RestoreResult(out, results, timings)

    def _restore_faces(self, faces: list[RestoredFace], photo: Photo):
        """Fill in `restored` for each face: by the network in batches, or by SAIR with a reference."""
        if self.sair is None:
            for face, restored in zip(faces, self.restore_crops([f.crop for f in faces])):
                face.restored = restored
        else:
            for face in faces:
                self._restore_with_reference(face)
        for face in faces:
            face.restored = self._match_gray(face.restored, photo)

    def _to_tensor(self, crops: list[np.ndarray]) -> torch.Tensor:
        """float RGB [0, 1] HWC crops -> (N, 3, H, W) in [-1, 1] on the model's device."""
        return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().to(self.device) * 2 - 1

    def _restore_with_reference(self, face: RestoredFace):
        """SAIR with the reference face most similar to this input face."""
        lq = self._to_tensor([face.crop])
        with torch.no_grad():
            query = self.sair.embed(lq)
            sims = [float((query * r).sum()) for r in self.reference_ids]
        best = int(np.argmax(sims))
        image, history = self.sair.restore(lq, self.reference_faces[best])
        face.restored = to_crops(image)[0]
        face.reference = {"face": best, "of": len(sims), "similarity": round(sims[best], 4), "seconds": round(history["seconds"], 2)}

    def _guard(self, face: RestoredFace):
        face.identity, face.drifted = self.guard.check(face.crop, face.restored)
        if not face.drifted or self.on_drift != "fallback":
            return
        if self.fidelity < 1 and self.sair is None:
            fidelity, self.fidelity = self.fidelity, 1.0
            try:
                face.restored = self.restore_crops([face.crop])[0]
            finally:
                self.fidelity = fidelity
            face.identity, face.drifted = self.guard.check(face.crop, face.restored)
            face.action = "fidelity 1"
        if face.drifted:
            face.restored, face.action = face.crop, "kept input"

    def _background(self, rgb: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
        if self.bg_upsampler is not None:
            return self.bg_upsampler(rgb, out_size)
        if out_size == rgb.shape[1::-1]:
            return rgb.copy()  # faces are pasted in place
        return cv2.resize(rgb, out_size, interpolation=cv2.INTER_LANCZOS4)

    def _restore_aligned(self, photo: Photo, timings: dict) -> RestoreResult:
        t = time.perf_counter()
        h, w = photo.rgb.shape[:2]
        crop = cv2.resize(photo.rgb, (self.size, self.size), interpolation=cv2.INTER_AREA if h > self.size else cv2.INTER_LINEAR)
        M = np.array([[self.size / w, 0, 0], [0, self.size / h, 0]], np.float32)
        face = RestoredFace(np.array([0, 0, w, h], np.float32), 1.0, np.zeros((5, 2), np.float32), M, crop, None)
        self._restore_faces([face], photo)
        if self.guard is not None:
            self._guard(face)
        out_size = (round(w * self.upscale), round(h * self.upscale))
        source = photo.rgb if face.action == "kept input" else face.restored
        rgb = cv2.resize(source, out_size, interpolation=cv2.INTER_LANCZOS4)
        alpha = None if photo.alpha is None else cv2.resize(photo.alpha, out_size)
        timings["restore"] = timings["total"] = time.perf_counter() - t
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
