import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from faceres import weights
from faceres.cli import main
from faceres.metrics import psnr, ssim
from faceres.metrics.fullref import rgb_to_y
from faceres.metrics.niqe import imresize_half, niqe


def test_psnr_hand_computed():
    a = np.zeros((8, 8, 3), np.float32)
    b = np.full((8, 8, 3), 10 / 255, np.float32)  # MSE = 100 on the 0-255 scale
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / 100), abs=1e-6)
    assert psnr(a, a) == float("inf")


def test_ssim_hand_computed_on_flat_images():
    a = np.full((32, 32, 3), 0.2, np.float32)
    b = np.full((32, 32, 3), 0.6, np.float32)
    ya, yb = rgb_to_y(a)[0, 0], rgb_to_y(b)[0, 0]
    c1 = (0.01 * 255) ** 2
    expected = (2 * ya * yb + c1) / (ya**2 + yb**2 + c1)  # variances are zero: only the luminance term
    assert ssim(a, b) == pytest.approx(expected, rel=1e-6)
    rng = np.random.default_rng(0)
    x = rng.random((32, 32, 3)).astype(np.float32)
    assert ssim(x, x) == pytest.approx(1.0)
    assert ssim(x, np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1)) < 0.9


def test_imresize_half_preserves_constants_and_halves():
    img = np.full((96, 96), 7.0)
    out = imresize_half(img)
    assert out.shape == (48, 48)
    np.testing.assert_allclose(out, 7.0)
    ramp = np.tile(np.arange(96, dtype=np.float64), (96, 1))
    np.testing.assert_allclose(imresize_half(ramp)[10, 10:20], 2 * np.arange(10, 20) + 0.5, atol=1e-6)


def test_niqe_orders_clean_above_degraded(shared):
    import cv2

    params = shared / "weights/niqe_pris_params.npz"
    hq = cv2.imread(str(sorted((shared / "data/celebahq-512/images").iterdir())[0]))[..., ::-1].astype(np.float32) / 255
    blurred = cv2.GaussianBlur(hq, (0, 0), 4)
    noisy = np.clip(hq + np.random.default_rng(0).normal(0, 0.1, hq.shape), 0, 1).astype(np.float32)
    clean = niqe(hq, params)
    assert 2 < clean < 8
    assert niqe(blurred, params) > clean + 1 and niqe(noisy, params) > clean + 1


def test_niqe_of_a_too_small_image_is_left_out_not_a_crash(shared, tmp_path):
    import cv2

    from faceres.metrics.evaluate import score_folder, summarize
    from faceres.metrics.suite import Suite

    params = shared / "weights/niqe_pris_params.npz"
    with pytest.raises(ValueError, match="two 96x96 blocks"):
        niqe(np.full((128, 128, 3), 0.5, np.float32), params)
    hq = cv2.imread(str(sorted((shared / "data/celebahq-512/images").iterdir())[0]))
    cv2.imwrite(str(tmp_path / "big.png"), cv2.resize(hq, (256, 256)))
    cv2.imwrite(str(tmp_path / "small.png"), cv2.resize(hq, (128, 128)))
    rows, totals = score_folder(tmp_path, None, Suite(niqe_params=params), progress=False)
    assert totals == {}
    assert [("niqe" in r) for r in rows] == [True, False]
    assert summarize({"x": rows})["x"]["niqe"] == rows[0]["niqe"]


@pytest.mark.slow
def test_identity_dlib_separates_same_and_different_people(shared):
    from PIL import Image

    from faceres.metrics.identity import DlibFaces, cosine

    files = sorted((shared / "data/celeba-aligned/images").iterdir())
    by_id = {}
    for f in files:
        by_id.setdefault(f.name.split("_")[0], []).append(f)
    ids = sorted(by_id)[:6]
    faces = DlibFaces()
    emb = {i: [faces.embedding(np.asarray(Image.open(f).convert("RGB"))) for f in by_id[i][:3]] for i in ids}
    same = [cosine(e[a], e[b]) for e in emb.values() for a in range(3) for b in range(a + 1, 3)]
    diff = [cosine(emb[i][0], emb[j][0]) for n, i in enumerate(ids) for j in ids[n + 1 :]]
    assert np.mean(same) > np.mean(diff) + 0.02, (np.mean(same), np.mean(diff))


def test_make_testset_is_deterministic_and_evaluate_prints_table(shared, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FACERES_WEIGHTS_DIR", str(shared / "weights"))
    hq = shared / "data/celebahq-512/images"
    for run in ("a", "b"):
        assert main(["make-testset", str(hq), "-o", str(tmp_path / run), "--seed", "3", "--subset", "0:3", "--size", "256"]) == 0
    names = sorted(p.name for p in (tmp_path / "a/lq").iterdir())
    assert len(names) == 3
    for n in names:
        assert (tmp_path / "a/lq" / n).read_bytes() == (tmp_path / "b/lq" / n).read_bytes()
    manifest = json.loads((tmp_path / "a/manifest.json").read_text())
    assert set(manifest["images"]) == set(names) and manifest["seed"] == 3
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--restored",
                str(tmp_path / "a/hq"),
                "--gt",
                str(tmp_path / "a/hq"),
                "--lq",
                str(tmp_path / "a/lq"),
                "-o",
                str(tmp_path / "ev"),
                "--plot",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| input |" in out and "identity (dlib)" in out
    means = json.loads((tmp_path / "ev/metrics.json").read_text())["mean"]
    gt_row = means[str(tmp_path / "a/hq")]
    assert gt_row["psnr"] is None and gt_row["ssim"] == pytest.approx(1.0)  # inf PSNR: null in JSON
    assert means["input"]["psnr"] < 40
    assert (tmp_path / "ev/metrics.csv").is_file() and (tmp_path / "ev/distributions.png").is_file()


def test_evaluate_model_path(shared, tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("FACERES_WEIGHTS_DIR", str(shared / "weights"))
    assert (
        main(["make-testset", str(shared / "data/celebahq-512/images"), "-o", str(tmp_path / "ts"), "--subset", "0:2", "--size", "256"])
        == 0
    )
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tiny_model),
                "--lq",
                str(tmp_path / "ts/lq"),
                "--gt",
                str(tmp_path / "ts/hq"),
                "-o",
                str(tmp_path / "ev"),
                "--no-identity",
                "--device",
                "cpu",
                "--plot",
            ]
        )
        == 0
    )
    means = json.loads((tmp_path / "ev/metrics.json").read_text())["mean"]
    assert set(means) == {"input", str(tiny_model)}
    assert (tmp_path / "ev/contact_sheet.png").is_file()
    assert len(list((tmp_path / "ev/restored").iterdir())) == 2


# NIQE of these shared images from pyiqa 0.1.16's independent PyTorch implementation (same
# pristine parameters, Y = BT.601), recorded by `python bench/niqe_crosscheck.py` on 2026-11-23.
PYIQA_NIQE = {
    "celebahq-512/images/00129b5490b5459d813a2f031033635e.jpg": 3.9379,
    "celebahq-512/images/002b92f1277545ed80cae62a1f3fd84c.jpg": 3.4785,
    "real-lq/cropped/00000052_lq.png": 13.3042,
}


@pytest.mark.parametrize("name", sorted(PYIQA_NIQE))
def test_niqe_matches_independent_implementation(shared, name):
    import cv2

    rgb = cv2.imread(str(shared / "data" / name))[..., ::-1].astype(np.float32) / 255
    assert niqe(rgb, shared / "weights/niqe_pris_params.npz") == pytest.approx(PYIQA_NIQE[name], abs=0.02)


def smooth_faces(folder, n, seed, size=256, blur=0):
    """Stand-in images (smooth random texture): enough for NIQE's 96x96 blocks, not faces."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (0, 0), 2 + blur)
        cv2.imwrite(str(folder / f"{i:02d}.png"), (np.clip((img - 0.5) * 6 + 0.5, 0, 1) * 255).astype(np.uint8))
    return folder


def test_niqe_parameters_ship_with_the_package(tmp_path, monkeypatch):
    from fnmatch import fnmatch

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    monkeypatch.delenv("FACERES_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = weights.resolve("niqe-pris", allow_download=False)  # checks size and sha256 against the registry
    assert path == weights.PACKAGE_DATA_DIR / "niqe_pris_params.npz"
    package_data = tomllib.loads((weights.REPO_WEIGHTS_DIR.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert any(fnmatch("metrics/data/niqe_pris_params.npz", pattern) for pattern in package_data["faceres"])


def test_evaluate_prints_niqe_with_no_environment(tmp_path):
    restored, gt = smooth_faces(tmp_path / "restored", 2, 0, blur=1), smooth_faces(tmp_path / "gt", 2, 0)
    env = {k: v for k, v in os.environ.items() if k not in ("FACERES_WEIGHTS_DIR", "XDG_CACHE_HOME")}
    env["HOME"] = str(tmp_path / "home")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "faceres.cli",
            "evaluate",
            "--restored",
            str(restored),
            "--gt",
            str(gt),
            "--no-identity",
            "-o",
            str(tmp_path / "ev"),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "niqe ↓" in run.stdout and "Metrics that ran: PSNR, SSIM, NIQE" in run.stdout
    niqe_value = json.loads((tmp_path / "ev/metrics.json").read_text())["mean"][str(restored)]["niqe"]
    assert np.isfinite(niqe_value)
    lpips_line = next(line for line in run.stderr.splitlines() if "LPIPS" in line)
    assert "alexnet-owt-7be5be79.pth not found" in lpips_line and "download.pytorch.org" in lpips_line


def test_no_reference_evaluation_scores_input_and_restored_side_by_side(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FACERES_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    lq, restored = smooth_faces(tmp_path / "lq", 2, 1, blur=3), smooth_faces(tmp_path / "restored", 2, 1)
    assert main(["evaluate", "--restored", str(restored), "--lq", str(lq), "-o", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr()
    assert "| input |" in out.out and f"| {restored} |" in out.out and "psnr" not in out.out
    assert "FID left out: no reference" in out.err
    means = json.loads((tmp_path / "ev/metrics.json").read_text())["mean"]
    assert set(means) == {"input", str(restored)} and all(set(m) == {"niqe"} for m in means.values())
    assert means["input"]["niqe"] != means[str(restored)]["niqe"]


def test_ifqa_network_loads_the_official_format_strictly(tmp_path, monkeypatch):
    from faceres.metrics import ifqa

    net = ifqa.IFQANet()
    state = net.state_dict()
    for key in (
        "encoder128.conv1x1.weight",
        "encoder128.norm1.weight",
        "btn.3.conv2.bias",
        "decoder16.conv1x1.weight",
        "decoder256.0.conv1x1.weight",
        "decoder256.0.norm2.bias",
    ):  # names in the authors' model.py
        assert key in state
    assert "btn.0.conv1x1.weight" not in state  # 1024 -> 1024: identity shortcut
    torch.save({"D": state}, tmp_path / "IFQA_Metric.pth")
    metric = ifqa.IFQA(tmp_path / "IFQA_Metric.pth")
    assert torch.equal(metric.net.state_dict()["btn.3.conv2.bias"], state["btn.3.conv2.bias"])
    monkeypatch.setattr(ifqa, "SIZE", 64)  # the plumbing at a small size; the metric itself runs at 256
    face = np.random.default_rng(0).random((100, 80, 3)).astype(np.float32)
    assert metric.score_map(face).shape == (64, 64)
    assert 0 < metric(face) < 1
    torch.save({"G": state}, tmp_path / "other.pth")
    with pytest.raises(ifqa.IFQAError, match="under 'D'"):
        ifqa.IFQA(tmp_path / "other.pth")


def test_missing_ifqa_file_names_where_to_get_it(tmp_path, monkeypatch):
    from faceres.metrics.suite import load_suite

    monkeypatch.setenv("FACERES_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(weights.WeightsError, match="by hand from the authors' Google Drive"):
        weights.resolve("ifqa", allow_download=False)
    suite = load_suite(None, progress=False)
    line = next(n for n in suite.notes if n.startswith("IFQA"))
    assert "IFQA_Metric.pth not found" in line and "drive.google.com" in line and suite.ran(False) == ["NIQE"]


def test_band_table_reports_gain_per_input_quality_band():
    from faceres.metrics.evaluate import band_table

    results = {
        "input": [{"image": "a", "psnr": 20.0}, {"image": "b", "psnr": 28.0}, {"image": "c", "psnr": 29.0}],
        "model": [{"image": "a", "psnr": 22.5}, {"image": "b", "psnr": 27.0}, {"image": "c", "psnr": 29.5}],
    }
    rows = band_table(results).splitlines()
    assert "| model | < 22 | 1 | 20.00 | +2.500 | 1 |" in rows
    assert "| model | >= 27 | 2 | 28.50 | -0.250 | 1 |" in rows
    assert band_table({"model": results["model"]}) == ""  # no input scores, no table
