"""Reading photos robustly and writing outputs atomically.

Images travel through the pipeline as float32 RGB in [0, 1] (H, W, 3), with the facts
needed to write them back the way they came: alpha channel, greyscale, 16-bit depth.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
DEFAULT_MAX_PIXELS = 80_000_000


class ImageError(ValueError):
    """An input image cannot be used; the message names the cause."""


@dataclass
class Photo:
    rgb: np.ndarray  # float32 (H, W, 3) in [0, 1]
    alpha: np.ndarray | None = None  # float32 (H, W) in [0, 1]
    gray: bool = False
    bits: int = 8
    notes: tuple[str, ...] = ()

    @property
    def bgr8(self) -> np.ndarray:
        """uint8 BGR view for detectors and OpenCV."""
        return cv2.cvtColor(to_uint8(self.rgb), cv2.COLOR_RGB2BGR)


def to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def looks_gray(rgb: np.ndarray, tol: float = 2 / 255) -> bool:
    """True when an RGB image carries no colour (old scans are often saved as RGB)."""
    small = rgb[:: max(1, rgb.shape[0] // 256), :: max(1, rgb.shape[1] // 256)]
    return float(np.abs(small - small.mean(axis=2, keepdims=True)).mean()) < tol


def load_photo(source: str | os.PathLike | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
    """Decode with EXIF orientation applied. Raises ImageError with a one-line cause."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(f"image too large: {w}x{h} = {w * h / 1e6:.0f} MP (limit {max_pixels / 1e6:.0f} MP)")
            notes = ("animated: first frame only",) if getattr(im, "is_animated", False) else ()
            deep_colour = any(";16" in str(tile.args) for tile in im.tile)  # PIL decodes these to 8 bits
            im.seek(0)
            im = ImageOps.exif_transpose(im)
            im.load()
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except IsADirectoryError:
        raise ImageError("is a directory") from None
    except UnidentifiedImageError:
        size = os.path.getsize(source) if not isinstance(source, bytes) and os.path.exists(source) else len(source or b"")
        raise ImageError("empty file (0 bytes)" if size == 0 else "not an image or unsupported format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"image too large (decompression bomb guard): {err}") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"corrupt or truncated image ({err})") from None
    photo = _to_photo(im, notes)
    if deep_colour and not photo.gray:
        _keep_16_bits(source, photo)
    return photo


def _to_photo(im: Image.Image, notes: tuple[str, ...]) -> Photo:
    alpha = None
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float32) / 65535.0
        return Photo(np.repeat(np.clip(arr, 0, 1)[..., None], 3, axis=2), None, True, 16, notes)
    gray = im.mode in ("1", "L", "LA")
    if "A" in im.getbands() or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        alpha = np.asarray(im.getchannel("A"), dtype=np.float32) / 255.0
    rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    gray = gray or looks_gray(rgb)
    return Photo(rgb, alpha, gray, 8, notes)


def _keep_16_bits(source: str | os.PathLike | bytes, photo: Photo) -> None:
    """Re-decode a 16-bit colour PNG/TIFF with OpenCV, which keeps the 16 bits."""
    data = np.frombuffer(source, np.uint8) if isinstance(source, bytes) else np.fromfile(str(source), dtype=np.uint8)
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[:2] != photo.rgb.shape[:2]:
        return  # rotated by EXIF or unreadable by OpenCV: keep PIL's 8-bit decode
    photo.rgb, photo.bits = np.ascontiguousarray(arr[..., :3][..., ::-1].astype(np.float32) / 65535.0), 16


def encode_image(photo_like: Photo, ext: str) -> bytes:
    """Encode an output the way the input came: grey stays grey, alpha kept where the format
    allows it, 16-bit kept for PNG/TIFF."""
    ext = ext.lower().lstrip(".")
    deep = photo_like.bits == 16 and ext in ("png", "tif", "tiff")
    scale, dtype = (65535.0, np.uint16) if deep else (255.0, np.uint8)
    rgb = np.clip(photo_like.rgb, 0, 1)
    if photo_like.gray:
        img = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    else:
        img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if photo_like.alpha is not None and ext in ("png", "webp", "tif", "tiff"):
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        img = np.dstack([img, photo_like.alpha])
    img = (img * scale + 0.5).astype(dtype)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext in ("jpg", "jpeg") else []
    ok, buf = cv2.imencode(f".{ext}", img, params)
    if not ok:
        raise ImageError(f"cannot encode as .{ext}")
    return buf.tobytes()


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file in the target folder, then rename: a kill never leaves a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def list_images(inputs: list[str], recursive: bool = False) -> list[tuple[Path, Path]]:
    """(file, path relative to its input root) for files, folders and globs, sorted and unique."""
    import glob

    found: dict[Path, Path] = {}
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            pattern = "**/*" if recursive else "*"
            for f in sorted(p.glob(pattern)):
                if f.is_file() and f.suffix.lower() in IMAGE_EXTS and not f.name.startswith("."):
                    found.setdefault(f.resolve(), f.relative_to(p))
        elif p.exists():
            found.setdefault(p.resolve(), Path(p.name))
        else:
            matches = sorted(glob.glob(item, recursive=recursive))
            if not matches:
                found.setdefault(p, Path(p.name))  # reported as "file not found" later
            for m in matches:
                if Path(m).is_file():
                    found.setdefault(Path(m).resolve(), Path(Path(m).name))
    return sorted(found.items(), key=lambda kv: str(kv[1]))
