"""Issue 14: a face larger in the output than the model's crop must not come back softer than the
bicubic-upscaled photo, nor further from the original."""

import cv2
import numpy as np
import pytest

from faceres.archs.contract import RestorationNet, RestorerSpec
from faceres.pipeline import FaceRestorer
from faceres.pipeline.images import load_photo
from faceres.pipeline.paste import detail_band, noise_sigma
from faceres.weights import DEFAULT_RESTORER


def psnr(a, b):
    return 10 * np.log10(1 / np.mean((a - b) ** 2))


def laplacian_variance(rgb):
    return cv2.Laplacian(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.CV_32F).var()


class Unchanged(RestorationNet):
    """A perfect restorer of a clean face: isolates what crop -> paste loses."""

    spec = RestorerSpec(512)

    def restore(self, x, fidelity=1.0):
        return x


def large_face_photo(shared):
    """FFHQ 1024² face in a photo at half size: restored at -s 2, ~1000 px at the output scale."""
    original = np.full((1300, 1400, 3), 0.5, np.float32)
    original[150:1174, 200:1224] = load_photo(shared / "data/hq-1024/00000.png").rgb
    return original, cv2.resize(original, (700, 650), interpolation=cv2.INTER_AREA)


FACE = (slice(350, 1050), slice(400, 1024))  # inside the face, clear of the paste feather


@pytest.mark.parametrize("model", ["default", "unchanged"])
def test_a_large_sharp_face_is_not_softened(shared, weights_env, model):
    original, photo = large_face_photo(shared)
    net = DEFAULT_RESTORER if model == "default" else Unchanged()
    result = FaceRestorer(net, detector="yunet", device="cpu").restore(photo, upscale=2)
    assert len(result.faces) == 1
    restored, bicubic = result.image[FACE], cv2.resize(photo, (1400, 1300), interpolation=cv2.INTER_CUBIC)[FACE]
    assert laplacian_variance(restored) >= 0.9 * laplacian_variance(bicubic)  # measured 1.13x (v1), 1.18x (unchanged)
    # issue 14's bound. Measured (bicubic 39.375 dB): the paste alone 39.42; faceres-v1 at 34,500 39.34 (31,000: 39.29) with the
    # shipped face parser's mask (39.15 with the square feather only: the background and clothes the network
    # alters a little then come back too); 7 dB behind while the model learnt to undo LQ-only colour jitter
    assert psnr(restored, original[FACE]) >= psnr(bicubic, original[FACE]) - 0.1


def test_detail_band_keeps_edges_and_drops_noise():
    rng = np.random.default_rng(0)
    sharp = np.zeros((256, 256, 3), np.float32)
    sharp[:, 128:] = 1.0  # one hard edge
    inv = np.array([[4.0, 0, 0], [0, 4.0, 0]])  # a 64² crop shown 4x larger
    band = detail_band(sharp, inv, 64, 4.0)
    assert np.abs(band[:, 120:136]).max() > 0.1 and np.abs(band[:, :100]).max() == 0
    noise = rng.normal(0, 0.05, sharp.shape).astype(np.float32)
    assert abs(noise_sigma(noise) - 0.05) < 0.01
    flat_noisy = 0.5 + noise
    assert np.abs(detail_band(flat_noisy, inv, 64, 4.0)).mean() < 0.1 * np.abs(noise).mean()
