"""GFPGANv1Clean against the upstream reference tensors (shared/reference/gfpgan-fixtures), strict loading
of files in the released layout, and the whole `faceres restore` path with such a file."""

import hashlib
import json
import math
import re

import cv2
import pytest
import recipes
import torch
import torch.nn.functional as F

from faceres.archs import GFPGANv1Clean, build_network
from faceres.checkpoints import gfpgan_config_from_state_dict, load_model
from faceres.cli import main
from faceres.weights import REGISTRY, WeightsError

TOL = dict(rtol=1e-4, atol=1e-4)  # the fixtures README's tolerance for every tensor
RELEASE = dict(
    out_size=512, num_style_feat=512, channel_multiplier=2, num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True
)


@pytest.fixture(scope="module")
def gfpgan_dir(shared):
    return recipes.reference_dir(shared, "gfpgan")


def build_from_fixture(fx: dict) -> GFPGANv1Clean:
    cfg = dict(fx["config"])
    assert cfg.pop("decoder_load_path") is None and cfg.pop("fix_decoder") is False  # training-only arguments
    net = GFPGANv1Clean(**cfg).eval()
    net.load_state_dict(fx["state_dict"], strict=True)  # fp16 -> fp32 on copy, as the README prescribes
    return net


def run_with_intermediates(net: GFPGANv1Clean, x: torch.Tensor) -> tuple[torch.Tensor, list, dict]:
    """Forward (stored noise) recording the fixtures' intermediates with forward hooks."""
    seen, hooks = {}, []
    dec = net.stylegan_decoder
    named = {"style_code": net.final_linear, "dec.style_conv1": dec.style_conv1, "dec.to_rgb1": dec.to_rgb1}
    for i in range(len(net.conv_body_up)):
        r = 8 * 2**i
        named |= {
            f"unet_up.{r}": net.conv_body_up[i],
            f"condition_scale.{r}": net.condition_scale[i],
            f"condition_shift.{r}": net.condition_shift[i],
            f"dec.rgb_skip.{r}": dec.to_rgbs[i],
        }
    for name, module in named.items():
        hooks.append(module.register_forward_hook(lambda m, inp, out, name=name: seen.__setitem__(name, out)))
    with torch.no_grad():
        image, rgbs = net(x, return_rgb=True)
    for h in hooks:
        h.remove()
    return image, rgbs, seen


@pytest.mark.parametrize("name", ["gfpgan64", "gfpgan128_alt"])
def test_small_fixtures_reproduce_every_tensor(gfpgan_dir, name):
    fx = torch.load(gfpgan_dir / f"{name}.pt", weights_only=True)
    net = build_from_fixture(fx)
    image, rgbs, seen = run_with_intermediates(net, fx["input"])
    torch.testing.assert_close(image, fx["output"], **TOL)
    assert len(rgbs) == len(fx["out_rgbs"])
    for ours, ref in zip(rgbs, fx["out_rgbs"]):
        torch.testing.assert_close(ours, ref, **TOL)
    assert fx["intermediates"]
    for key, ref in fx["intermediates"].items():
        torch.testing.assert_close(seen[key], ref, **TOL, msg=lambda m, key=key: f"{key}: {m}")
    # upstream's default draws fresh noise in layer order; the same draws after the same seed match it
    torch.manual_seed(fx["randomized_noise"]["torch_manual_seed"])
    with torch.no_grad():
        randomized = net(fx["input"], return_rgb=False, randomize_noise=True)[0]
    torch.testing.assert_close(randomized, fx["randomized_noise"]["output"], **TOL)


def test_restore_is_deterministic_clamped_and_refuses_fidelity(gfpgan_dir):
    fx = torch.load(gfpgan_dir / "gfpgan64.pt", weights_only=True)
    net = build_from_fixture(fx)
    with torch.no_grad():
        first, second = net.restore(fx["input"]), net.restore(fx["input"])
        fresh = net(fx["input"], randomize_noise=True)[0].clamp(-1, 1)
    assert torch.equal(first, second)
    torch.testing.assert_close(first, fx["output"].clamp(-1, 1), **TOL)  # stored noise buffers are the default
    assert (fresh - first).abs().max() > 1e-2
    assert net.spec.size == net.size == 64 and not net.spec.has_fidelity
    with pytest.raises(ValueError, match="no fidelity control"):
        net.restore(fx["input"], fidelity=0.5)


# ---------------------------------------------------------------- the released configuration (fixtures README §5)


def gfpgan_special(key: str, z: torch.Tensor, shape):
    """GFPGAN's exceptions to the recipe: the constant input is z, the StyleConvs' 5-D weights 0.1·z,
    other 5-D weights scaled by their per-sample fan-in."""
    if key == "stylegan_decoder.constant_input.weight":
        return z
    if re.fullmatch(r"stylegan_decoder\.(style_conv1|style_convs\.[0-9]+)\.weight", key):
        return 0.1 * z
    if key.endswith("weight") and len(shape) == 5:
        return z / math.sqrt(math.prod(shape[2:]))
    return None


def recipe_value(key: str, shape: list[int]) -> torch.Tensor:
    return recipes.recipe_value(key, shape, gfpgan_special)


def released_keys(gfpgan_dir) -> list:
    return json.loads((gfpgan_dir / "keys_gfpganv1clean_512.json").read_text())["keys"]


def views(image: torch.Tensor) -> dict[str, torch.Tensor]:
    flat = image.double().flatten(2)
    stats = torch.stack([flat.mean(2), flat.std(2), flat.amin(2), flat.amax(2), flat.abs().mean(2)], dim=2)
    return {"grid_a": image[..., ::8, ::8], "grid_b": image[..., 7::8, 7::8], "pool8": F.avg_pool2d(image, 8), "stats": stats}


def assert_views(image: torch.Tensor, ref: dict, what: str):
    for key, ours in views(image).items():
        torch.testing.assert_close(ours, ref[key].to(ours.dtype), **TOL, msg=lambda m, key=key: f"{what} {key}: {m}")


@pytest.mark.slow  # the 512 network on a batch of 2: about 25 s on 2 busy cores
def test_release_configuration_reproduces_recipe_fixture(gfpgan_dir):
    ref = torch.load(gfpgan_dir / "gfpgan512_recipe.pt", weights_only=True)
    sd = {key: recipe_value(key, shape) for key, shape, _ in released_keys(gfpgan_dir)}
    everything = hashlib.sha256()
    for key, expected in zip(ref["recipe_check"]["keys"], ref["recipe_check"]["sha256"], strict=True):
        data = sd[key].numpy().tobytes()
        assert hashlib.sha256(data).hexdigest() == expected, key
        everything.update(data)
    assert everything.hexdigest() == ref["recipe_check"]["sha256_all"]
    u8 = recipes.input_u8()
    assert hashlib.sha256(u8.numpy().tobytes()).hexdigest() == ref["input_u8_sha256"]
    x = ((u8.double() / 255.0).float() - 0.5) / 0.5
    kwargs = dict(ref["constructor_kwargs"])
    assert kwargs.pop("decoder_load_path") is None and kwargs.pop("fix_decoder") is False and kwargs == RELEASE
    net = GFPGANv1Clean(**RELEASE).eval()
    net.load_state_dict(sd, strict=True)
    seen = {}
    net.final_linear.register_forward_hook(lambda m, inp, out: seen.__setitem__("style_code", out))
    with torch.no_grad():
        image, rgbs = net(x, return_rgb=True)
    torch.testing.assert_close(seen["style_code"], ref["style_code"], **TOL)
    assert_views(image, ref["output"], "output")
    for i, (ours, stored) in enumerate(zip(rgbs, ref["out_rgbs"], strict=True)):
        if isinstance(stored, dict):
            assert_views(ours, stored, f"out_rgbs[{i}]")
        else:
            torch.testing.assert_close(ours, stored, **TOL)


# ---------------------------------------------------------------- released files: wrapper, keys, inferred config


def test_released_key_list_loads_strictly_with_inferred_config(gfpgan_dir, tmp_path):
    keys = released_keys(gfpgan_dir)
    assert len(keys) == 285
    sd = {key: recipe_value(key, shape).half() for key, shape, _ in keys}  # fp16 halves the 350 MB fp32 file
    path = tmp_path / "GFPGANv1.4.pth"
    torch.save({"params_ema": sd}, path)  # the wrapper GFPGANer reads first
    del sd
    net, config = load_model(path)
    assert config == {"arch": "gfpgan_v1_clean", **RELEASE} == REGISTRY["gfpgan-v1.4"].arch
    assert isinstance(net, GFPGANv1Clean) and net.size == 512
    assert sum(p.numel() for p in net.parameters()) == 86_444_252  # fixtures README §3
    assert sum(b.numel() for b in net.buffers()) == 699_024
    own = net.state_dict()
    assert {k: list(v.shape) for k, v in own.items()} == {k: shape for k, shape, _ in keys}
    key = "stylegan_decoder.noises.noise14"
    assert torch.equal(own[key], recipe_value(key, [1, 1, 512, 512]).half().float())


@pytest.mark.parametrize("wrapper", ["params_ema", "params", "both"])
def test_wrappers_and_inferred_small_config_reproduce_fixture(gfpgan_dir, tmp_path, wrapper):
    fx = torch.load(gfpgan_dir / "gfpgan64.pt", weights_only=True)
    sd = fx["state_dict"]
    decoy = {k: torch.zeros_like(v) for k, v in sd.items()}
    obj = {"params": decoy, "params_ema": sd} if wrapper == "both" else {wrapper: sd}
    torch.save(obj, tmp_path / "g.pth")
    net, config = load_model(tmp_path / "g.pth")
    expected = {k: v for k, v in fx["config"].items() if k not in ("decoder_load_path", "fix_decoder")}
    assert config == {"arch": "gfpgan_v1_clean", **expected}
    with torch.no_grad():
        torch.testing.assert_close(net(fx["input"])[0], fx["output"], **TOL)


def test_config_inference_limits_and_bad_files(gfpgan_dir, tmp_path):
    fx = torch.load(gfpgan_dir / "gfpgan128_alt.pt", weights_only=True)
    config = gfpgan_config_from_state_dict(fx["state_dict"])
    # every flag that shapes the tensors is read back; input_is_latent is not in the shapes (release value True)
    built = {k: v for k, v in fx["config"].items() if k not in ("decoder_load_path", "fix_decoder")}
    assert built["input_is_latent"] is False
    assert config == built | {"arch": "gfpgan_v1_clean", "input_is_latent": True}
    sd = dict(torch.load(gfpgan_dir / "gfpgan64.pt", weights_only=True)["state_dict"])
    del sd["stylegan_decoder.noises.noise0"]  # released files carry the noise buffers; loading is strict
    torch.save({"params_ema": sd}, tmp_path / "broken.pth")
    with pytest.raises(WeightsError, match=r"broken\.pth: does not match .*noise0"):
        load_model(tmp_path / "broken.pth")


# ---------------------------------------------------------------- end to end through the pipeline


@pytest.fixture(scope="module")
def small_release_file(tmp_path_factory):
    """A GFPGANv1.4.pth-format file (params_ema wrapper, same key layout, 512 crops) with random weights
    and 1/16 of the released width, so the pipeline runs in seconds."""
    torch.manual_seed(0)
    net = build_network("gfpgan_v1_clean", out_size=512, num_style_feat=64, narrow=1 / 16)
    path = tmp_path_factory.mktemp("gfpgan") / "GFPGANv1.4.pth"
    torch.save({"params_ema": net.state_dict()}, path)
    return path


def test_cli_restore_with_released_format_file(small_release_file, weights_env, shared, tmp_path):
    photo = shared / "data/multi-face/couple.jpg"
    out = tmp_path / "out"
    args = ["--model", small_release_file, "--detector", "retinaface_mobile0.25", "--only-center-face"]  # one face: a fast test
    assert main([str(a) for a in ["restore", photo, "-o", out, *args]]) == 0
    report = json.loads((out / "report.json").read_text())
    n = report["images"][0]["faces"]
    assert n == 1 and report["failed"] == 0
    src = cv2.imread(str(photo))
    assert cv2.imread(str(out / "restored_imgs/couple.jpg")).shape == (src.shape[0] * 2, src.shape[1] * 2, 3)
    for idx in range(n):
        assert cv2.imread(str(out / f"cropped_faces/couple_{idx:02d}.png")).shape == (512, 512, 3)
        assert cv2.imread(str(out / f"restored_faces/couple_{idx:02d}.png")).shape == (512, 512, 3)
        assert cv2.imread(str(out / f"cmp/couple_{idx:02d}.png")).shape == (512, 1024, 3)


def test_cli_refuses_fidelity_for_gfpgan(small_release_file, weights_env, shared, tmp_path, capsys):
    photo = shared / "data/multi-face/couple.jpg"
    code = main(["restore", str(photo), "-o", str(tmp_path / "o"), "--model", str(small_release_file), "--fidelity", "0.5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no fidelity control" in err[0]
    assert not (tmp_path / "o" / "restored_imgs").exists()


@pytest.mark.parametrize(
    "name,filename", [("gfpgan-v1.2", "GFPGANCleanv1-NoCE-C2.pth"), ("gfpgan-v1.3", "GFPGANv1.3.pth"), ("gfpgan-v1.4", "GFPGANv1.4.pth")]
)
def test_registry_entries_point_at_the_releases(name, filename, tmp_path, monkeypatch):
    monkeypatch.setenv("FACERES_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("FACERES_OFFLINE", "1")
    spec = REGISTRY[name]
    assert spec.kind == "restorer" and spec.filename == filename and "Apache-2.0" in spec.licence
    assert spec.url.startswith("https://github.com/TencentARC/GFPGAN/releases/download/") and spec.url.endswith(filename)
    with pytest.raises(WeightsError, match=re.escape(spec.url)):
        load_model(name)
