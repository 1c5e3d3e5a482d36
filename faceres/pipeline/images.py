"""Reading photos robustly and writing outputs atomically.

Images travel through the pipeline as float32 RGB in [0, 1] (H, W, 3), with the facts
needed to write them back the way they came: alpha channel, greyscale, 16-bit depth.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

JPEG_EXTS = (".jpg", ".jpeg", ".jpe", ".jfif")
IMAGE_EXTS = {*JPEG_EXTS, ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
# what PIL may decode, and the extensions that claim it; other content (EPS, PDF, PSD...) is refused before decoding
FORMAT_EXTS = {
    "JPEG": JPEG_EXTS,
    "MPO": JPEG_EXTS,
    "PNG": (".png",),
    "BMP": (".bmp",),
    "DIB": (".bmp",),
    "TIFF": (".tif", ".tiff"),
    "WEBP": (".webp",),
    "GIF": (".gif",),
}
MAX_OUTPUT_SIDE = {"webp": 16383, "jpg": 65500, "gif": 65535, "bmp": 2**31 - 1, "png": 2**31 - 1, "tif": 2**32 - 1}
DEFAULT_MAX_PIXELS = 80_000_000
# EXIF orientation -> the numpy transform PIL's exif_transpose applies (for arrays decoded by OpenCV)
ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


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


def _check_size(w: int, h: int, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise ImageError(f"image too large: {w}x{h} = {w * h / 1e6:.0f} MP (limit {max_pixels / 1e6:.0f} MP)")


def _check_format(im: Image.Image, source: str | os.PathLike | bytes) -> tuple[str, ...]:
    """Refuse content outside the photo formats (checked before decoding); note a misleading extension."""
    ext = "" if isinstance(source, bytes) else Path(source).suffix.lower()
    if im.format not in FORMAT_EXTS:
        raise ImageError(f"content is {im.format}, not a supported photo format" + (f" (the name says {ext})" if ext else ""))
    if ext in IMAGE_EXTS and ext not in FORMAT_EXTS[im.format]:
        return (f"content is {im.format} although the name says {ext}",)
    return ()


def load_photo(source: str | os.PathLike | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
    """Decode with EXIF orientation applied. Raises ImageError with a one-line cause."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
            notes = _check_format(im, source)
            _check_size(*im.size, max_pixels)
            notes += ("animated: first frame only",) if getattr(im, "is_animated", False) else ()
            deep_colour = any(";16" in str(tile.args) for tile in im.tile)  # PIL decodes these to 8 bits
            orientation = im.getexif().get(0x0112, 1)
            im.seek(0)
            im = ImageOps.exif_transpose(im)
            im.load()
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except IsADirectoryError:
        raise ImageError("is a directory") from None
    except PermissionError:
        raise ImageError("permission denied (the file is not readable)") from None
    except UnidentifiedImageError:
        return _decode_unidentified(source, max_pixels)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"image too large (decompression bomb guard): {err}") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"corrupt or truncated image ({err})") from None
    photo = _to_photo(im, notes)
    if deep_colour and not photo.gray:
        _keep_16_bits(source, photo, orientation)
    return photo


def _read_bytes(source: str | os.PathLike | bytes) -> bytes:
    return source if isinstance(source, bytes) else Path(source).read_bytes()


def _decode_unidentified(source: str | os.PathLike | bytes, max_pixels: int) -> Photo:
    """What PIL cannot identify: an empty file, a TIFF that OpenCV reads (float32 RGB), or not an image."""
    if isinstance(source, bytes):
        head = source[:4]
    else:
        with open(source, "rb") as f:  # only the magic: the file may be a huge non-image
            head = f.read(4)
    if not head:
        raise ImageError("empty file (0 bytes)")
    if head not in (b"II*\0", b"MM\0*"):
        raise ImageError("not an image or unsupported format")
    data = _read_bytes(source)
    _check_size(*_tiff_size(data), max_pixels)
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if arr is None:
        raise ImageError("TIFF that neither PIL nor OpenCV can decode")
    rgb = arr if arr.ndim == 2 else arr[..., :3][..., ::-1]
    photo = _from_array(rgb)
    photo.gray = photo.gray or looks_gray(photo.rgb)
    return photo


def _tiff_size(data: bytes) -> tuple[int, int]:
    """Width and height from a TIFF's first IFD, read before OpenCV allocates anything."""
    from PIL.TiffImagePlugin import ImageFileDirectory_v2

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns about the corrupt IFDs it skips
            ifd = ImageFileDirectory_v2(ifh=data[:8])
            f = io.BytesIO(data)
            f.seek(ifd.next)
            ifd.load(f)
        return int(ifd[256]), int(ifd[257])
    except KeyError:
        raise ImageError("corrupt TIFF header (no image width or height)") from None
    except (OSError, SyntaxError, ValueError, struct.error) as err:
        raise ImageError(f"corrupt TIFF header ({err})") from None


def _from_array(arr: np.ndarray) -> Photo:
    """float32 RGB (or grey) Photo from an integer or float array: floats already in 0..1 stay as they are,
    larger floats are taken as 0..255 or 0..65535; integers by their bit depth."""
    if arr.dtype.kind == "f":
        finite = arr[np.isfinite(arr)]
        peak = float(finite.max()) if finite.size else 0.0
        scale, bits = (1.0 if peak <= 1.0 else 255.0 if peak <= 255.0 else 65535.0), 16
    elif arr.dtype in (np.uint8, np.uint16):
        scale, bits = float(np.iinfo(arr.dtype).max), 8 * arr.dtype.itemsize
    else:
        raise ImageError(f"unsupported sample type {arr.dtype}")
    x = np.nan_to_num(np.clip(arr.astype(np.float32) / scale, 0, 1))
    gray = x.ndim == 2
    return Photo(np.repeat(x[..., None], 3, axis=2) if gray else np.ascontiguousarray(x[..., :3]), None, gray, bits)


def _to_photo(im: Image.Image, notes: tuple[str, ...]) -> Photo:
    alpha = None
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float32) / 65535.0
        return Photo(np.repeat(np.clip(arr, 0, 1)[..., None], 3, axis=2), None, True, 16, notes)
    if im.mode == "F":  # float TIFF: mostly 0..1, which PIL's convert would clip to black and white
        photo = _from_array(np.asarray(im, dtype=np.float32))
        photo.notes = notes
        return photo
    gray = im.mode in ("1", "L", "LA")
    if im.mode != "LAB" and "A" in im.getbands() or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        alpha = np.asarray(im.getchannel("A"), dtype=np.float32) / 255.0
    rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    gray = gray or looks_gray(rgb)
    return Photo(rgb, alpha, gray, 8, notes)


def _keep_16_bits(source: str | os.PathLike | bytes, photo: Photo, orientation: int = 1) -> None:
    """Re-decode a 16-bit colour PNG/TIFF with OpenCV, which keeps the 16 bits (and ignores EXIF
    orientation: the same transform as PIL's is applied here)."""
    arr = cv2.imdecode(np.frombuffer(_read_bytes(source), np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3:
        return  # unreadable by OpenCV: keep PIL's 8-bit decode
    arr = ORIENT.get(orientation, lambda a: a)(arr)
    if arr.shape[:2] != photo.rgb.shape[:2]:
        return
    photo.rgb, photo.bits = np.ascontiguousarray(arr[..., :3][..., ::-1].astype(np.float32) / 65535.0), 16


def _codec_ext(ext: str) -> str:
    ext = ext.lower().lstrip(".")
    return {"jpeg": "jpg", "jpe": "jpg", "jfif": "jpg", "tiff": "tif"}.get(ext, ext)


def check_output_size(shape: tuple[int, ...], ext: str) -> None:
    """Raise ImageError, before any work, when an output of shape (H, W, ...) exceeds what the format can hold."""
    h, w = shape[:2]
    limit = MAX_OUTPUT_SIDE.get(_codec_ext(ext))
    if limit is not None and max(h, w) > limit:
        raise ImageError(
            f"output {w}x{h} px is too large for .{ext.lower().lstrip('.')} (at most {limit} px a side); "
            "choose another output format or a smaller upscale"
        )


def encode_image(photo_like: Photo, ext: str) -> bytes:
    """Encode an output the way the input came: grey stays grey, alpha kept where the format
    allows it, 16-bit kept for PNG/TIFF."""
    check_output_size(photo_like.rgb.shape, ext)
    ext = _codec_ext(ext)
    deep = photo_like.bits == 16 and ext in ("png", "tif")
    scale, dtype = (65535.0, np.uint16) if deep else (255.0, np.uint8)
    img = cv2.cvtColor(photo_like.rgb, cv2.COLOR_RGB2GRAY) if photo_like.gray else photo_like.rgb
    if photo_like.alpha is not None and ext in ("png", "webp", "tif"):
        img = np.dstack([img if img.ndim == 3 else img[..., None].repeat(3, 2), photo_like.alpha])
    img = _quantize(img, scale, dtype)
    if not photo_like.gray:  # swapped after quantising: a quarter of the float image's bytes
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR if img.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == "jpg" else []
    ok, buf = cv2.imencode(f".{ext}", img, params)
    if not ok:
        raise ImageError(f"cannot encode as .{ext}")
    return buf.tobytes()


def _quantize(img: np.ndarray, scale: float, dtype) -> np.ndarray:
    """round(clip(img, 0, 1) * scale) in two passes over the float image."""
    out = img * np.float32(scale)
    np.clip(out, 0, scale, out=out)
    out += 0.5
    return out.astype(dtype)


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
