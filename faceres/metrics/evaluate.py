"""`faceres evaluate`: score restored faces against ground truth (and the degraded input), or
without ground truth (no-reference metrics only), writing a Markdown table, a CSV and a JSON of
per-image values and means. FID is a set metric: one value per folder, with its sample counts."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from .fid import FIDStats, frechet_distance, small_sample_note, statistics
from .fullref import psnr, ssim
from .identity import cosine, face_u8, landmark_distance
from .niqe import niqe

HIGHER_IS_BETTER = {
    "psnr": True,
    "ssim": True,
    "lpips": False,
    "fid": False,
    "niqe": False,
    "ifqa": True,
    "identity (dlib)": True,
    "lmd": False,
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_rgb(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{path}: cannot decode image")
    img = img[..., ::-1].astype(np.float32) / 255.0
    if size is not None and img.shape[1::-1] != size:
        img = cv2.resize(img, size, interpolation=cv2.INTER_CUBIC)
    return np.clip(img, 0, 1)


def _check_folder(folder: Path, label: str = "") -> None:
    label = f"{label} " if label else ""
    if folder.is_file():
        raise FileNotFoundError(f"{label}{folder}: is a file, not a folder of images")  # caught with the other folder errors
    if not folder.is_dir():
        raise FileNotFoundError(f"{label}{folder}: no such folder")


def image_files(folder: Path, label: str = "") -> list[Path]:
    """The folder's images, sorted; an error naming the folder when it is missing, a file or holds none."""
    _check_folder(folder, label)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{label + ' ' if label else ''}{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def check_inputs(restored: Path | None, lq: Path | None, gt: Path | None) -> None:
    """Before any model or metric loads: every given folder exists and holds images."""
    for label, folder in (("--restored", restored), ("--lq", lq), ("--gt", gt)):
        if folder is not None:
            image_files(folder, label)


def folder_stats(folder: Path, inception, progress: bool = True) -> FIDStats:
    """FID statistics (mu, sigma, n) of every image in a folder, at its own size."""
    from tqdm import tqdm

    files = image_files(folder)
    feats = [inception([read_rgb(f)]) for f in tqdm(files, disable=not progress, desc=f"FID features {folder.name}")]
    return statistics(np.concatenate(feats) if feats else np.zeros((0, 2048)))


def pair_files(restored: Path, gt: Path | None) -> list[tuple[Path, Path | None]]:
    files = image_files(restored)
    if gt is None:
        return [(p, None) for p in files]
    _check_folder(gt, "--gt")
    by_stem = {p.stem: p for p in gt.iterdir()}
    pairs = [(p, by_stem.get(p.stem)) for p in files]
    missing = [p.name for p, g in pairs if g is None]
    if missing:
        raise FileNotFoundError(f"no ground truth in {gt} for {len(missing)} image(s), e.g. {missing[0]}")
    return pairs


def _score_image(r: np.ndarray, g: np.ndarray | None, suite, rpath: Path) -> dict:
    row = {"image": rpath.name}
    if g is not None:
        row["psnr"], row["ssim"] = psnr(r, g), ssim(r, g)
        if suite.lpips is not None:
            row["lpips"] = suite.lpips(r, g)
    if suite.niqe_params is not None:
        try:
            row["niqe"] = niqe(r, suite.niqe_params)
        except ValueError as err:
            print(f"{rpath}: NIQE left out: {err}", file=sys.stderr)
    if suite.ifqa is not None:
        row["ifqa"] = suite.ifqa(r)
    if suite.faces is not None and g is not None:
        ru, gu = face_u8(r), face_u8(g)
        row["identity (dlib)"] = cosine(suite.faces.embedding(ru), suite.faces.embedding(gu))
        row["lmd"] = landmark_distance(suite.faces, ru, gu)
    return row


def score_folder(restored: Path, gt: Path | None, suite, progress=True) -> tuple[list[dict], dict[str, float]]:
    """Per-image metrics (restored images are resized to the GT size first) and set metrics (FID, with n)."""
    from tqdm import tqdm

    rows, feats = [], []
    for rpath, gpath in tqdm(pair_files(restored, gt), disable=not progress, desc=restored.name):
        g = read_rgb(gpath) if gpath else None
        r = read_rgb(rpath, g.shape[1::-1] if g is not None else None)
        rows.append(_score_image(r, g, suite, rpath))
        if suite.fid_ref is not None:
            feats.append(suite.inception([r]))
    totals = {}
    if suite.fid_ref is not None and len(feats) >= 2:
        totals = {"fid": frechet_distance(statistics(np.concatenate(feats)), suite.fid_ref), "fid n": len(feats)}
    return rows, totals


def summarize(results: dict[str, list[dict]], totals: dict[str, dict] | None = None) -> dict[str, dict[str, float]]:
    """Mean of each per-image metric, plus each folder's set metrics (FID)."""
    out = {}
    for name, rows in results.items():
        keys = dict.fromkeys(k for r in rows for k in r if k != "image")
        out[name] = {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}
        out[name].update((totals or {}).get(name, {}))
    return out


def _column_order(key: str) -> int:
    order = list(HIGHER_IS_BETTER)
    return order.index(key) if key in order else len(order)


def markdown_table(means: dict[str, dict[str, float]]) -> str:
    keys = sorted(dict.fromkeys(k for vals in means.values() for k in vals if k != "fid n"), key=_column_order)
    arrows = [("↑" if HIGHER_IS_BETTER.get(k, True) else "↓") for k in keys]
    lines = ["| | " + " | ".join(f"{k} {a}" for k, a in zip(keys, arrows)) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, vals in means.items():
        lines.append(f"| {name} | " + " | ".join(f"{vals[k]:.4f}" if k in vals else "n/a" for k in keys) + " |")
    return "\n".join(lines)


DEFINITIONS = (
    "PSNR: RGB, 0-255, no border crop. SSIM: Y (BT.601), 11x11 Gaussian window. LPIPS: v0.1, lpips package "
    "heads on torchvision's ImageNet trunk. FID: pytorch-fid Inception (pool3, 2048-d). NIQE: Y, BasicSR pristine "
    "parameters. IFQA: CNN metric, mean of the 256x256 realness map. identity (dlib): cosine of dlib 128-d "
    "descriptors (not ArcFace). LMD: dlib 68-point distance at 512 px."
)


PSNR_BANDS = ((0, 22), (22, 25), (25, 27), (27, 99))  # input PSNR, dB


def band_table(results: dict[str, list[dict]], baseline: str = "input") -> str:
    """PSNR gain over the input per input-quality band: does any band lose? Empty without input PSNR."""
    if baseline not in results or not all("psnr" in r for r in results[baseline]):
        return ""
    base = {r["image"]: r["psnr"] for r in results[baseline]}
    lines = ["| method | input PSNR band | faces | input PSNR | gain (dB) | faces better |", "|---|---|---|---|---|---|"]
    for name, rows in results.items():
        pairs = [(base[r["image"]], r["psnr"]) for r in rows if name != baseline and r["image"] in base and "psnr" in r]
        for lo, hi in PSNR_BANDS:
            band = [(b, o) for b, o in pairs if lo <= b < hi]
            if band:
                gains = [o - b for b, o in band]
                label = f"< {hi}" if lo == 0 else f">= {lo}" if hi == 99 else f"{lo}-{hi}"
                lines.append(
                    f"| {name} | {label} | {len(band)} | {np.mean([b for b, _ in band]):.2f} | {np.mean(gains):+.3f} | "
                    f"{sum(g > 0 for g in gains)} |"
                )
    return "\n".join(lines) if len(lines) > 2 else ""


def report_text(means: dict[str, dict[str, float]], ran: list[str], notes: list[str], bands: str = "") -> str:
    counts = [
        small_sample_note(int(vals["fid n"]), f"of {name}") or f"FID of {name}: {vals['fid n']:.0f} images"
        for name, vals in means.items()
        if "fid n" in vals
    ]
    lines = [markdown_table(means), "", f"Metrics that ran: {', '.join(ran) or 'none'}."] + counts + notes
    lines += ["", "Gain by input quality:", "", bands] if bands else []
    lines += ["", DEFINITIONS]
    return "\n".join(lines) + "\n"


def write_reports(
    results: dict[str, list[dict]], out_dir: Path, totals: dict[str, dict] | None = None, ran: list[str] = (), notes: list[str] = ()
) -> dict[str, dict[str, float]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    means = summarize(results, totals)
    (out_dir / "metrics.md").write_text(report_text(means, list(ran), list(notes), band_table(results)))
    with open(out_dir / "metrics.csv", "w", newline="") as f:
        keys = sorted({k for rows in results.values() for r in rows for k in r if k != "image"})
        writer = csv.writer(f)
        writer.writerow(["method", "image", *keys])
        for name, rows in results.items():
            for r in rows:
                writer.writerow([name, r["image"], *[r.get(k, "") for k in keys]])
    report = {"mean": means, "per_image": results, "ran": list(ran), "notes": list(notes)}
    (out_dir / "metrics.json").write_text(json.dumps(finite_or_null(report), indent=1, allow_nan=False))
    return means


def finite_or_null(obj):
    """NaN and +-Infinity (PSNR of identical images, a failed metric) become null: JSON has no such numbers."""
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    return obj


def plot(results: dict[str, list[dict]], restored_dir: Path, lq: Path | None, gt: Path | None, out_dir: Path, key: str = "psnr"):
    """Metric distributions, and a contact sheet LQ | restored | GT for the worst and best images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(dict.fromkeys(k for rows in results.values() for r in rows for k in r if k != "image"))
    if keys:
        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3))
        for ax, k in zip(np.atleast_1d(axes), keys):
            ax.hist([[r[k] for r in rows if k in r and np.isfinite(r[k])] for rows in results.values()], bins=20, label=list(results))
            ax.set_title(k)
        np.atleast_1d(axes)[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "distributions.png", dpi=100)
        plt.close(fig)
    else:
        print("faceres: --plot: no per-image metric ran, so no distributions.png", file=sys.stderr)
    model_rows = [rows for name, rows in results.items() if name != "input"]
    if not (lq and gt):
        print(
            "faceres: --plot: the worst/best contact sheet (input | restored | GT) needs --lq and --gt; "
            "only the metric distributions were drawn",
            file=sys.stderr,
        )
        return
    if not (model_rows and key in model_rows[0][0]):
        return
    rows = sorted(model_rows[0], key=lambda r: r[key])
    picks = rows[:3] + rows[-3:]
    tiles = []
    for r in picks:
        g = read_rgb(gt / Path(r["image"]).with_suffix(".png").name)
        size = (256, 256)
        tiles.append(
            np.concatenate(
                [
                    read_rgb(lq / Path(r["image"]).with_suffix(".png").name, size),
                    read_rgb(restored_dir / r["image"], size),
                    cv2.resize(g, size),
                ],
                axis=1,
            )
        )
    sheet = (np.concatenate(tiles, axis=0) * 255 + 0.5).astype(np.uint8)[..., ::-1]
    cv2.imwrite(str(out_dir / "contact_sheet.png"), sheet)
