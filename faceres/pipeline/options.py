"""Per-call settings of `FaceRestorer.restore`: a frozen dataclass, checked when it is made."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

ON_DRIFT = ("off", "flag", "fallback")
MIN_UPSCALE, MAX_UPSCALE = 0.1, 16  # outside: a blank or an absurd canvas; the output-pixel cap bounds memory within


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _finite_number(name: str, value) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
    require(ok, f"{name} must be a finite number, got {value!r}")


@dataclass(frozen=True)
class RestoreOptions:
    """What to do with one photo.

    upscale: output size factor of the whole photo; faces are pasted at that scale.
    fidelity: 0..1, 1 = closest to the input (as trained). For the StyleGAN2-prior models it scales the
        input features fed into the prior's noise branches (lower: the prior invents more); the model's
        spec says what it means and which values it takes (models without a dial take 1 only).
    aligned: the photo is an aligned face crop (no detection, no paste).
    only_center_face, min_eye_distance (pixels): which detected faces to restore.
    flip_ensemble: average each face with its restored mirror image; None = the model's registry default.
    on_drift: off | flag | fallback: compare the identity of input and restored face; flag faces below
        `drift_threshold` (None: the guard's calibrated default), and with fallback retry at fidelity 1,
        then keep the input face.
    """

    upscale: float = 2
    fidelity: float = 1.0
    only_center_face: bool = False
    aligned: bool = False
    min_eye_distance: float = 5.0
    flip_ensemble: bool | None = None
    on_drift: str = "off"
    drift_threshold: float | None = None

    def __post_init__(self):
        for name in ("upscale", "fidelity", "min_eye_distance"):
            _finite_number(name, getattr(self, name))
        require(self.upscale > 0, f"upscale must be positive, got {self.upscale}")
        require(MIN_UPSCALE <= self.upscale <= MAX_UPSCALE, f"upscale must be in [{MIN_UPSCALE}, {MAX_UPSCALE}], got {self.upscale}")
        require(0 <= self.fidelity <= 1, f"fidelity must be in [0, 1], got {self.fidelity}")
        require(self.min_eye_distance >= 0, f"min_eye_distance must be >= 0, got {self.min_eye_distance}")
        for name in ("only_center_face", "aligned"):
            require(isinstance(getattr(self, name), bool), f"{name} must be True or False, got {getattr(self, name)!r}")
        require(
            self.flip_ensemble is None or isinstance(self.flip_ensemble, bool),
            f"flip_ensemble must be None, True or False, got {self.flip_ensemble!r}",
        )
        require(self.on_drift in ON_DRIFT, f"on_drift must be off, flag or fallback, got {self.on_drift!r}")
        if self.drift_threshold is not None:
            _finite_number("drift_threshold", self.drift_threshold)


DEFAULT_OPTIONS = RestoreOptions()
