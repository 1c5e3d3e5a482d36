"""dlib's face recognition ResNet in PyTorch: the .dat reader, the network against dlib's C++,
the differentiable chip, the identity loss (fp32 and bf16) and its wiring into training and SAIR."""

import cv2
import numpy as np
import pytest
import torch

from faceres.archs.dlib_resnet import DlibFaceChip, DlibFaceDescriptor, DlibResNet
from faceres.dlib_dat import DatError, read_dat
from faceres.losses.identity import DlibIdentityLoss

dlib = pytest.importorskip("dlib", reason="dlib extra not installed: pip install 'faceres[dlib]'")


@pytest.fixture(scope="module")
def dat_path():
    from faceres.weights import WeightsError, resolve

    try:
        return resolve("dlib-resnet", allow_download=False)
    except WeightsError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def net(dat_path):
    from faceres.dlib_dat import load_dlib_resnet

    return load_dlib_resnet(dat_path)


@pytest.fixture(scope="module")
def dlib_models():
    from faceres.weights import dlib_model_file

    return (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(str(dlib_model_file("shape_predictor_5_face_landmarks.dat"))),
        dlib.face_recognition_model_v1(str(dlib_model_file("dlib_face_recognition_resnet_model_v1.dat"))),
    )


@pytest.fixture(scope="module")
def real_faces(shared, dlib_models):
    """(RGB uint8 face at 256, its dlib 5-point shape) for a few CelebA-HQ photos."""
    hog, sp5, _ = dlib_models
    out = []
    for f in sorted((shared / "data/celebahq-512/images").iterdir())[:6]:
        img = np.ascontiguousarray(cv2.resize(cv2.imread(str(f)), (256, 256), interpolation=cv2.INTER_AREA)[..., ::-1])
        rects = hog(img, 1)
        if rects:
            out.append((img, sp5(img, rects[0])))
    assert len(out) >= 4
    return out


def chips_tensor(chips) -> torch.Tensor:
    return torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float()


# ------------------------------------------------------------------ the file


def test_reader_uses_every_tensor_and_ends_at_eof(dat_path):
    sd = read_dat(dat_path)
    assert set(sd) == set(DlibResNet().state_dict())
    assert sum(v.numel() for k, v in sd.items() if k != "input_mean") == 5_614_592  # the 29 convs, 29 affines, fc
    assert torch.allclose(sd["input_mean"], torch.tensor([122.782, 117.001, 104.298]))
    assert sd["fc.weight"].shape == (128, 256)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[:-1], "ends early"),
        (lambda b: b + b"\x00", "1 bytes left"),
        (lambda b: b[:2] + b"\x01\x0dloss_metric_3" + b[17:], "loss layer"),
    ],
)
def test_reader_is_strict(dat_path, tmp_path, damage, message):
    bad = tmp_path / "damaged.dat"
    bad.write_bytes(damage(dat_path.read_bytes()))
    with pytest.raises(DatError, match=message) as err:
        read_dat(bad)
    assert str(bad) in str(err.value)


def test_registry_finds_the_file_in_the_installed_package(dat_path):
    from faceres.weights import REGISTRY, check_file

    spec = REGISTRY["dlib-resnet"]
    assert dat_path.parent.parent.name == "face_recognition_models" and spec.kind == "recognizer"
    check_file(dat_path, spec)  # size and sha256


# ------------------------------------------------------------------ the network


def test_descriptors_match_dlibs_cpp(net, real_faces, dlib_models):
    _, _, encoder = dlib_models
    chips = [dlib.get_face_chip(img, shape, 150, 0.25) for img, shape in real_faces]
    reference = np.stack([np.asarray(encoder.compute_face_descriptor(img, shape)) for img, shape in real_faces])
    with torch.no_grad():
        ours = net(chips_tensor(chips)).double().numpy()
    assert np.abs(ours - reference).max() <= 1e-4


def test_evaluate_identity_path_matches_dlibs_cpp(real_faces, dlib_models):
    from faceres.metrics.identity import DlibFaces

    faces = DlibFaces()
    _, _, encoder = dlib_models
    imgs = [img for img, _ in real_faces]
    reference = np.stack([np.asarray(encoder.compute_face_descriptor(i, faces.sp5(i, faces._rect(i)))) for i in imgs])
    assert np.abs(faces.embeddings(imgs) - reference).max() <= 1e-4


@pytest.mark.parametrize("side", [128, 256, 512])
def test_differentiable_chip_reproduces_dlibs_chip(net, real_faces, side):
    """Given the face's own landmarks, DlibFaceChip cuts dlib's chip (pyramid included) up to uint8 rounding."""
    dist = []
    for img, shape in real_faces[:3]:
        face = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA if side < 256 else cv2.INTER_CUBIC)
        pts = np.array([[p.x, p.y] for p in shape.parts()], float) * side / 256
        rect = dlib.rectangle(0, 0, side - 1, side - 1)
        theirs = dlib.get_face_chip(face, dlib.full_object_detection(rect, [dlib.point(*np.round(p).astype(int)) for p in pts]), 150, 0.25)
        x = torch.from_numpy(face[None]).permute(0, 3, 1, 2).float() / 127.5 - 1
        ours = DlibFaceChip(np.round(pts) * 512 / side)(x)
        assert (ours[0].permute(1, 2, 0).numpy() - theirs)[5:-5, 5:-5].__abs__().mean() < 0.6
        with torch.no_grad():
            dist.append((net(ours) - net(chips_tensor([theirs]))).norm().item())
    assert max(dist) < 0.03, dist  # same person: < 0.6


def test_gradients_reach_the_input_not_the_weights(net):
    desc = DlibFaceDescriptor(net)
    x = (torch.rand(2, 3, 128, 128) * 2 - 1).requires_grad_(True)
    desc(x).pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


def test_bf16_forward_close_to_fp32(net, real_faces):
    x = torch.from_numpy(np.stack([img for img, _ in real_faces])).permute(0, 3, 1, 2).float() / 127.5 - 1
    desc = DlibFaceDescriptor(net)
    with torch.no_grad():
        fp32 = desc(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = desc(x).float()
    cos = torch.nn.functional.cosine_similarity(fp32, bf16, dim=1)
    assert cos.min() > 0.995, cos
    assert (fp32 - bf16).norm(dim=1).max() < 0.06  # well inside dlib's same-person distance 0.6


# ------------------------------------------------------------------ the loss


@pytest.mark.parametrize("bf16", [False, True])
def test_identity_loss_trains(net, real_faces, bf16):
    """Pull a blurred face toward another face's identity: the loss must fall."""
    faces = torch.from_numpy(np.stack([cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA) for img, _ in real_faces[:2]]))
    faces = faces.permute(0, 3, 1, 2).float() / 127.5 - 1
    loss_fn = DlibIdentityLoss(DlibFaceDescriptor(net))
    x = torch.nn.functional.avg_pool2d(faces[:1], 5, 1, 2).clone().requires_grad_(True)
    target = faces[1:]
    opt = torch.optim.Adam([x], lr=0.02)
    losses = []
    for _ in range(8):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(x, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.slow
def test_trainer_names_the_dlib_identity_term(shared, tmp_path, capsys):
    from pathlib import Path

    from faceres.train.options import load_options
    from faceres.train.trainer import train

    opts = load_options(
        Path(__file__).resolve().parent.parent / "options/train_faceres_tiny.yml",
        [
            f"path.experiments_root={tmp_path}",
            "train.losses.gan_local=0",
            "train.total_iter=1",
            "val.every=100",
            "train.losses.feature_matching.type=discriminator_features",
            "train.losses.identity.type=dlib",
            "train.losses.identity.weight=1",
        ],
    )
    train(opts, "cpu")
    out = capsys.readouterr().out
    assert "identity (dlib ResNet) 1.0" in out and "ArcFace" not in out and "l_id" in out


# ------------------------------------------------------------------ SAIR and the guard


def test_sair_defaults_to_dlib(shared, tiny_model, tmp_path):
    from faceres.pipeline import FaceRestorer
    from faceres.pipeline.reference import SAIRConfig

    face = cv2.imread(str(sorted((shared / "data/celebahq-512/images").iterdir())[0]))
    ref = tmp_path / "ref.png"
    cv2.imwrite(str(ref), cv2.resize(face, (128, 128), interpolation=cv2.INTER_AREA))
    restorer = FaceRestorer(tiny_model, reference=ref, sair=SAIRConfig(steps=2))
    assert isinstance(restorer.sair.embed.recognizer, DlibFaceDescriptor)
    result = restorer.restore(str(ref), aligned=True)
    assert result.faces[0].reference["similarity"] == pytest.approx(1.0, abs=1e-4)  # the reference itself
