"""Axis-line energy of restored faces: how much horizontal and vertical line structure (JPEG block
seams, a generator's grid) they carry beside isotropic detail. Per folder, the luma's power spectrum
above 1/8 cycle per pixel: mean power on the two axes (|fx| or |fy| <= 1 bin) over mean power off
them. Sharp ground-truth faces score about 3; JPEG-blocked inputs 10-40.

python bench/axis_lines.py DIR [DIR ...]     # e.g. the `restored` folders of `faceres evaluate`
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from faceres.data.dataset import list_faces


def axis_line_ratio(gray: np.ndarray) -> float:
    y = gray.astype(np.float64) - gray.mean()
    window = np.outer(np.hanning(y.shape[0]), np.hanning(y.shape[1]))
    power = np.abs(np.fft.fftshift(np.fft.fft2(y * window))) ** 2
    h, w = power.shape
    fy, fx = np.meshgrid(np.arange(h) - h // 2, np.arange(w) - w // 2, indexing="ij")
    fine = np.hypot(fy / h, fx / w) > 1 / 8
    on_axis = (np.abs(fx) <= 1) | (np.abs(fy) <= 1)
    return float(power[fine & on_axis].mean() / power[fine & ~on_axis].mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path)
    for folder in p.parse_args().folders:
        try:
            files = list_faces(folder)
        except FileNotFoundError as e:
            print(e)
            continue
        ratios = [axis_line_ratio(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)) for f in files]
        stats = f"median {np.median(ratios):.2f} mean {np.mean(ratios):.2f} max {max(ratios):.2f}"
        print(f"{folder}: {len(ratios)} faces, axis-line ratio {stats}")


if __name__ == "__main__":
    main()
