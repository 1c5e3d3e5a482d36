"""LPIPS plumbing with trunks in torchvision's file format (random weights, same keys): the values
below only check the loader and the distance's shape, they are not LPIPS figures."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from faceres import weights
from faceres.metrics.lpips import LPIPS, LPIPSError
from faceres.metrics.suite import load_suite, weights_file

lpips_package = pytest.importorskip("lpips", reason="LPIPS needs the lpips package (dev/metrics extra)")


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    d = tmp_path / "weights"
    d.mkdir()
    monkeypatch.setenv("FACERES_WEIGHTS_DIR", str(d))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return d


def random_trunk(weights_dir, monkeypatch, name: str, constructor) -> dict:
    """A torchvision checkpoint with random weights under the official file name; random weights have no
    published checksum, so the registry entry keeps its file name and drops size and sha256."""
    spec = weights.REGISTRY[name]
    monkeypatch.setitem(weights.REGISTRY, name, dataclasses.replace(spec, size=None, sha256=None))
    torch.manual_seed(0)
    state = constructor().state_dict()
    torch.save(state, weights_dir / spec.filename)
    return state


def noisy(x, sigma, seed=1):
    return np.clip(x + np.random.default_rng(seed).normal(0, sigma, x.shape), 0, 1).astype(np.float32)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_loads_trunk_and_heads_and_measures_distance(weights_dir, monkeypatch, net):
    import torchvision

    registry_name = {"alex": "alexnet", "vgg": "vgg16"}[net]
    state = random_trunk(weights_dir, monkeypatch, registry_name, getattr(torchvision.models, registry_name))
    path = weights_file(registry_name, "LPIPS", notes := [])
    assert path == weights_dir / weights.REGISTRY[registry_name].filename and notes == []
    metric = LPIPS(net, path)
    loaded = metric.model.net.state_dict()
    assert torch.equal(loaded["slice1.0.weight"], state["features.0.weight"])
    last = max(int(k.split(".")[1]) for k in state if k.startswith("features.") and k.endswith("weight"))
    assert torch.equal(loaded[f"slice5.{last}.weight"], state[f"features.{last}.weight"])  # deepest conv used by LPIPS
    heads = torch.load(Path(lpips_package.__file__).parent / f"weights/v0.1/{net}.pth", weights_only=True, map_location="cpu")
    assert torch.equal(metric.model.lin0.model[1].weight, heads["lin0.model.1.weight"])

    x = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    assert metric(x, x) == 0.0
    d = [metric(x, noisy(x, s)) for s in (0.02, 0.1, 0.3)]
    assert 0 < d[0] < d[1] < d[2], d
    with pytest.raises(ValueError, match="one size"):
        metric(x, x[:32])


def test_lpips_refuses_a_file_of_another_architecture(tmp_path):
    import torchvision

    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(torchvision.models.squeezenet1_1().state_dict(), path)
    with pytest.raises(LPIPSError, match="keys differ from torchvision's alexnet"):
        LPIPS("alex", path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(LPIPSError, match="not a loadable"):
        LPIPS("alex", path)


def test_missing_trunk_leaves_lpips_out_with_one_line(weights_dir, tmp_path):
    suite = load_suite(tmp_path, "alex", fid_ref=None, identity=False, progress=False)
    assert suite.lpips is None and not any(name.startswith("LPIPS") for name in suite.ran(True))
    line = next(n for n in suite.notes if n.startswith("LPIPS"))
    assert "alexnet-owt-7be5be79.pth not found" in line and "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in line
    assert "\n" not in line
