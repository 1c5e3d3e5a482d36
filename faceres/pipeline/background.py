"""Optional helpers around the face network: a Real-ESRGAN background upsampler and a
face-parsing mask for paste-back (weights files; see `faceres weights list`: faceres's own parser
ships in weights/, facexlib's ParseNet and Real-ESRGAN are downloads)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from ..archs.face_parser import PARSE_KEEP
from ..archs.rrdbnet import RRDBNet
from ..checkpoints import is_safetensors, load_model, load_state_dict_file, read_metadata
from ..weights import REGISTRY, WeightsError, find_local, resolve

KEPT_RAMP = 0.1  # probability span around 0.5 over which a pixel goes from left to kept


class RealESRGANUpsampler:
    """x2 RRDBNet over tiles (bounded memory on large photos)."""

    scale = 2

    def __init__(self, weights: str = "realesrgan-x2", device: str | torch.device = "cpu", tile: int = 400, pad: int = 10):
        sd = load_state_dict_file(resolve(weights))
        num_block = len({k.split(".")[1] for k in sd if k.startswith("body.")})
        num_feat = sd["conv_first.weight"].shape[0]
        num_grow = sd["body.0.rdb1.conv1.weight"].shape[0]
        self.net = RRDBNet(3, 3, scale=2, num_feat=num_feat, num_block=num_block, num_grow_ch=num_grow)
        self.net.load_state_dict(sd, strict=True)
        self.net = self.net.to(device).eval()
        self.device, self.tile, self.pad = torch.device(device), tile, pad

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
        """float RGB [0, 1] -> upsampled x2 tile by tile, then resized to out_size (w, h)."""
        h, w = rgb.shape[:2]
        out = np.zeros((h * 2, w * 2, 3), np.float32)
        for y in range(0, h, self.tile):
            for x in range(0, w, self.tile):
                y0, x0 = max(0, y - self.pad), max(0, x - self.pad)
                y1, x1 = min(h, y + self.tile + self.pad), min(w, x + self.tile + self.pad)
                patch = rgb[y0:y1, x0:x1]
                ph, pw = patch.shape[:2]  # pixel-unshuffle needs even sides
                patch = np.pad(patch, ((0, ph % 2), (0, pw % 2), (0, 0)), mode="reflect")
                t = torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1)))[None].to(self.device)
                up = self.net(t)[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy()[: ph * 2, : pw * 2]
                ty, tx = min(y + self.tile, h), min(x + self.tile, w)
                out[2 * y : 2 * ty, 2 * x : 2 * tx] = up[2 * (y - y0) : 2 * (ty - y0), 2 * (x - x0) : 2 * (tx - x0)]
        return cv2.resize(out, out_size, interpolation=cv2.INTER_LANCZOS4) if out_size != (w * 2, h * 2) else out


# preference order of `parse: auto`: facexlib's ParseNet when its file is on disk, else faceres's own parser
PARSER_WEIGHTS = ("parsenet", "faceres-parser-v1")


def parser_on_disk() -> str | None:
    """The first of PARSER_WEIGHTS found locally and intact; None when there is none."""
    for name in PARSER_WEIGHTS:
        try:
            if find_local(REGISTRY[name]) is not None:
                return name
        except WeightsError:  # a corrupt copy: as if absent (`faceres weights verify` names it)
            continue
    return None


def is_faceres_parser(path: Path) -> bool:
    return is_safetensors(path) and read_metadata(path).get("arch", {}).get("arch") == "face_parser"


class FaceParser:
    """Soft mask of the face region of a restored crop, by facexlib's ParseNet (512²) or faceres's
    own parser (256², `faceres.archs.face_parser`), whichever the weights hold. Both predict the 19
    CelebAMask-HQ labels in the same order, so PARSE_KEEP means the same for either."""

    def __init__(self, weights: str = "faceres-parser-v1", device: str | torch.device = "cpu"):
        path = resolve(weights)
        if is_faceres_parser(path):
            self.net, self.in_size = load_model(path)[0], 256
        else:
            from facexlib.parsing.parsenet import ParseNet

            self.net, self.in_size = ParseNet(in_size=512, out_size=512, parsing_ch=19), 512
            self.net.load_state_dict(load_state_dict_file(path), strict=True)
        self.net = self.net.to(device).eval()
        self.device = torch.device(device)

    @torch.no_grad()
    def logits(self, face_rgb: np.ndarray) -> torch.Tensor:
        """float RGB [0, 1] crop -> (1, 19, in_size, in_size) logits."""
        shrink = face_rgb.shape[0] > self.in_size
        x = cv2.resize(face_rgb, (self.in_size, self.in_size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].float().to(self.device) * 2 - 1
        out = self.net(t)
        return (out[0] if isinstance(out, (tuple, list)) else out).float()  # ParseNet returns (parsing, image)

    def labels(self, face_rgb: np.ndarray) -> np.ndarray:
        """float RGB [0, 1] crop -> (in_size, in_size) label map."""
        return self.logits(face_rgb).argmax(1)[0].byte().cpu().numpy()

    def mask(self, face_rgb: np.ndarray) -> np.ndarray:
        """float mask in [0, 1] of the kept labels, at the crop's size. Where the kept labels' probability
        is near 0.5 the mask ramps instead of switching (as an argmax would), so a tiny change of the face
        (another batch size, bf16) changes the mask as little."""
        p_kept = self.logits(face_rgb).softmax(1)[0, list(PARSE_KEEP)].sum(0)
        kept = ((p_kept - 0.5) / KEPT_RAMP + 0.5).clamp(0, 1)
        return blurred_mask(kept.cpu().numpy(), face_rgb.shape[0])


def blurred_mask(kept: np.ndarray, size: int) -> np.ndarray:
    """Kept-region map (1 kept, 0 not) of any size -> size x size, blurred as at ParseNet's 512² whatever its size."""
    m = cv2.resize(kept, (512, 512), interpolation=cv2.INTER_LINEAR) if kept.shape[0] != 512 else kept
    m = cv2.GaussianBlur(m, (101, 101), 11)
    m = cv2.GaussianBlur(m, (101, 101), 11)
    return np.clip(cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR), 0, 1)
