import dataclasses
import time

import numpy as np
import pytest
import torch

from faceres.archs.contract import RestorationNet, RestorerSpec
from faceres.pipeline import FaceRestorer, RestoreOptions
from faceres.pipeline.align import estimate_affine, inverse_affine, template
from faceres.pipeline.detect import build_detector
from faceres.pipeline.images import load_photo


class IdentityRestorer(RestorationNet):
    """Returns the aligned crop unchanged: isolates alignment + inverse affine + paste."""

    spec = RestorerSpec(512)

    def restore(self, x, fidelity=1.0):
        return x


@pytest.mark.parametrize("detector", ["retinaface_mobile0.25", "yunet", "dlib"])
def test_detectors_find_six_faces_in_t1(weights_env, shared, detector):
    det = build_detector(detector)
    faces = det.detect(load_photo(shared / "data/multi-face/t1.jpg").bgr8)
    assert len(faces) == 6
    for f in faces:  # landmark order: left eye left of right eye, eyes above mouth
        assert f.landmarks[0, 0] < f.landmarks[1, 0]
        assert f.landmarks[:2, 1].mean() < f.landmarks[3:, 1].mean()


@pytest.mark.parametrize("network", ["mobile0.25", "resnet50"])
def test_vectorised_retinaface_anchors_equal_facexlibs(network):
    from facexlib.detection.retinaface import generate_config
    from facexlib.detection.retinaface_utils import PriorBox

    from faceres.pipeline.detect import prior_boxes

    cfg = generate_config(network)
    for size in [(1333, 2048), (512, 512), (37, 61)]:
        assert torch.equal(prior_boxes(cfg, size), PriorBox(cfg, image_size=size).forward())


@pytest.mark.parametrize("kind", ["rgb", "gray", "rgba", "rgb16"])
def test_encoded_pixels_are_the_rounded_clipped_floats(kind, tmp_path):
    import cv2

    from faceres.pipeline.images import Photo, encode_image

    rng = np.random.default_rng(0)
    rgb = rng.uniform(-0.2, 1.2, (9, 11, 3)).astype(np.float32)
    alpha = rng.random((9, 11)).astype(np.float32) if kind == "rgba" else None
    photo = Photo(rgb, alpha, kind == "gray", 16 if kind == "rgb16" else 8)
    scale = 65535.0 if kind == "rgb16" else 255.0
    decoded = cv2.imdecode(np.frombuffer(encode_image(photo, "png"), np.uint8), cv2.IMREAD_UNCHANGED)
    expect = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if kind == "gray" else rgb[..., ::-1]
    if kind == "rgba":
        expect = np.dstack([expect, alpha])
    assert np.array_equal(decoded, np.floor(np.clip(expect, 0, 1) * scale + 0.5).astype(decoded.dtype))


def test_auto_detector_prefers_retinaface(weights_env):
    assert build_detector("auto").name == "retinaface-mobilenet0.25"


@pytest.mark.parametrize("upscale", [1, 2])
def test_identity_restorer_paste_reproduces_input(weights_env, shared, upscale):
    import cv2

    photo = load_photo(shared / "data/multi-face/t1.jpg")
    result = FaceRestorer(IdentityRestorer(), detector="retinaface_mobile0.25", precision="fp32").restore(photo, upscale=upscale)
    assert len(result.faces) == 6
    ref = photo.rgb if upscale == 1 else cv2.resize(photo.rgb, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_LANCZOS4)
    diff = np.abs(result.image - ref) * 255
    assert diff.mean() < 0.5
    assert np.percentile(diff, 99.9) < 10
    # a one-pixel misalignment of the paste would be far larger than resampling noise
    shifted = np.abs(np.roll(ref, 1, axis=1) - ref) * 255
    assert np.percentile(diff, 99.9) < np.percentile(shifted, 99.9) / 2


def test_inverse_affine_maps_template_back_to_landmarks():
    lm = np.array([[100, 120], [140, 118], [121, 145], [104, 165], [138, 164]], np.float32)
    M = estimate_affine(lm, 256)
    for up in (1, 2, 3):
        inv = inverse_affine(M, up)
        back = template(256) @ inv[:, :2].T + inv[:, 2]
        # landmarks in the upscaled photo, pixel centres aligned: up * p + (up - 1) / 2
        np.testing.assert_allclose(back, lm * up + (up - 1) / 2, atol=3 * up)


def fidelity_distances(model_path, crop):
    restorer = FaceRestorer(model_path, device="cpu")
    outs = {f: restorer.restore_crops([crop], RestoreOptions(fidelity=f))[0] for f in (0.0, 0.25, 0.5, 0.75, 1.0)}
    return [float(np.abs(outs[f] - outs[1.0]).mean()) for f in (0.0, 0.25, 0.5, 0.75, 1.0)]


def test_fidelity_moves_output_monotonically(tiny_model, shared):
    import cv2

    crop = cv2.resize(
        load_photo(shared / "data/real-lq/cropped" / sorted((shared / "data/real-lq/cropped").iterdir())[0].name).rgb,
        (128, 128),
        interpolation=cv2.INTER_AREA,
    )
    d = fidelity_distances(tiny_model, crop)
    assert d[-1] == 0
    assert all(a > b for a, b in zip(d, d[1:])), d


class LeftRamp(RestorationNet):
    """Adds a left-to-right ramp: not mirror-symmetric, so a flip ensemble must cancel it."""

    spec = RestorerSpec(64)

    def restore(self, x, fidelity=1.0):
        return x + torch.linspace(-0.5, 0.5, x.shape[-1])


def test_flip_ensemble_averages_with_the_mirrored_restoration():
    crop = np.random.default_rng(0).uniform(0.25, 0.75, (64, 64, 3)).astype(np.float32)
    restorer = FaceRestorer(LeftRamp(), device="cpu", precision="fp32")
    plain = restorer.restore_crops([crop], RestoreOptions(flip_ensemble=False))[0]
    ensemble = restorer.restore_crops([crop], RestoreOptions(flip_ensemble=True))[0]
    assert np.abs(plain - crop).max() > 0.2
    np.testing.assert_allclose(ensemble, crop, atol=1e-6)
    assert not restorer.flip_ensemble  # a module has no registry default
    np.testing.assert_array_equal(restorer.restore_crops([crop])[0], plain)  # flip_ensemble=None: that default


def test_grey_photo_stays_grey(tiny_model, weights_env, shared):
    photo = load_photo(shared / "data/old-photos/106000_gray.png")
    assert photo.gray
    result = FaceRestorer(tiny_model, detector="retinaface_mobile0.25").restore(photo, upscale=1)
    assert result.faces
    rgb = result.image
    assert np.abs(rgb - rgb.mean(axis=2, keepdims=True)).max() < 1e-5


def test_only_center_face(tiny_model, weights_env, shared):
    r = FaceRestorer(tiny_model, detector="retinaface_mobile0.25")
    assert len(r.restore(shared / "data/multi-face/t1.jpg", RestoreOptions(only_center_face=True, upscale=1)).faces) == 1


def test_batch_size_does_not_change_results(tiny_model, weights_env, shared):
    photo = load_photo(shared / "data/multi-face/t1.jpg")
    a = FaceRestorer(tiny_model, detector="retinaface_mobile0.25", batch_size=1, precision="fp32").restore(photo, upscale=1)
    b = FaceRestorer(tiny_model, detector="retinaface_mobile0.25", batch_size=6, precision="fp32").restore(photo, upscale=1)
    np.testing.assert_allclose(a.image, b.image, atol=1e-4)


@pytest.mark.slow
def test_background_upsampler_and_parse_mask_load_official_formats(tiny_model, weights_env, shared, tmp_path, monkeypatch):
    """Random weights in the official file formats (Real-ESRGAN `params_ema`, facexlib ParseNet):
    proves loading and wiring, not quality."""
    from facexlib.parsing.parsenet import ParseNet

    from faceres.archs.rrdbnet import RRDBNet

    wdir = tmp_path / "weights"
    wdir.mkdir()
    for f in weights_env.iterdir():
        (wdir / f.name).symlink_to(f)
    torch.manual_seed(0)
    torch.save({"params_ema": RRDBNet(scale=2, num_feat=8, num_block=1, num_grow_ch=4).state_dict()}, wdir / "RealESRGAN_x2plus.pth")
    torch.save(ParseNet(in_size=512, out_size=512, parsing_ch=19).state_dict(), wdir / "parsing_parsenet.pth")
    monkeypatch.setenv("FACERES_WEIGHTS_DIR", str(wdir))
    from faceres import weights

    for name in ("parsenet", "realesrgan-x2"):  # our random stand-ins differ in size from the official files
        monkeypatch.setitem(weights.REGISTRY, name, dataclasses.replace(weights.REGISTRY[name], size=None, sha256=None))
    photo = load_photo(shared / "data/multi-face/couple.jpg")
    plain = FaceRestorer(tiny_model, detector="retinaface_mobile0.25", parse="off").restore(photo, upscale=2)
    fancy = FaceRestorer(tiny_model, detector="retinaface_mobile0.25", bg_upsampler="realesrgan").restore(photo, upscale=2)
    assert fancy.image.shape == plain.image.shape
    assert np.abs(fancy.image - plain.image).mean() > 1e-3
    restorer = FaceRestorer(tiny_model, detector="retinaface_mobile0.25", parse="auto")
    assert restorer.parser is not None  # auto picks it up once the file is there
    m = restorer.parser.mask(np.zeros((128, 128, 3), np.float32))
    assert m.shape == (128, 128) and 0 <= m.min() and m.max() <= 1


def test_two_threads_share_one_restorer(tiny_model, weights_env, shared, monkeypatch):
    """One restorer, two threads at once with different fidelities: each gets what a sequential call
    gets, and the detector (built on the first non-aligned call) is built once."""
    import threading

    from faceres.pipeline import restorer as restorer_module

    builds = []

    def slow_build(*args):  # widen the window in which both threads find no detector yet
        builds.append(args)
        time.sleep(0.3)
        return build_detector(*args)

    monkeypatch.setattr(restorer_module, "build_detector", slow_build)
    import cv2

    from faceres.pipeline.images import Photo

    full = load_photo(shared / "data/multi-face/couple.jpg").rgb  # at half size: detection is most of the time
    photo = Photo(cv2.resize(full, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA))
    restorer = FaceRestorer(tiny_model, detector="retinaface_mobile0.25")
    options = [RestoreOptions(upscale=1, fidelity=0.25), RestoreOptions(upscale=1, fidelity=1.0)]
    barrier, results = threading.Barrier(2), [None, None]

    def work(i):
        barrier.wait()
        results[i] = restorer.restore(photo, options[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    sequential = [restorer.restore(photo, o) for o in options]
    for threaded, alone in zip(results, sequential):
        assert len(threaded.faces) == len(alone.faces) >= 2
        np.testing.assert_array_equal(threaded.image, alone.image)
    assert np.abs(sequential[0].image - sequential[1].image).max() > 0.05  # the fidelities really differ


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(upscale=0), "upscale must be positive"),
        (dict(upscale=float("nan")), "upscale must be a finite number"),
        (dict(fidelity=1.5), r"fidelity must be in \[0, 1\], got 1.5"),
        (dict(fidelity="high"), "fidelity must be a finite number"),
        (dict(min_eye_distance=-1), "min_eye_distance must be >= 0"),
        (dict(aligned="yes"), "aligned must be True or False"),
        (dict(flip_ensemble="auto"), "flip_ensemble must be None, True or False"),
        (dict(on_drift="warn"), "on_drift must be off, flag or fallback, got 'warn'"),
        (dict(drift_threshold=float("inf")), "drift_threshold must be a finite number"),
    ],
)
def test_restore_options_refuse_bad_values(change, message):
    with pytest.raises(ValueError, match=message):
        RestoreOptions(**change)


def test_options_are_per_call_and_frozen():
    options = RestoreOptions(fidelity=0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.fidelity = 1.0
    crop = np.full((64, 64, 3), 0.5, np.float32)
    restorer = FaceRestorer(LeftRamp(), device="cpu", precision="fp32")
    with pytest.raises(ValueError, match="no fidelity control"):  # LeftRamp has no dial: 1 only
        restorer.restore(crop, options, aligned=True)
    with pytest.raises(ValueError, match="unknown detector 'retina'"):
        FaceRestorer(LeftRamp(), detector="retina")
    assert restorer.restore(crop, aligned=True, upscale=1).image.shape == (64, 64, 3)
