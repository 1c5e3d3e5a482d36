"""FID plumbing with an Inception file in pytorch-fid's format (random weights, same keys): the
values below check the loader, the statistics and the distance, they are not FID figures."""

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from faceres import weights
from faceres.cli import main
from faceres.metrics.fid import FIDError, FIDStats, InceptionFeatures, frechet_distance, load_stats, save_stats, statistics

fid_inception = pytest.importorskip("pytorch_fid.inception", reason="FID needs the pytorch-fid package (dev/metrics extra)")


def random_fid_inception_state() -> dict:
    """pytorch-fid's FID Inception (torchvision's Inception3 with its patched blocks) with random weights,
    He-initialised so that activations neither vanish (denormals are very slow on CPU) nor explode."""
    torch.manual_seed(0)
    net = fid_inception._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    blocks = {
        "Mixed_5b": fid_inception.FIDInceptionA(192, 32),
        "Mixed_5c": fid_inception.FIDInceptionA(256, 64),
        "Mixed_5d": fid_inception.FIDInceptionA(288, 64),
        "Mixed_6b": fid_inception.FIDInceptionC(768, 128),
        "Mixed_6c": fid_inception.FIDInceptionC(768, 160),
        "Mixed_6d": fid_inception.FIDInceptionC(768, 160),
        "Mixed_6e": fid_inception.FIDInceptionC(768, 192),
        "Mixed_7b": fid_inception.FIDInceptionE_1(1280),
        "Mixed_7c": fid_inception.FIDInceptionE_2(2048),
    }
    for name, block in blocks.items():
        setattr(net, name, block)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return net.state_dict()


@pytest.fixture(scope="module")
def inception_state():
    return random_fid_inception_state()


@pytest.fixture
def inception_file(inception_state, tmp_path, monkeypatch):
    """The official file name in a fresh FACERES_WEIGHTS_DIR; random weights have no published checksum, so the
    registry entry keeps its file name and drops size and sha256."""
    d = tmp_path / "weights"
    d.mkdir()
    monkeypatch.setenv("FACERES_WEIGHTS_DIR", str(d))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    spec = weights.REGISTRY["inception-fid"]
    monkeypatch.setitem(weights.REGISTRY, "inception-fid", dataclasses.replace(spec, size=None, sha256=None))
    torch.save(inception_state, d / spec.filename)
    return weights.resolve("inception-fid", allow_download=False)


def images(n, seed, size=48):
    rng = np.random.default_rng(seed)
    return [cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (0, 0), 1.5) for _ in range(n)]


def test_frechet_distance_hand_computed_and_matches_pytorch_fid():
    from pytorch_fid.fid_score import calculate_frechet_distance

    d = 16
    a, b = FIDStats(np.zeros(d), np.eye(d), 10), FIDStats(np.ones(d), 4 * np.eye(d), 10)
    assert frechet_distance(a, b) == pytest.approx(d + d + 4 * d - 2 * 2 * d)  # |mu|^2 + tr + tr - 2 tr sqrt(4 I)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 64)), rng.normal(0.3, 1.5, size=(150, 64)) @ rng.normal(size=(64, 64)) / 8
    sx, sy = statistics(x), statistics(y)
    ours = frechet_distance(sx, sy)
    assert ours == pytest.approx(calculate_frechet_distance(sx.mu, sx.sigma, sy.mu, sy.sigma), rel=1e-6)
    with pytest.raises(FIDError, match="at least 2"):
        statistics(x[:1])


@pytest.mark.slow  # Inception at 299x299 and a 2048x2048 eigendecomposition: 10-30 s on 2 shared cores
def test_inception_loads_strictly_and_fid_of_a_set_against_itself_is_zero(inception_file, inception_state):
    extractor = InceptionFeatures(inception_file)
    loaded = extractor.model.state_dict()
    assert torch.equal(loaded["blocks.0.0.conv.weight"], inception_state["Conv2d_1a_3x3.conv.weight"])
    assert torch.equal(loaded["blocks.3.2.branch_pool.conv.weight"], inception_state["Mixed_7c.branch_pool.conv.weight"])
    feats = extractor(images(3, 0) + [np.zeros((32, 40, 3), np.float32)])  # two sizes: two batches
    assert feats.shape == (4, 2048) and np.isfinite(feats).all() and feats.std() > 0
    assert np.allclose(extractor(images(1, 0))[0], feats[0], atol=1e-4 * np.abs(feats).max())  # batching does not change a feature
    own = statistics(feats)
    assert abs(frechet_distance(own, own)) < 1e-6 * np.trace(own.sigma)


def test_inception_file_of_another_format_is_refused(inception_state, tmp_path):
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save({k: v for k, v in inception_state.items() if not k.startswith("fc.")}, path)
    with pytest.raises(FIDError, match="not pytorch-fid's Inception file"):
        InceptionFeatures(path)


def test_statistics_files_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    stats = statistics(rng.normal(size=(20, 8)))
    loaded = load_stats(save_stats(tmp_path / "s.npz", stats))
    assert loaded.n == 20 and np.allclose(loaded.mu, stats.mu) and np.allclose(loaded.sigma, stats.sigma)
    torch.save({"name": "FFHQ", "size": 512, "mean": stats.mu, "cov": stats.sigma}, tmp_path / "inception_FFHQ_512.pth")  # BasicSR
    basicsr = load_stats(tmp_path / "inception_FFHQ_512.pth")
    assert basicsr.n is None and np.allclose(basicsr.sigma, stats.sigma)
    np.savez(tmp_path / "bad.npz", mu=stats.mu, sigma=stats.sigma[:3])
    with pytest.raises(FIDError, match="do not fit"):
        load_stats(tmp_path / "bad.npz")
    with pytest.raises(FIDError, match="not a FID statistics file"):
        load_stats(tmp_path / "missing.npz")


@pytest.mark.slow  # Inception at 299x299 and a 2048x2048 eigendecomposition: 10-30 s on 2 shared cores
def test_fid_stats_command_and_evaluate_against_stored_statistics(inception_file, tmp_path, capsys):
    folder = tmp_path / "faces"
    folder.mkdir()
    for i, img in enumerate(images(2, 5, size=64)):
        cv2.imwrite(str(folder / f"{i}.png"), (img * 255).astype(np.uint8))
    assert main(["fid-stats", str(folder), "-o", str(tmp_path / "ref.npz"), "--device", "cpu"]) == 0
    assert "2 images" in capsys.readouterr().out
    assert load_stats(tmp_path / "ref.npz").n == 2
    assert (
        main(["evaluate", "--restored", str(folder), "--fid-ref", str(tmp_path / "ref.npz"), "-o", str(tmp_path / "ev"), "--device", "cpu"])
        == 0
    )
    out = capsys.readouterr().out
    assert "fid ↓" in out and "FID vs " in out and "2 images (< 2048" in out
    import json

    means = json.loads((tmp_path / "ev/metrics.json").read_text())["mean"][str(folder)]
    assert means["fid n"] == 2 and abs(means["fid"]) < 1e-6 * np.trace(load_stats(tmp_path / "ref.npz").sigma)
