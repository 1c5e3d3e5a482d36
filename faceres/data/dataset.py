"""Aligned HQ faces -> (LQ, GT, component boxes) pairs, reproducible from (seed, iteration)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .components import component_boxes, components_from_68, load_landmarks
from .degradations import DegradationOpts, degrade, prepare_gt, sample_params

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class DatasetOpts:
    dataroot: str
    size: int = 512
    use_hflip: bool = True
    center_crop: bool = False  # central square crop first (CelebA aligned 178x218)
    landmarks: str | None = None  # landmarks68.json from `faceres prepare-landmarks`
    subset: tuple[int | None, int | None] = (None, None)  # slice over the sorted file list
    degradation: DegradationOpts = field(default_factory=DegradationOpts)
    num_workers: int = 0
    # decoded faces kept in RAM, least recently used dropped first; per process (each DataLoader
    # worker has its own); 0 = decode every time. 512² RGB is 0.75 MB a face
    cache_mb: float = 2048


def list_faces(root: str | Path, subset=(None, None)) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    files = files[slice(*subset)]
    if not files:
        raise FileNotFoundError(f"no images in {root} (subset {subset})")
    return files


def load_face(path: Path, size: int, center_crop: bool) -> tuple[np.ndarray, float, tuple[int, int]]:
    """uint8 RGB (size, size, 3), the scale applied and the crop offset (x, y)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{path}: cannot decode image")
    img = img[..., ::-1]
    h, w = img.shape[:2]
    ox = oy = 0
    if center_crop and h != w:
        side = min(h, w)
        ox, oy = (w - side) // 2, (h - side) // 2
        img = img[oy : oy + side, ox : ox + side]
    side = img.shape[1]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(img, (size, size), interpolation=interp)), size / side, (ox, oy)


class ArrayCache:
    """An LRU of decoded faces bounded by the bytes of their arrays; values are (array, ...) tuples."""

    def __init__(self, max_mb: float):
        self.max_bytes = int(max_mb * 2**20)
        self.items: OrderedDict[int, tuple] = OrderedDict()
        self.nbytes = 0

    def __len__(self):
        return len(self.items)

    def get(self, key: int, load):
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = load()
        size = value[0].nbytes
        if size <= self.max_bytes:
            self.items[key] = value
            self.nbytes += size
            while self.nbytes > self.max_bytes:
                _, old = self.items.popitem(last=False)
                self.nbytes -= old[0].nbytes
        return value


class FaceDataset(Dataset):
    """Items are requested as (index, seed): the seed fixes flip and degradation for that draw."""

    def __init__(self, opts: DatasetOpts):
        opts.degradation.validate()
        self.opts = opts
        self.files = list_faces(opts.dataroot, opts.subset)
        self.landmarks = load_landmarks(Path(opts.landmarks)) if opts.landmarks else None
        if self.landmarks is not None:
            missing = [f.name for f in self.files if f.name not in self.landmarks]
            if missing:
                raise ValueError(f"{opts.landmarks}: no landmarks for {len(missing)} images, e.g. {missing[0]}")
        if opts.cache_mb < 0:
            raise ValueError(f"cache_mb must be >= 0 (0 = no cache), got {opts.cache_mb}")
        self.cache = ArrayCache(opts.cache_mb)

    def __len__(self):
        return len(self.files)

    def _face(self, index: int):
        return self.cache.get(index, lambda: load_face(self.files[index], self.opts.size, self.opts.center_crop))

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, key)
        rng = np.random.default_rng(seed)
        img, scale, (ox, oy) = self._face(index)
        flip = self.opts.use_hflip and rng.random() < 0.5
        gt = img[:, ::-1] if flip else img
        gt = gt.astype(np.float32) / 255.0
        params = sample_params(rng, self.opts.degradation)
        gt = prepare_gt(gt, params)
        lq = degrade(gt, params, self.opts.degradation.blur_kernel_size, self.opts.degradation.reference_size)
        item = {"lq": to_tensor(lq), "gt": to_tensor(gt), "index": index}
        if self.landmarks is not None:
            pts = self.landmarks[self.files[index].name] - np.array([ox, oy], np.float32)
            comp = components_from_68(pts * scale, size=self.opts.size)
            item["boxes"] = torch.from_numpy(component_boxes(comp, self.opts.size, flip))
        return item


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """float RGB [0, 1] HWC -> CHW in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))) * 2 - 1


class IterationSampler(Sampler):
    """Yields (index, seed) for iterations start..total; the same (seed, iteration) always gives
    the same batch, so a resumed run sees exactly the data a straight run would."""

    def __init__(self, n: int, batch_size: int, seed: int, total_iter: int, start_iter: int = 0, rank: int = 0, world: int = 1):
        self.n, self.batch, self.seed = n, batch_size, seed
        self.total, self.start, self.rank, self.world = total_iter, start_iter, rank, world
        self.per_epoch = max(1, n // (batch_size * world))

    def __len__(self):
        return (self.total - self.start) * self.batch

    def __iter__(self):
        perm_epoch, perm = -1, None
        for t in range(self.start, self.total):
            epoch, pos = divmod(t, self.per_epoch)
            if epoch != perm_epoch:
                perm, perm_epoch = np.random.default_rng([self.seed, epoch]).permutation(self.n), epoch
            base = (pos * self.world + self.rank) * self.batch
            for j in range(self.batch):
                yield int(perm[(base + j) % self.n]), int(np.random.default_rng([self.seed, t, self.rank, j]).integers(2**62))
