"""Excess detail of restored faces against their ground truth: the local luma band energy the truth
does not have (outlines around nose and mouth, grids on cheeks, block seams), as
`faceres.losses.excess_detail_loss` computes it (x1000). Texture where the truth has texture, and detail
a restoration leaves out, score nothing, so a blurred face scores low: read it beside NIQE. The mean per
band (finest first: about 2-4, 4-8 and 8-16 px periods) says where the excess sits.

python bench/excess_detail.py --gt HQ_DIR DIR [DIR ...]    # e.g. the `restored` folders of `faceres evaluate`
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from faceres.data.dataset import list_faces, to_tensor
from faceres.losses import excess_detail


def load(path: Path) -> torch.Tensor:
    return to_tensor(np.asarray(Image.open(path).convert("RGB"), np.float32) / 255)[None]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gt", type=Path, required=True, help="folder of ground-truth faces with the same file names")
    p.add_argument("folders", nargs="+", type=Path)
    args = p.parse_args()
    for folder in args.folders:
        pairs = [(f, args.gt / f.name) for f in list_faces(folder)]
        missing = [g.name for _, g in pairs if not g.is_file()]
        if missing:
            print(f"{folder}: no ground truth for {len(missing)} faces, e.g. {missing[0]}")
            continue
        with torch.no_grad():
            bands = np.array([1000 * excess_detail(load(f), load(g)).numpy() for f, g in pairs])  # (faces, bands)
        scores = bands.mean(1)
        stats = f"median {np.median(scores):.2f} mean {scores.mean():.2f} max {scores.max():.2f}"
        per_band = " / ".join(f"{b:.2f}" for b in bands.mean(0))
        print(f"{folder}: {len(scores)} faces, excess detail {stats}; mean by band, finest first {per_band}")


if __name__ == "__main__":
    main()
