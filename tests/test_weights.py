import functools
import hashlib
import http.server
import threading

import pytest
import torch

from faceres import weights
from faceres.archs import GPENGenerator
from faceres.checkpoints import load_model, load_state_dict_file
from faceres.cli import main
from faceres.files import FILE_MODE
from faceres.weights import WeightsError, WeightSpec, download, resolve


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FACERES_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("FACERES_OFFLINE", raising=False)
    monkeypatch.setattr(weights, "REPO_WEIGHTS_DIR", tmp_path / "repo_weights")
    return tmp_path


@pytest.fixture
def served(tmp_path):
    """A loopback HTTP server over tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def spec_for(data: bytes, url: str, **kw) -> WeightSpec:
    return WeightSpec("test-model", "model.bin", "restorer", url, hashlib.sha256(data).hexdigest(), len(data), **kw)


def test_resolution_order(isolated, monkeypatch):
    spec = WeightSpec("test-model", "m.pth", "restorer")
    monkeypatch.setitem(weights.REGISTRY, "test-model", spec)
    for d in ("env", "repo_weights", "cache/faceres"):
        (isolated / d).mkdir(parents=True, exist_ok=True)
        (isolated / d / "m.pth").write_bytes(d.encode())
    monkeypatch.setenv("FACERES_WEIGHTS_DIR", str(isolated / "env"))
    assert resolve("test-model") == isolated / "env/m.pth"
    (isolated / "env/m.pth").unlink()
    assert resolve("test-model") == isolated / "repo_weights/m.pth"
    (isolated / "repo_weights/m.pth").unlink()
    assert resolve("test-model") == isolated / "cache/faceres/m.pth"
    explicit = isolated / "elsewhere.pth"
    explicit.write_bytes(b"x")
    assert resolve(explicit) == explicit


def test_download_checks_and_renames_atomically(isolated, served):
    root, url = served
    data = b"weights" * 1000
    (root / "model.bin").write_bytes(data)
    path = download(spec_for(data, url + "model.bin"), isolated / "dl", progress=False)
    assert path.read_bytes() == data
    assert [p.name for p in (isolated / "dl").iterdir()] == ["model.bin"]
    assert path.stat().st_mode & 0o777 == FILE_MODE  # not mkstemp's 0600


def test_download_checksum_mismatch_leaves_nothing(isolated, served):
    root, url = served
    (root / "model.bin").write_bytes(b"tampered" * 1000)
    spec = spec_for(b"original" * 1000, url + "model.bin")
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        download(spec, isolated / "dl", progress=False)
    assert not list((isolated / "dl").iterdir())


def test_offline_download_gives_clear_message(isolated):
    spec = spec_for(b"x", "http://127.0.0.1:9/model.bin")  # discard port: connection refused
    with pytest.raises(WeightsError) as err:
        download(spec, isolated / "dl", progress=False)
    msg = str(err.value)
    assert "model.bin" in msg and "http://127.0.0.1:9/model.bin" in msg and "FACERES_WEIGHTS_DIR" in msg
    assert "\n" not in msg


def test_local_file_with_wrong_size_is_rejected(isolated, monkeypatch):
    monkeypatch.setitem(weights.REGISTRY, "test-model", WeightSpec("test-model", "m.pth", "restorer", "http://x/m.pth", size=10))
    (isolated / "repo_weights").mkdir()
    (isolated / "repo_weights/m.pth").write_bytes(b"123")
    with pytest.raises(WeightsError, match="truncated"):
        resolve("test-model")


def test_offline_env_disables_download(isolated, monkeypatch):
    monkeypatch.setenv("FACERES_OFFLINE", "1")
    with pytest.raises(WeightsError, match="downloading is off"):
        resolve("gpen-bfr-512")


def test_gpen_pth_loads_with_inferred_config(tmp_path):
    net = GPENGenerator(64, style_dim=64, n_mlp=2, channel_multiplier=1, narrow=0.25)
    path = tmp_path / "GPEN-custom.pth"
    torch.save({"g_ema": net.state_dict()}, path)  # train_simple checkpoint layout
    model, config = load_model(path)
    assert config["size"] == 64 and config["narrow"] == 0.25 and config["n_mlp"] == 2
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.restore(x), net.eval().restore(x))


def test_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed!",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": Evil()}, path)
    with pytest.raises(WeightsError, match="weights-only"):
        load_state_dict_file(path)


def test_weights_cli_list_and_verify(isolated, shared, monkeypatch, capsys):
    monkeypatch.setenv("FACERES_WEIGHTS_DIR", str(shared / "weights"))
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "gpen-bfr-512" in out and "not found" in out
    assert "retinaface-mobilenet0.25" in out and str(shared / "weights") in out
    assert main(["weights", "verify", "retinaface-mobilenet0.25", "yunet"]) == 0
    assert main(["weights", "verify", "gpen-bfr-256"]) == 1
