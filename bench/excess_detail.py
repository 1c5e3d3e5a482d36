"""Excess detail of restored faces against their ground truth: the local luma band energy the truth
does not have (outlines around nose and mouth, grids on cheeks, block seams), as
`faceres.losses.excess_detail_loss` computes it (x1000). Texture where the truth has texture, and detail
a restoration leaves out, score nothing, so a blurred face scores low: read it beside NIQE.

python bench/excess_detail.py --gt HQ_DIR DIR [DIR ...]    # e.g. the `restored` folders of `faceres evaluate`
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from faceres.data.dataset import list_faces, to_tensor
from faceres.losses import excess_detail_loss


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
            scores = [1000 * float(excess_detail_loss(load(f), load(g))) for f, g in pairs]
        stats = f"median {np.median(scores):.2f} mean {np.mean(scores):.2f} max {max(scores):.2f}"
        print(f"{folder}: {len(scores)} faces, excess detail {stats}")


if __name__ == "__main__":
    main()
