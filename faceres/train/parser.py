"""Training the face parser (`faceres.archs.face_parser`) on CelebAMask-HQ-style label maps: every
image and mask is loaded once at the network's size and kept in RAM, so an epoch is only augmentation
and network time. Run: `faceres train-parser -opt options/train_face_parser.yml`.

The masks are in facexlib's ParseNet label order (CelebAMask-HQ's own `g_mask` order), the order the
network predicts, so they are used as they are: only a mirrored face has its left/right labels swapped.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..archs.face_parser import MIRRORED_LABELS, PARSE_KEEP, PARSE_LABELS, FaceParserNet
from ..checkpoints import save_model
from ..data.degradations import DegradationOpts, degrade, sample_params, to_gray3
from .options import OptionsError, from_dict, read_options


@dataclass
class ParserDataOpts:
    root: str = "${FACERES_SHARED}/data/celebahq-512"  # images/*.jpg and masks/*.png with the same stems
    size: int = 256
    held_out: int = 50  # the first files in sorted order: validation only


@dataclass
class ParserAugmentOpts:
    flip: bool = True
    scale: tuple[float, float] = (0.9, 1.1)
    rotation: float = 10.0  # degrees, either way
    shift: float = 0.05  # share of the size, either way
    color_prob: float = 0.8  # brightness, contrast, per-channel gain
    gray_prob: float = 0.1
    degrade_prob: float = 0.4
    degradation: DegradationOpts = field(default_factory=DegradationOpts)


@dataclass
class ParserNetOpts:
    enc: tuple[int, ...] = (16, 32, 64, 88, 112)
    dec: tuple[int, ...] = (64, 48, 32, 16)


@dataclass
class ParserTrainOpts:
    total_iter: int = 4000
    # on a shared machine: end earlier if this many minutes pass first; the cosine schedule then
    # follows the elapsed share of the time instead, so it still reaches zero (0: no limit)
    max_minutes: float = 0.0
    batch_size: int = 8
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_iter: int = 50
    val_every: int = 500
    print_every: int = 25
    seed: int = 0
    threads: int = 1  # torch threads; 0: torch's default (a small network gains little from more)


@dataclass
class ParserOptions:
    name: str = "face_parser"
    data: ParserDataOpts = field(default_factory=ParserDataOpts)
    augment: ParserAugmentOpts = field(default_factory=ParserAugmentOpts)
    network: ParserNetOpts = field(default_factory=ParserNetOpts)
    train: ParserTrainOpts = field(default_factory=ParserTrainOpts)
    experiments_root: str = "experiments"
    output: str = "weights/face_parser_v1.safetensors"  # fp16 release file, written at the end

    def arch_config(self) -> dict:
        return {"arch": "face_parser", "enc": list(self.network.enc), "dec": list(self.network.dec)}


def load_parser_options(path: str | Path, overrides: list[str] = ()) -> ParserOptions:
    """YAML (the training options' conventions: `base:`, `${VAR}`, --set overrides) -> ParserOptions."""
    opts = from_dict(ParserOptions, read_options(path, overrides))
    opts.augment.degradation.validate()
    if opts.data.size % 32:
        raise OptionsError(f"data.size must be a multiple of 32, got {opts.data.size}")
    return opts


# ---------------------------------------------------------------------------------------- labels

FLIP_LUT = np.arange(len(PARSE_LABELS), dtype=np.uint8)
for _left, _right in MIRRORED_LABELS:
    _l, _r = PARSE_LABELS.index(_left), PARSE_LABELS.index(_right)
    FLIP_LUT[_l], FLIP_LUT[_r] = _r, _l


def flip_pair(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror a face and its label map; the person's left becomes their right."""
    return image[:, ::-1].copy(), FLIP_LUT[labels[:, ::-1]]


# ---------------------------------------------------------------------------------------- data


def read_label_map(path: Path) -> np.ndarray:
    """A palette PNG's indices (OpenCV would expand the palette to colours)."""
    from PIL import Image

    with Image.open(path) as img:
        if img.mode not in ("P", "L"):
            raise ValueError(f"{path}: expected a palette or greyscale label map, got mode {img.mode}")
        labels = np.array(img)
    if labels.max() >= len(PARSE_LABELS):
        raise ValueError(f"{path}: label {labels.max()} outside the {len(PARSE_LABELS)} classes")
    return labels


def load_split(root: Path, size: int, held_out: int) -> tuple[dict, dict]:
    """{"images": (N, size, size, 3) uint8 RGB, "labels": (N, size, size) uint8} for train and val."""
    stems = sorted(p.stem for p in (root / "images").glob("*.jpg"))
    if not stems:
        raise FileNotFoundError(f"no images in {root / 'images'}")
    images, labels = [], []
    for stem in stems:
        bgr = cv2.imread(str(root / "images" / f"{stem}.jpg"), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"{root / 'images' / stem}.jpg: unreadable")
        mask = read_label_map(root / "masks" / f"{stem}.png")
        images.append(cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)[..., ::-1])
        labels.append(cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST))
    images, labels = np.stack(images), np.stack(labels)
    val = {"images": images[:held_out], "labels": labels[:held_out]}
    return {"images": images[held_out:], "labels": labels[held_out:]}, val


def random_affine(rng: np.random.Generator, size: int, aug: ParserAugmentOpts) -> np.ndarray:
    centre = (size / 2, size / 2)
    M = cv2.getRotationMatrix2D(centre, rng.uniform(-aug.rotation, aug.rotation), rng.uniform(*aug.scale))
    M[:, 2] += rng.uniform(-aug.shift, aug.shift, 2) * size
    return M


def jitter_colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """float RGB [0, 1]: contrast about the mean, brightness, and a gain per channel."""
    mean = image.mean()
    image = (image - mean) * rng.uniform(0.7, 1.3) + mean + rng.uniform(-0.1, 0.1)
    return np.clip(image * rng.uniform(0.85, 1.15, 3).astype(np.float32), 0, 1)


def augment(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, aug: ParserAugmentOpts) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB and labels -> float32 RGB [0, 1] and labels, jittered as in the pipeline's crops."""
    size = image.shape[0]
    if aug.flip and rng.random() < 0.5:
        image, labels = flip_pair(image, labels)
    M = random_affine(rng, size, aug)
    image = cv2.warpAffine(image, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    labels = cv2.warpAffine(labels, M, (size, size), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT101)
    x = image.astype(np.float32) / 255
    if rng.random() < aug.color_prob:
        x = jitter_colour(x, rng)
    if rng.random() < aug.degrade_prob:
        x = degrade(x, sample_params(rng, aug.degradation), aug.degradation.blur_kernel_size, aug.degradation.reference_size)
    if rng.random() < aug.gray_prob:
        x = to_gray3(x)
    return x, labels


def batch(split: dict, rng: np.random.Generator, n: int, aug: ParserAugmentOpts) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [augment(split["images"][i], split["labels"][i], rng, aug) for i in rng.integers(len(split["images"]), size=n)]
    x = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2) * 2 - 1
    return x.contiguous(), torch.from_numpy(np.stack([p[1] for p in pairs])).long()


# ---------------------------------------------------------------------------------------- metrics


@torch.no_grad()
def predict(net: FaceParserNet, images: np.ndarray, batch_size: int = 10) -> np.ndarray:
    """(N, H, W, 3) uint8 or float [0, 1] RGB -> (N, H, W) uint8 labels."""
    net.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.asarray(images[i : i + batch_size], np.float32))
        x = x / 255 if images.dtype == np.uint8 else x
        out.append(net(x.permute(0, 3, 1, 2) * 2 - 1).argmax(1).byte().numpy())
    return np.concatenate(out)


def iou_scores(pred: np.ndarray, truth: np.ndarray) -> dict:
    """mIoU over the labels present in truth or prediction, each label's IoU, and the IoU of the kept region."""
    n = len(PARSE_LABELS)
    confusion = np.bincount(truth.ravel().astype(np.int64) * n + pred.ravel(), minlength=n * n).reshape(n, n)
    inter = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - inter
    per_class = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    kept_pred, kept_truth = np.isin(pred, PARSE_KEEP), np.isin(truth, PARSE_KEEP)
    kept = (kept_pred & kept_truth).sum() / max((kept_pred | kept_truth).sum(), 1)
    return {"miou": float(np.nanmean(per_class)), "kept_iou": float(kept), "per_class": per_class.tolist()}


def degraded_copies(images: np.ndarray, seed: int = 1) -> np.ndarray:
    """The held-out faces through the paper's degradation, the same draws every time."""
    rng, opts = np.random.default_rng(seed), DegradationOpts()
    return np.stack([degrade(img.astype(np.float32) / 255, sample_params(rng, opts)) for img in images])


def validate(net: FaceParserNet, val: dict) -> dict:
    clean = iou_scores(predict(net, val["images"]), val["labels"])
    degraded = iou_scores(predict(net, val["degraded"]), val["labels"])
    return {**clean, "degraded_miou": degraded["miou"], "degraded_kept_iou": degraded["kept_iou"]}


# ---------------------------------------------------------------------------------------- loop


def progress(it: int, seconds: float, t: ParserTrainOpts) -> float:
    """Share of the run done, by iterations or by the time limit, whichever is further."""
    return max(it / t.total_iter, seconds / (60 * t.max_minutes) if t.max_minutes > 0 else 0.0)


def learning_rate(it: int, done: float, t: ParserTrainOpts) -> float:
    """Linear warm-up over the first iterations, then cosine to zero as `done` goes from 0 to 1."""
    if it < t.warmup_iter:
        return t.lr * (it + 1) / t.warmup_iter
    return 0.5 * t.lr * (1 + math.cos(math.pi * min(done, 1.0)))


def train_parser(opts: ParserOptions, log=print) -> dict:
    """Train from scratch, log to the console and experiments_root/name, write the fp16 release file."""
    t = opts.train
    torch.manual_seed(t.seed)
    rng = np.random.default_rng(t.seed)
    start = time.perf_counter()
    train, val = load_split(Path(opts.data.root), opts.data.size, opts.data.held_out)
    val["degraded"] = degraded_copies(val["images"])
    log(f"loaded {len(train['images'])} training and {len(val['images'])} held-out faces in {time.perf_counter() - start:.0f} s")
    net = FaceParserNet(enc=opts.network.enc, dec=opts.network.dec)
    log(f"face parser: {sum(p.numel() for p in net.parameters()):,} parameters")
    optim = torch.optim.AdamW(net.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    run_dir = Path(opts.experiments_root) / opts.name
    run_dir.mkdir(parents=True, exist_ok=True)
    it, start = 0, time.perf_counter()
    while (done := progress(it, time.perf_counter() - start, t)) < 1:
        net.train()
        lr = learning_rate(it, done, t)
        for group in optim.param_groups:
            group["lr"] = lr
        x, y = batch(train, rng, t.batch_size, opts.augment)
        loss = F.cross_entropy(net(x), y)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        it += 1
        if it % t.print_every == 0:
            log(f"iter {it:5d}  loss {loss.item():.4f}  lr {lr:.2e}  {(time.perf_counter() - start) / it:.2f} s/iter  done {done:.1%}")
        if it % t.val_every == 0:
            log_validation(net, val, it, log)
            save_model(net, run_dir / "face_parser_latest.safetensors", opts.arch_config(), extra={"iter": it})
    scores = log_validation(net, val, it, log)
    return release(net, opts, it, scores, (time.perf_counter() - start) / 60, log)


def log_validation(net: FaceParserNet, val: dict, it: int, log) -> dict:
    scores = validate(net, val)
    log(f"iter {it:5d}  val " + "  ".join(f"{k} {v:.4f}" for k, v in scores.items() if k != "per_class"))
    return scores


def release(net: FaceParserNet, opts: ParserOptions, iterations: int, scores: dict, minutes: float, log) -> dict:
    """The fp16 safetensors (architecture, iterations and validation scores in its metadata) and result.json."""
    per_class = {name: round(v, 4) for name, v in zip(PARSE_LABELS, scores["per_class"]) if v == v}
    meta = {"iter": iterations, "val_miou": round(scores["miou"], 4), "val_kept_iou": round(scores["kept_iou"], 4)}
    meta |= {"val_degraded_kept_iou": round(scores["degraded_kept_iou"], 4), "train_minutes": round(minutes, 1)}
    save_model(net, Path(opts.output), opts.arch_config(), half=True, extra=meta)
    run_dir = Path(opts.experiments_root) / opts.name
    (run_dir / "result.json").write_text(json.dumps({**meta, "per_class_iou": per_class, "options": asdict(opts)}, indent=1))
    log(f"wrote {opts.output}: {json.dumps(meta)}; per-class IoU {json.dumps(per_class)}")
    return meta


def train_from_file(path: str | Path, overrides: list[str] = ()) -> dict:
    opts = load_parser_options(path, overrides)
    if opts.train.threads:
        torch.set_num_threads(opts.train.threads)
    return train_parser(opts)
