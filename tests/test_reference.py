"""SAIR wiring and the identity-drift guard. The recognizer in the SAIR tests is a small randomly
initialised network (no ArcFace weights exist here): the tests check wiring, not identity quality."""

import numpy as np
import pytest
import torch
from torch import nn

from faceres.archs import CodecPriorNet, GPENGenerator
from faceres.cli import main
from faceres.pipeline import FaceRestorer
from faceres.pipeline.images import load_photo
from faceres.pipeline.reference import SAIR, IdentityGuard, SAIRConfig, degrade_diff, histogram_loss, soft_cdf

SMALL = dict(size=64, style_dim=32, n_mlp=2, channel_multiplier=1, narrow=0.125)


class RandomRecognizer(nn.Module):
    """A tiny random CNN standing in for ArcFace: 112x112 -> 64-d."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 5, 4), nn.PReLU(8), nn.Conv2d(8, 16, 5, 4), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 64)
        )

    def forward(self, x):
        return self.body(x)


def test_histogram_loss_zero_for_same_colours_and_grows_with_shift():
    a = torch.rand(1, 3, 64, 64) * 2 - 1
    assert histogram_loss(a, a, 32).item() == pytest.approx(0, abs=1e-7)
    assert histogram_loss(a, (a + 0.3).clamp(-1, 1), 32) > histogram_loss(a, (a + 0.1).clamp(-1, 1), 32) > 0
    cdf = soft_cdf(torch.rand(1, 3, 16, 16), torch.ones(16, 16), 8)
    assert torch.all(cdf[..., 1:] >= cdf[..., :-1] - 1e-6) and torch.allclose(cdf[..., -1], torch.ones(1, 3))


def test_degradation_operator_is_differentiable_and_downsamples():
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    y = degrade_diff(x, SAIRConfig(scale=4))
    assert y.shape[-1] == 16
    y.sum().backward()
    assert x.grad.abs().sum() > 0


@pytest.mark.slow
@pytest.mark.parametrize("arch", [CodecPriorNet, GPENGenerator])
def test_sair_random_recognizer_losses_decrease_and_latent_moves(arch):
    torch.manual_seed(0)
    net = arch(**SMALL)
    sair = SAIR(net, RandomRecognizer(), SAIRConfig(steps=30, lr=0.05))
    lq, ref = torch.rand(1, 3, 64, 64) * 2 - 1, torch.rand(1, 3, 64, 64) * 2 - 1
    image, history = sair.restore(lq, ref)
    assert image.shape == lq.shape
    assert history["total"][-1] < history["total"][0]
    assert history["degradation"][-1] < history["degradation"][0]
    assert history["distance_to_ref"][-1] > 0  # started at w_ref and moved


def test_identity_guard_flags_a_swapped_face_not_a_degraded_one(shared):
    import cv2

    from faceres.data.dataset import load_face

    files = sorted((shared / "data/celeba-aligned/images").iterdir())
    a, _, _ = load_face(files[0], 128, center_crop=True)
    other = next(f for f in files if f.name.split("_")[0] != files[0].name.split("_")[0])
    b, _, _ = load_face(other, 128, center_crop=True)
    a, b = a.astype(np.float32) / 255, b.astype(np.float32) / 255
    lightly = cv2.GaussianBlur(a, (0, 0), 0.8)
    ok, buf = cv2.imencode(".jpg", (lightly * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 70])
    lightly = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED).astype(np.float32) / 255
    guard = IdentityGuard()
    assert guard.name == "identity (dlib)"
    same, drifted_same = guard.check(lightly, a)
    swapped, drifted_swap = guard.check(lightly, b)
    assert not drifted_same and drifted_swap, (same, swapped, guard.threshold)


def test_drift_fallback_keeps_the_input_face(tiny_model, weights_env, shared):
    photo = load_photo(shared / "data/multi-face/couple.jpg")
    r = FaceRestorer(tiny_model, detector="retinaface_mobile0.25")
    result = r.restore(photo, upscale=1, on_drift="fallback", drift_threshold=1.01)  # above any similarity: every face drifts
    assert result.faces and all(f.drifted and f.action == "kept input" for f in result.faces)
    np.testing.assert_allclose(result.image, photo.rgb, atol=1e-6)  # nothing pasted


def test_reference_restore_end_to_end_on_real_photos(tiny_model, weights_env, shared, tmp_path):
    """--reference wiring on real photos: the couple photo restored toward faces found in t1.jpg."""
    r = FaceRestorer(
        tiny_model,
        detector="retinaface_mobile0.25",
        reference=shared / "data/multi-face/t1.jpg",
        recognizer=RandomRecognizer(),
        sair=SAIRConfig(steps=3),
    )
    result = r.restore(shared / "data/multi-face/couple.jpg", upscale=1)
    assert len(result.faces) == 3
    for f in result.faces:
        assert f.reference["of"] == 6 and 0 <= f.reference["face"] < 6
        assert not np.allclose(f.restored, f.crop)


@pytest.mark.slow
def test_reference_runs_offline_with_the_dlib_recognizer(tiny_model, weights_env, shared, tmp_path, monkeypatch):
    """No ArcFace weights exist here: `--reference` uses dlib's face ResNet (the default recognizer) offline."""
    import json

    monkeypatch.setenv("FACERES_OFFLINE", "1")
    out = tmp_path / "o"
    code = main(
        [
            "restore",
            str(shared / "data/multi-face/couple.jpg"),
            "-o",
            str(out),
            "--model",
            str(tiny_model),
            "--detector",
            "retinaface_mobile0.25",
            "--reference",
            str(shared / "data/multi-face/t1.jpg"),
            "--reference-steps",
            "2",
            "--on-drift",
            "off",
            "--no-faces",
            "-s",
            "1",
        ]
    )
    assert code == 0
    entry = json.loads((out / "report.json").read_text())["images"][0]
    assert entry["faces"] == 3 and [r["of"] for r in entry["reference"]] == [6, 6, 6]
