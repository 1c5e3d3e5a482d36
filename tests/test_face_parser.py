"""faceres's own face parser (weights/face_parser_v1.safetensors): architecture, labels, the shipped
file's accuracy on held-out faces, and the paste mask it gives the pipeline."""

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from faceres.archs.face_parser import PARSE_LABELS, FaceParserNet
from faceres.pipeline.background import PARSE_KEEP, FaceParser, blurred_mask, parser_on_disk
from faceres.train.parser import degraded_copies, flip_pair, iou_scores, read_label_map
from faceres.weights import REGISTRY, REPO_WEIGHTS_DIR, check_file, sha256sum

SPEC = REGISTRY["faceres-parser-v1"]
SHIPPED = REPO_WEIGHTS_DIR / SPEC.filename
LABEL = {name: i for i, name in enumerate(PARSE_LABELS)}
CORNERS = [(ys, xs) for ys in (slice(0, 40), slice(-40, None)) for xs in (slice(0, 40), slice(-40, None))]
OPTIONS = Path(__file__).resolve().parent.parent / "options/train_face_parser.yml"


def held_out(shared, n: int, size: int = 512):
    """The first n faces in sorted order (never trained on) as uint8 RGB, and their label maps."""
    root = shared / "data/celebahq-512"
    stems = sorted(p.stem for p in (root / "images").glob("*.jpg"))[:n]
    images = [cv2.imread(str(root / "images" / f"{s}.jpg"))[..., ::-1] for s in stems]
    labels = [read_label_map(root / "masks" / f"{s}.png") for s in stems]
    resize = lambda a, interp: cv2.resize(np.ascontiguousarray(a), (size, size), interpolation=interp)
    return np.stack([resize(i, cv2.INTER_AREA) for i in images]), np.stack([resize(m, cv2.INTER_NEAREST) for m in labels])


def test_network_shape_and_size():
    net = FaceParserNet().eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 3, 256, 256)).shape == (2, 19, 256, 256)
    assert sum(p.numel() for p in net.parameters()) <= 600_000


def test_mirroring_swaps_the_persons_left_and_right():
    image = np.zeros((8, 8, 3), np.uint8)
    labels = np.zeros((8, 8), np.uint8)
    labels[2, 6] = LABEL["l_brow"]  # the person's left brow shows on the image's right
    labels[4, 1] = LABEL["r_eye"]
    labels[5, 3] = LABEL["hair"]
    _, flipped = flip_pair(image, labels)
    assert flipped[2, 1] == LABEL["r_brow"] and flipped[4, 6] == LABEL["l_eye"] and flipped[5, 4] == LABEL["hair"]
    np.testing.assert_array_equal(flip_pair(image, flipped)[1], labels)


def test_shared_masks_use_the_parsenet_label_order(shared):
    """The masks are trained on as they are: check they are in ParseNet's order (13 hair, 4 the left
    eye on the image's right), not face-parsing.PyTorch's (17 hair, 2/3 brows)."""
    _, labels = held_out(shared, 8)
    mean_x = lambda name: np.mean([np.nonzero(m == LABEL[name])[1].mean() for m in labels if (m == LABEL[name]).any()])
    assert mean_x("l_eye") > 256 > mean_x("r_eye") and mean_x("l_brow") > 256 > mean_x("r_brow")
    area = np.bincount(labels.ravel(), minlength=19)
    assert area[LABEL["hair"]] > area[LABEL["nose"]] > area[LABEL["l_eye"]] and area[LABEL["hair"]] > area[LABEL["cloth"]]
    nose_rows = np.nonzero(labels == LABEL["nose"])[1]
    lip_rows = np.nonzero(labels == LABEL["u_lip"])[1]
    assert nose_rows.mean() < lip_rows.mean()


@pytest.fixture(scope="module")
def shipped_parser():
    if not SHIPPED.is_file():
        pytest.skip(f"{SHIPPED} not found")
    return FaceParser(str(SHIPPED))


def test_shipped_file_matches_its_registry_entry():
    assert SHIPPED.is_file(), "weights/face_parser_v1.safetensors ships with the repository"
    assert SHIPPED.stat().st_size == SPEC.size and sha256sum(SHIPPED) == SPEC.sha256
    check_file(SHIPPED, SPEC)
    assert SPEC.kind == "parser" and "non-commercial" in SPEC.licence


def test_shipped_parser_finds_the_kept_region_of_held_out_faces(shared, shipped_parser):
    """Kept-region IoU at release: 0.933 clean and 0.896 degraded (the paper's ranges) on held-out files
    0-49; on these 6 faces 0.928 (mIoU 0.555) and 0.880. An iteration-1000 network (0.89) fails."""
    images, labels = held_out(shared, 6, size=256)
    predict = lambda faces: np.stack([shipped_parser.labels(face) for face in faces])
    clean = iou_scores(predict(images.astype(np.float32) / 255), labels)
    assert clean["kept_iou"] >= 0.90 and clean["miou"] >= 0.50
    degraded = iou_scores(predict(degraded_copies(images)), labels)
    assert degraded["kept_iou"] >= 0.85


def test_paste_mask_covers_the_face_and_leaves_the_background(shared, shipped_parser):
    """~1 on the face; ~0 in the crop's corners wherever the true labels' mask (blurred the same way)
    is ~0. At release the worst of these 6 faces' 18 such corners is 0.031 (a pale wall beside long hair,
    0.13 were the mask made from the 19-label argmax rather than the kept labels' probability)."""
    images, labels = held_out(shared, 6)
    corners = []
    for image, truth in zip(images, labels):
        mask, ideal = shipped_parser.mask(image.astype(np.float32) / 255), blurred_mask(np.isin(truth, PARSE_KEEP).astype(np.float32), 512)
        assert mask.shape == (512, 512) and mask.dtype == np.float32 and 0 <= mask.min() and mask.max() <= 1
        assert mask[236:276, 236:276].min() > 0.95  # nose and cheeks
        corners += [mask[ys, xs].mean() for ys, xs in CORNERS if ideal[ys, xs].max() < 0.02]  # far from face and hair
    corners = np.array(corners)
    assert len(corners) >= 12 and corners.mean() < 0.05 and (corners < 0.05).mean() >= 0.9


def test_auto_prefers_parsenet_and_falls_back_to_the_shipped_parser(tmp_path, monkeypatch):
    from faceres import weights

    monkeypatch.setenv("FACERES_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert parser_on_disk() == ("faceres-parser-v1" if SHIPPED.is_file() else None)
    (tmp_path / "parsing_parsenet.pth").write_bytes(b"stand-in")
    monkeypatch.setitem(weights.REGISTRY, "parsenet", dataclasses.replace(REGISTRY["parsenet"], size=None, sha256=None))
    assert parser_on_disk() == "parsenet"


def test_train_parser_command_runs_end_to_end(shared, tmp_path):
    """Two iterations on four faces at 64²: loading, augmentation, validation and the fp16 release file."""
    from faceres.checkpoints import load_model, read_metadata
    from faceres.cli import main

    root = tmp_path / "data"
    for sub, ext in (("images", "jpg"), ("masks", "png")):
        (root / sub).mkdir(parents=True)
        for path in sorted((shared / "data/celebahq-512" / sub).glob(f"*.{ext}"))[:4]:
            (root / sub / path.name).symlink_to(path)
    out = tmp_path / "parser.safetensors"
    sets = [f"data.root={root}", "data.size=64", "data.held_out=1", "train.total_iter=2", "train.batch_size=2", "train.print_every=1"]
    sets += [f"experiments_root={tmp_path / 'exp'}", f"output={out}", "train.threads=0"]
    assert main(["train-parser", "-opt", str(OPTIONS), *(a for s in sets for a in ("--set", s))]) == 0
    meta = read_metadata(out)
    assert meta["iter"] == 2 and 0 <= meta["val_kept_iou"] <= 1
    net, config = load_model(out)
    assert config["arch"] == "face_parser" and isinstance(net, FaceParserNet)
