"""Optional helpers around the face network: a Real-ESRGAN background upsampler and a
face-parsing mask for paste-back (both need weights files; see `faceres weights list`)."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ..archs.rrdbnet import RRDBNet
from ..checkpoints import load_state_dict_file
from ..weights import resolve

# facexlib/ParseNet labels kept in the paste mask: face, brows, eyes, glasses, ears, nose, mouth,
# lips, hair (1-13) and earrings (15); background, hat, neck and cloth are left to the photo.
PARSE_KEEP = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15)


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


class FaceParser:
    """facexlib's ParseNet (512², 19 classes) -> soft mask of the face region of a restored crop."""

    def __init__(self, weights: str = "parsenet", device: str | torch.device = "cpu"):
        from facexlib.parsing.parsenet import ParseNet

        self.net = ParseNet(in_size=512, out_size=512, parsing_ch=19)
        self.net.load_state_dict(load_state_dict_file(resolve(weights)), strict=True)
        self.net = self.net.to(device).eval()
        self.device = torch.device(device)

    @torch.no_grad()
    def mask(self, face_rgb: np.ndarray) -> np.ndarray:
        size = face_rgb.shape[0]
        x = cv2.resize(face_rgb, (512, 512), interpolation=cv2.INTER_LINEAR)
        t = torch.from_numpy(x.transpose(2, 0, 1))[None].to(self.device) * 2 - 1
        labels = self.net(t)[0].argmax(1)[0].cpu().numpy()
        m = np.isin(labels, PARSE_KEEP).astype(np.float32)
        m = cv2.GaussianBlur(m, (101, 101), 11)
        m = cv2.GaussianBlur(m, (101, 101), 11)
        return cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR)
