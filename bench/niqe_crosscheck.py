"""Cross-check faceres's NIQE against pyiqa's independent PyTorch implementation, with the same
pristine parameters (shared/weights/niqe_pris_params.npz) and the same Y channel (BT.601).

pyiqa's package pulls in dozens of heavy dependencies and downloads weights at import, so this
script fetches its wheel without dependencies and loads only the NIQE module, with the
download helper stubbed out (nothing is downloaded at run time).

    python bench/niqe_crosscheck.py [--images 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import torch

from faceres.metrics.niqe import niqe

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FACERES_SHARED", ROOT.parent / "shared"))
NEEDED = (
    "pyiqa/archs/niqe_arch.py",
    "pyiqa/archs/func_util.py",
    "pyiqa/archs/fsim_arch.py",
    "pyiqa/archs/arch_util.py",
    "pyiqa/archs/constants.py",
    "pyiqa/utils/",
    "pyiqa/matlab_utils/",
)


def load_pyiqa_niqe(workdir: Path):
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(workdir), "pyiqa==0.1.16"], check=True)
    wheel = next(workdir.glob("pyiqa-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        z.extractall(workdir, [n for n in z.namelist() if n.startswith(NEEDED)])
    for pkg in ("pyiqa", "pyiqa/utils", "pyiqa/archs"):
        (workdir / pkg / "__init__.py").write_text("")
    (workdir / "pyiqa/utils/download_util.py").write_text("def load_file_from_url(*a, **k):\n    raise RuntimeError('offline')\n")
    sys.path.insert(0, str(workdir))
    from pyiqa.archs.niqe_arch import calculate_niqe

    return calculate_niqe


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=5)
    args = ap.parse_args()
    params_path = SHARED / "weights/niqe_pris_params.npz"
    params = np.load(params_path)
    mu, cov = torch.from_numpy(params["mu_pris_param"]), torch.from_numpy(params["cov_pris_param"])
    files = sorted((SHARED / "data/celebahq-512/images").iterdir())[: args.images] + sorted((SHARED / "data/real-lq/cropped").iterdir())[:2]
    with tempfile.TemporaryDirectory() as tmp:
        calculate_niqe = load_pyiqa_niqe(Path(tmp))
        rows = []
        for f in files:
            rgb = cv2.imread(str(f))[..., ::-1].astype(np.float32) / 255
            ours = niqe(rgb, params_path)
            t = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].double()
            theirs = float(calculate_niqe(t, 0, True, "ycbcr", mu_pris_param=mu, cov_pris_param=cov))
            rows.append({"image": f"{f.parent.name}/{f.name}", "faceres": ours, "pyiqa": theirs, "diff": ours - theirs})
            print(f"{f.parent.name}/{f.name}: faceres {ours:.4f}  pyiqa {theirs:.4f}  diff {ours - theirs:+.4f}")
    print(f"max |diff| = {max(abs(r['diff']) for r in rows):.4f}")
    out = ROOT / "bench/results/niqe_crosscheck.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
