import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FACERES_SHARED", ROOT.parent / "shared"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED} (set FACERES_SHARED to the folder holding data/ and weights/)")
    return SHARED


@pytest.fixture(scope="session")
def fixtures_dir(shared) -> Path:
    from recipes import reference_dir

    return reference_dir(shared, "gpen")


TINY_ARCH = dict(arch="codec_prior", size=128, style_dim=64, n_mlp=2, channel_multiplier=1, narrow=0.125)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A real (randomly initialised) faceres network saved the way shipped models are."""
    from faceres.archs import CodecPriorNet
    from faceres.checkpoints import save_model

    torch.manual_seed(0)
    net = CodecPriorNet(**{k: v for k, v in TINY_ARCH.items() if k != "arch"})
    for name, p in net.generator.named_parameters():  # let the decoder features matter, as after training
        if name.endswith("noise.weight"):
            p.data.fill_(1.0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(net, path, TINY_ARCH)
    return path


@pytest.fixture
def weights_env(shared, monkeypatch):
    monkeypatch.setenv("FACERES_WEIGHTS_DIR", str(shared / "weights"))
    return shared / "weights"
