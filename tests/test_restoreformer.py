"""RestoreFormer (the GFPGAN repo's version) against the upstream reference tensors
(shared/reference/restoreformer-fixtures), strict loading of files in the released layout
(`params_ema` else `params`), and `faceres restore` with such a file."""

import hashlib
import json
import re

import cv2
import pytest
import recipes
import torch
import torch.nn.functional as F

from faceres.archs import RestoreFormer
from faceres.checkpoints import load_model, restoreformer_config_from_state_dict
from faceres.cli import main
from faceres.weights import REGISTRY, WeightsError

TOL = dict(rtol=1e-4, atol=1e-4)  # README §6: every tensor; the codes exactly
RELEASE = dict(n_embed=1024, embed_dim=256, ch=64, ch_mult=[1, 2, 2, 4, 4, 8], num_res_blocks=2, resolution=512, z_channels=256, heads=8)


@pytest.fixture(scope="module")
def rf_dir(shared):
    return recipes.reference_dir(shared, "restoreformer")


@pytest.fixture(scope="module")
def fx64(rf_dir):
    return torch.load(rf_dir / "restoreformer64.pt", weights_only=True)


def our_config(upstream: dict) -> dict:
    """Upstream constructor kwargs -> ours: training flags dropped, `head_size` (really the head count) -> heads."""
    cfg = dict(upstream)
    assert cfg.pop("dropout") == 0.0 and cfg.pop("double_z") is False and cfg.pop("enable_mid") is True
    assert cfg.pop("in_channels") == 3 and cfg.pop("out_ch") == 3
    for flag in ("fix_decoder", "fix_codebook", "fix_encoder"):  # requires_grad only
        cfg.pop(flag)
    levels = len(cfg["ch_mult"])
    assert list(cfg.pop("attn_resolutions")) == [cfg["resolution"] >> (levels - 1)]  # attention at the lowest level only
    cfg["heads"] = cfg.pop("head_size")
    return {**cfg, "ch_mult": list(cfg["ch_mult"])}


def code_gap(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Second-smallest minus smallest squared distance per position (B, H*W)."""
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    d = flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1) - 2 * flat @ codebook.t()
    two = d.topk(2, dim=1, largest=False).values
    return (two[:, 1] - two[:, 0]).view(z.shape[0], -1)


def assert_codes(net: RestoreFormer, x: torch.Tensor, ref: dict):
    with torch.no_grad():
        z, _ = net.encode(x)
    assert torch.equal(net.quantize.nearest(z), ref["vq_indices"])  # exact, as the README asks
    torch.testing.assert_close(z, ref["vq_input"], **TOL)
    torch.testing.assert_close(code_gap(z, net.quantize.embedding.weight), ref["vq_dist_gap"], **TOL)


# ---------------------------------------------------------------- small configuration, stored fp16 weights


def test_small_fixture_reproduces_every_tensor(fx64):
    net = RestoreFormer(**our_config(fx64["config"])).eval()
    net.load_state_dict(fx64["state_dict"], strict=True)  # fp16 -> fp32 on copy, as the README prescribes
    x = fx64["input"]
    assert_codes(net, x, fx64)
    with torch.no_grad():
        z, hs = net.encoder(x)
        out = net(x)
    torch.testing.assert_close(z, fx64["encoder_hs"]["out"], **TOL)
    torch.testing.assert_close(hs["block"], fx64["encoder_hs"]["block_2_atten"], **TOL)
    torch.testing.assert_close(hs["mid"], fx64["encoder_hs"]["mid_atten"], **TOL)
    torch.testing.assert_close(out, fx64["output"], **TOL)


@pytest.mark.parametrize("wrapper", ["params_ema", "params", "both"])
def test_wrappers_and_inferred_small_config_reproduce_fixture(fx64, tmp_path, wrapper):
    sd = fx64["state_dict"]
    decoy = {k: torch.zeros_like(v) for k, v in sd.items()}
    torch.save({"params": decoy, "params_ema": sd} if wrapper == "both" else {wrapper: sd}, tmp_path / "RestoreFormer.pth")
    net, config = load_model(tmp_path / "RestoreFormer.pth")  # GFPGANer: params_ema if present, else params
    assert config == {"arch": "restoreformer", **our_config(fx64["config"])}
    with torch.no_grad():
        torch.testing.assert_close(net(fx64["input"]), fx64["output"], **TOL)


def test_restore_is_deterministic_clamped_and_refuses_fidelity(fx64):
    net = RestoreFormer(**our_config(fx64["config"])).eval()
    net.load_state_dict(fx64["state_dict"], strict=True)
    with torch.no_grad():
        first, second = net.restore(fx64["input"]), net.restore(fx64["input"])
    assert torch.equal(first, second)
    torch.testing.assert_close(first, fx64["output"].clamp(-1, 1), **TOL)
    assert fx64["output"].abs().max() > 1 and first.abs().max() <= 1
    assert net.spec.size == net.size == 64 and net.spec.template == "ffhq" and not net.spec.has_fidelity
    with pytest.raises(ValueError, match="no fidelity control"):
        net.restore(fx64["input"], fidelity=0.5)


def test_bad_files(fx64, tmp_path):
    sd = dict(fx64["state_dict"])
    del sd["decoder.up.2.attn.1.q.bias"]
    torch.save({"params_ema": sd}, tmp_path / "broken.pth")
    with pytest.raises(WeightsError, match=r"broken\.pth: does not match .*up\.2\.attn\.1\.q\.bias"):
        load_model(tmp_path / "broken.pth")
    del sd["encoder.conv_in.weight"]
    with pytest.raises(WeightsError, match="not a RestoreFormer state_dict"):
        restoreformer_config_from_state_dict(sd)


# ---------------------------------------------------------------- the released configuration (README §5)


@pytest.fixture(scope="module")
def released(rf_dir, tmp_path_factory):
    """The released key list with recipe weights, saved as RestoreFormer.pth ({'params_ema': ...}) and read back
    through load_model. The 290 MB file is deleted once loaded."""
    keys = json.loads((rf_dir / "keys_restoreformer_512.json").read_text())["keys"]
    path = tmp_path_factory.mktemp("restoreformer") / "RestoreFormer.pth"
    torch.save({"params_ema": {key: recipes.recipe_value(key, shape) for key, shape, _ in keys}}, path)
    net, config = load_model(path)
    path.unlink()
    return net, config, keys


@pytest.fixture(scope="module")
def ref512(rf_dir):
    return torch.load(rf_dir / "restoreformer512_recipe.pt", weights_only=True)


def test_released_key_list_loads_strictly_with_inferred_config(released, ref512):
    net, config, keys = released
    assert len(keys) == 405
    assert config == {"arch": "restoreformer", **RELEASE}
    assert isinstance(net, RestoreFormer) and net.size == 512 and not net.spec.has_fidelity
    own = net.state_dict()
    assert [(k, list(v.shape)) for k, v in own.items()] == [(k, s) for k, s, _ in keys]  # same keys, shapes and order
    assert sum(v.numel() for v in own.values()) == 72_680_003 and not list(net.buffers())  # README §3
    order = ref512["recipe_check"]["keys"]
    assert [hashlib.sha256(own[k].numpy().tobytes()).hexdigest() for k in order] == ref512["recipe_check"]["sha256"]
    assert hashlib.sha256(b"".join(own[k].numpy().tobytes() for k in order)).hexdigest() == ref512["recipe_check"]["sha256_all"]


@pytest.mark.slow  # the 512 network on a batch of 2: about 45 s on 2 busy cores
def test_release_configuration_reproduces_recipe_fixture(released, ref512):
    net = released[0]
    u8 = recipes.input_u8()
    assert hashlib.sha256(u8.numpy().tobytes()).hexdigest() == ref512["input_u8_sha256"]
    x = ((u8.double() / 255.0).float() - 0.5) / 0.5
    assert_codes(net, x, ref512)
    with torch.no_grad():
        out = net(x)
    flat = out.double().flatten(2)
    views = {
        "grid_a": out[..., ::8, ::8],
        "grid_b": out[..., 7::8, 7::8],
        "pool8": F.avg_pool2d(out, 8),
        "stats": torch.stack([flat.mean(2), flat.std(2), flat.amin(2), flat.amax(2), flat.abs().mean(2)], dim=2),
    }
    for key, ours in views.items():
        torch.testing.assert_close(ours, ref512["output"][key].to(ours.dtype), **TOL, msg=lambda m, key=key: f"{key}: {m}")


# ---------------------------------------------------------------- end to end through the pipeline


def test_cli_restores_with_released_format_file_and_refuses_fidelity(fx64, weights_env, shared, tmp_path, capsys):
    """The small fixture network in a RestoreFormer.pth-format file ({'params_ema': ...}): 64^2 FFHQ crops."""
    path = tmp_path / "RestoreFormer.pth"
    torch.save({"params_ema": fx64["state_dict"]}, path)
    photo = shared / "data/multi-face/couple.jpg"
    out = tmp_path / "out"
    assert main([str(a) for a in ["restore", photo, "-o", out, "--model", path, "--detector", "retinaface_mobile0.25"]]) == 0
    report = json.loads((out / "report.json").read_text())
    n = report["images"][0]["faces"]
    assert n >= 1 and report["failed"] == 0
    src = cv2.imread(str(photo))
    assert cv2.imread(str(out / "restored_imgs/couple.jpg")).shape == (src.shape[0] * 2, src.shape[1] * 2, 3)
    for idx in range(n):
        assert cv2.imread(str(out / f"restored_faces/couple_{idx:02d}.png")).shape == (64, 64, 3)
    capsys.readouterr()
    code = main(["restore", str(photo), "-o", str(tmp_path / "o"), "--model", str(path), "--fidelity", "0.5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no fidelity control" in err[0]
    assert not (tmp_path / "o" / "restored_imgs").exists()


def test_registry_entry_points_at_the_release(tmp_path, monkeypatch):
    monkeypatch.setenv("FACERES_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("FACERES_OFFLINE", "1")
    spec = REGISTRY["restoreformer"]
    assert spec.kind == "restorer" and spec.filename == "RestoreFormer.pth" and spec.arch == {"arch": "restoreformer"}
    assert spec.url == "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.4/RestoreFormer.pth"
    assert spec.size is None and spec.sha256 is None and "unknown" in spec.licence  # nothing published (README §3)
    with pytest.raises(WeightsError, match=re.escape(spec.url)):
        load_model("restoreformer")
