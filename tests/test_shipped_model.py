"""The models shipped in weights/: present, small, and better than their input on real faces."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from faceres.checkpoints import read_metadata
from faceres.cli import main
from faceres.data.dataset import list_faces, load_face
from faceres.data.degradations import degrade, sample_params
from faceres.metrics import psnr, ssim
from faceres.pipeline import FaceRestorer
from faceres.train.base import grows_from
from faceres.train.options import load_options
from faceres.weights import DEFAULT_RESTORER, REPO_WEIGHTS_DIR, resolve

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = {
    "faceres-v0": (REPO_WEIGHTS_DIR / "faceres_v0.safetensors", 128),
    "faceres-v1": (REPO_WEIGHTS_DIR / "faceres_v1.safetensors", 512),
}


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_model_file(name):
    path, size = SHIPPED[name]
    assert path.is_file(), f"{path} is missing"
    assert path.stat().st_size <= 30e6
    assert resolve(name, allow_download=False) == path
    arch = read_metadata(path)["arch"]
    prefix = ""
    if arch["arch"] == "interpolated":  # faceres-v1: the pixel-loss stage, and the adversarial one as an int8 difference
        arch, prefix = arch["base"], "fidelity_end."
    assert arch["arch"] == "codec_prior" and arch["size"] == size
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert str(f.get_tensor(f"{prefix}generator.input.input").dtype) == "torch.float16"
        deltas = [k for k in f.keys() if k.startswith("perceptual_delta.")]
        assert bool(deltas) == bool(prefix) and all(f.get_tensor(k).dtype == torch.int8 for k in deltas)


@pytest.mark.slow
def test_default_model_fidelity_trades_faithfulness_for_definition(shared):
    """faceres-v1's dial on 4 real low-quality crops: lower fidelity blends in the adversarial stage, so
    NIQE falls (sharper, more natural statistics) while the face stays the same face."""
    from faceres.metrics.niqe import niqe

    crops = sorted((shared / "data/real-lq/cropped").iterdir())[:4]
    restorer = FaceRestorer(DEFAULT_RESTORER, device="cpu")
    assert restorer.net.spec.has_fidelity
    params = shared / "weights/niqe_pris_params.npz"
    scores, moves = {1.0: [], 0.5: [], 0.0: []}, []
    for path in crops:
        outs = {f: restorer.restore(path, aligned=True, upscale=1, fidelity=f).image for f in scores}
        for f, out in outs.items():
            scores[f].append(niqe(out, params))
        moves.append(psnr(outs[0.0], outs[1.0]))
    means = {f: np.mean(v) for f, v in scores.items()}
    assert means[0.0] < means[0.5] < means[1.0], means
    assert min(moves) > 30, moves  # a sharper version of the same restoration, not another face


def test_the_v1_line_continues_from_a_committed_state_of_its_architecture():
    """Cumulative training: `options/train_faceres_v1.yml` starts from a file in the repository (the
    line's newest committed EMA), of the options' architecture, not behind the release: the release's
    network or a grown one, still naming the first architecture the added elements grew from."""
    opts = load_options(ROOT / "options/train_faceres_v1.yml")
    state = ROOT / opts.path.init_state
    meta, release = read_metadata(state), read_metadata(REPO_WEIGHTS_DIR / "faceres_v1.safetensors")
    if meta["arch"]["arch"] == "interpolated":  # the release itself: its pixel-loss end is the line
        meta = {**meta, "arch": meta["arch"]["base"]}
    assert meta["arch"] == opts.network_g.arch_config()
    assert meta["arch"] == release["arch"]["base"] or grows_from(release["arch"]["base"], meta["arch"])
    assert meta["iter"] >= release["iter"] and meta["grown_from"] == release["grown_from"]


def test_default_model_is_the_512_model():
    assert DEFAULT_RESTORER == "faceres-v1"


@pytest.mark.slow
def test_default_model_gains_on_held_out_faces_at_512_with_no_band_losing(shared):
    """16 held-out CelebA-HQ faces at 512² with the paper's degradation (the validation draws).
    Measured at iteration 22,250: +0.92 dB on average, 16 of 16 better, the three inputs above 27 dB +0.22 to +1.00
    (at 28,000 and 31,000 the 50-face split gains +0.95 dB, at 34,500 +1.03 dB, every band and every face)."""
    opts = load_options(ROOT / "options/train_faceres_v1.yml")
    held_out = list_faces(opts.datasets.val.dataroot, opts.datasets.val.subset)[:16]
    deg = opts.datasets.val.degradation
    restorer = FaceRestorer(DEFAULT_RESTORER, device="cpu")
    gains = []
    for i, path in enumerate(held_out):
        gt = load_face(path, 512, False)[0].astype(np.float32) / 255
        lq = degrade(gt, sample_params(np.random.default_rng([0, i]), deg), deg.blur_kernel_size)
        out = restorer.restore(lq, aligned=True, upscale=1).image
        gains.append((psnr(lq, gt), psnr(out, gt) - psnr(lq, gt)))
    assert np.mean([g for _, g in gains]) > 0.5, gains
    assert sum(g > 0 for _, g in gains) >= 15, gains
    assert all(g > 0 for q, g in gains if q > 27), gains  # the best inputs gain too


@pytest.mark.slow
def test_default_model_keeps_mildly_degraded_faces(shared):
    """8 held-out faces with the `mild` preset (good scans: slight blur, x1-2 resize, light noise/JPEG),
    where the input is already close to the original: they must come back at least as good. The 4,500
    release lost 3.5 dB on such faces, 13,500 lost 0.29; measured at 22,250: +0.14 dB on these 8
    (-0.18 to +0.45), +0.15 dB on 50; at 28,000, +0.19 dB on 50; at 31,000, +0.12; at 34,500, +0.16."""
    from faceres.data.degradations import DEGRADATION_PRESETS

    held_out = list_faces(load_options(ROOT / "options/train_faceres_v1.yml").datasets.val.dataroot, (0, 8))
    restorer = FaceRestorer(DEFAULT_RESTORER, device="cpu")
    losses = []
    for i, path in enumerate(held_out):
        gt = load_face(path, 512, False)[0].astype(np.float32) / 255
        lq = degrade(gt, sample_params(np.random.default_rng([1, i]), DEGRADATION_PRESETS["mild"]))
        out = restorer.restore(lq, aligned=True, upscale=1).image
        losses.append(psnr(out, gt) - psnr(lq, gt))
    assert np.mean(losses) > 0, losses


@pytest.mark.slow
def test_faceres_v0_improves_psnr_on_held_out_faces(shared):
    """16 real CelebA-HQ faces the model never saw (the held-out split), degraded as in validation.
    Measured when shipped: PSNR +0.60 dB on average (14 of 16 faces better), SSIM +0.028."""
    opts = load_options(ROOT / "options/train_faceres_128_cpu.yml")
    held_out = list_faces(opts.datasets.val.dataroot, opts.datasets.val.subset)[:16]
    deg = opts.datasets.val.degradation
    restorer = FaceRestorer("faceres-v0", device="cpu")
    assert restorer.flip_ensemble  # the registry's default for faceres-v0
    d_psnr, d_ssim = [], []
    for i, path in enumerate(held_out):
        gt = load_face(path, 128, False)[0].astype(np.float32) / 255
        lq = degrade(gt, sample_params(np.random.default_rng([0, i]), deg), deg.blur_kernel_size)
        out = restorer.restore(lq, aligned=True, upscale=1).image
        d_psnr.append(psnr(out, gt) - psnr(lq, gt))
        d_ssim.append(ssim(out, gt) - ssim(lq, gt))
    assert np.mean(d_psnr) > 0.3, d_psnr
    assert sum(d > 0 for d in d_psnr) >= 12, d_psnr
    assert np.mean(d_ssim) > 0.01, d_ssim


def test_restore_old_photos_with_no_model_option(shared, tmp_path, monkeypatch):
    monkeypatch.setenv("FACERES_WEIGHTS_DIR", str(shared / "weights"))  # detector weights only
    photo = shared / "data/old-photos/106000_gray.png"
    assert main(["restore", str(photo), "-o", str(tmp_path), "--device", "cpu"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["model"] == DEFAULT_RESTORER and report["images"][0]["faces"] >= 1
    assert (tmp_path / "restored_imgs/106000_gray.png").is_file()
