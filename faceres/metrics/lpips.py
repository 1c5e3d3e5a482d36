"""LPIPS v0.1 (Zhang et al. 2018) through the `lpips` package: its calibrated linear heads ship
in the wheel; the trunk is torchvision's ImageNet file, given here as a path (the caller resolves
it through faceres's registry) and loaded strictly, so a random trunk can never be scored."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

TRUNKS = {"alex": ("alexnet", "alexnet"), "vgg": ("vgg16", "vgg16")}  # lpips net -> (registry name, torchvision constructor)


class LPIPSError(RuntimeError):
    """The lpips package or a trunk file is unusable; the message is meant for the user."""


def _import_lpips():
    try:
        import lpips
    except ImportError:
        raise LPIPSError("LPIPS needs the lpips package: pip install 'faceres[metrics]'") from None
    return lpips


def _read_trunk(path: Path, constructor: str) -> dict[str, torch.Tensor]:
    """The torchvision checkpoint, checked key by key and shape by shape against torchvision's architecture."""
    import torchvision

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle with code, not a checkpoint
        raise LPIPSError(f"{path}: not a loadable torchvision checkpoint ({err.__class__.__name__})") from None
    with torch.device("meta"):  # shapes only, no initialisation cost
        expected = getattr(torchvision.models, constructor)().state_dict()
    if not isinstance(state, dict) or set(state) != set(expected):
        raise LPIPSError(f"{path}: its keys differ from torchvision's {constructor} checkpoint")
    bad = [k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
    if bad:
        raise LPIPSError(
            f"{path}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, torchvision's {constructor} has {tuple(expected[bad[0]].shape)}"
        )
    return state


def _trunk_to_lpips_keys(trunk_state: dict[str, torch.Tensor], lpips_net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """lpips splits torchvision's `features` Sequential into slice1..sliceN keeping each layer's index:
    features.3.weight -> slice2.3.weight. The classifier is not used."""
    slice_of = {idx: name for name, part in lpips_net.named_children() for idx in part._modules}
    out = {}
    for key, value in trunk_state.items():
        if key.startswith("features."):
            _, idx, param = key.split(".", 2)
            if idx in slice_of:
                out[f"{slice_of[idx]}.{idx}.{param}"] = value
    return out


class LPIPS:
    """LPIPS distance between float RGB images in [0, 1] (H, W, 3); 0 for identical images."""

    def __init__(self, net: str, trunk_path: str | Path, device: str | torch.device = "cpu"):
        if net not in TRUNKS:
            raise LPIPSError(f"LPIPS net {net!r}: choose one of {', '.join(TRUNKS)}")
        lpips = _import_lpips()
        self.net_name = net
        # pnet_rand: lpips builds an uninitialised trunk instead of downloading one; it is replaced just below.
        with warnings.catch_warnings():  # torchvision's notice about lpips's `pretrained=` argument
            warnings.simplefilter("ignore", UserWarning)
            model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
        heads = torch.load(Path(lpips.__file__).parent / f"weights/v0.1/{net}.pth", map_location="cpu", weights_only=True)
        model.load_state_dict({**model.state_dict(), **heads}, strict=True)  # lpips itself loads the heads with strict=False
        trunk = _read_trunk(Path(trunk_path), TRUNKS[net][1])
        model.net.load_state_dict(_trunk_to_lpips_keys(trunk, model.net), strict=True)
        self.model = model.eval().to(device)
        self.device = torch.device(device)

    def _tensor(self, rgb: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(rgb, np.float32)).permute(2, 0, 1)[None].to(self.device)

    @torch.no_grad()
    def __call__(self, a: np.ndarray, b: np.ndarray) -> float:
        if a.shape != b.shape:
            raise ValueError(f"LPIPS needs images of one size, got {a.shape} and {b.shape}")
        return float(self.model(self._tensor(a), self._tensor(b), normalize=True).item())  # normalize: [0, 1] -> [-1, 1]
