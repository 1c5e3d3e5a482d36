"""The model contract (faceres/archs/contract.py), checked on every registered restoration family with
small random networks: what the pipeline relies on, and nothing family-specific."""

import pytest
import torch

from faceres.archs import ARCHS
from faceres.archs.contract import RestorationNet, RestorerSpec

# small constructor kwargs per family; a family registered without an entry here fails, it is not skipped
SMALL = {
    "codec_prior": dict(size=64, style_dim=32, n_mlp=2, channel_multiplier=1, narrow=0.125),
    "gpen": dict(size=64, style_dim=32, n_mlp=2, channel_multiplier=1, narrow=0.125),
    "gfpgan_v1_clean": dict(out_size=64, num_style_feat=32, channel_multiplier=1, num_mlp=2, narrow=0.25),
    "sfmnet": dict(size=32, channels=16, n_modules=1, heads=2),
    "restoreformer": dict(n_embed=32, embed_dim=16, ch=32, ch_mult=(1, 2), num_res_blocks=1, resolution=32, z_channels=32, heads=2),
    "codeformer": dict(dim_embd=64, codebook_size=64, n_layers=1, nf=32, emb_dim=32),  # 512² is fixed: the slowest here
}
SMALL["interpolated"] = dict(base={"arch": "codec_prior", **SMALL["codec_prior"]})
FAMILIES = sorted(name for name, cls in ARCHS.items() if issubclass(cls, RestorationNet))


def build(name: str) -> RestorationNet:
    assert name in SMALL, f"{name} is a registered restoration family: give it small constructor kwargs in SMALL"
    torch.manual_seed(0)
    return ARCHS[name](**SMALL[name]).eval()


def test_every_family_is_covered():
    assert {"codec_prior", "gpen", "gfpgan_v1_clean", "sfmnet"} <= set(FAMILIES)
    assert set(SMALL) == set(FAMILIES), "SMALL lists a family that is not registered, or misses one"


@pytest.mark.parametrize("name", FAMILIES)
def test_family_honours_the_contract(name):
    net = build(name)
    spec = net.spec
    assert isinstance(spec, RestorerSpec) and net.size == spec.size
    assert spec.size & (spec.size - 1) == 0 and spec.template == "ffhq"
    lo, hi = spec.fidelity_range
    assert 0 <= lo <= hi == 1, "fidelity 1 is every model's 'closest to the input' setting"
    assert spec.has_fidelity == (lo < hi) and spec.fidelity_meaning
    x = torch.rand(1, 3, spec.size, spec.size, generator=torch.Generator().manual_seed(1)) * 2 - 1  # batch 1: CodeFormer is 512²
    with torch.inference_mode():
        y = net.restore(x, fidelity=lo)
        again = net.restore(x, fidelity=lo)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all() and y.min() >= -1 and y.max() <= 1
    assert torch.equal(y, again), "restore must be deterministic in eval mode"
    for bad in (hi + 0.5, lo - 0.5) + (() if spec.has_fidelity else (0.5,)):
        with pytest.raises(ValueError, match="fidelity"):
            net.restore(x, fidelity=bad)


@pytest.mark.parametrize("name", [n for n in FAMILIES if build(n).spec.stylegan2_prior])
def test_stylegan2_prior_interface_reproduces_restore(name):
    """SAIR's view of the network (prior_inputs -> prior_latent -> synthesize) gives what restore gives
    at fidelity 1, so optimising that latent starts from the network's own restoration."""
    net = build(name)
    for pname, p in net.named_parameters():  # noise-branch weights start at zero: let the input features matter
        if pname.endswith("noise.weight"):
            p.data.fill_(0.5)
    x = torch.rand(1, 3, net.size, net.size, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.inference_mode():
        code, noise = net.prior_inputs(x)
        image = net.synthesize(net.prior_latent(code), noise, x)
        expected = net.restore(x, fidelity=1.0)
    assert code.shape == (1, net.generator.style_dim) and len(noise) == net.generator.num_noise_layers
    torch.testing.assert_close(image.clamp(-1, 1), expected, rtol=1e-4, atol=1e-5)


def test_release_whose_stage_moved_nothing_keeps_both_ends():
    from faceres.checkpoints import dequantize_perceptual_end, quantize_perceptual_end

    w = torch.randn(4, 3, dtype=torch.float16)
    stored = quantize_perceptual_end({"fidelity_end.w": w, "perceptual_end.w": w.clone()})
    assert set(stored) == {"fidelity_end.w"}
    assert torch.equal(dequantize_perceptual_end(stored)["perceptual_end.w"], w)


def test_interpolated_release_blends_weights(tiny_model, tmp_path, capsys):
    """`faceres export A --perceptual B`: fidelity 1 is A, 0 is B, 0.5 the network with averaged weights."""
    from faceres.archs import CodecPriorNet, InterpolatedNet
    from faceres.checkpoints import load_model, load_state_dict_file, save_model
    from faceres.cli import main
    from faceres.devices import prepare_for_inference

    a, config = load_model(tiny_model)
    b, _ = load_model(tiny_model)
    with torch.no_grad():
        for name, p in b.named_parameters():
            if name != "codec.from_rgb.1.bias":  # one tensor the stage left alone: stored once for both ends
                p.add_(torch.randn_like(p) * 0.05)
    perceptual = tmp_path / "gan.safetensors"
    save_model(b, perceptual, config, extra={"iter": 7})
    out = tmp_path / "release.safetensors"
    assert main(["export", str(tiny_model), "--perceptual", str(perceptual), "-o", str(out), "--fp32"]) == 0
    net, release_config = load_model(out)
    assert isinstance(net, InterpolatedNet) and release_config == {"arch": "interpolated", "base": config}
    mid, _ = load_model(tiny_model)
    mid.load_state_dict({k: (v + b.state_dict()[k]) / 2 for k, v in a.state_dict().items()})
    x = torch.rand(2, 3, net.size, net.size, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(net.restore(x, 1.0), a.restore(x))
        assert torch.equal(net.restore(x, 0.0), b.restore(x))
        torch.testing.assert_close(net.restore(x, 0.5), mid.restore(x), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(net.restore(x, 0.5), a.restore(x), atol=1e-3)
        fp32 = net.restore(x, 0.3)
        bf16 = prepare_for_inference(net, "bf16").restore(x, 0.3)
    assert bf16.dtype == torch.float32 and (bf16 - fp32).abs().mean() < 0.02
    # the fp16 release keeps the adversarial end as an int8 difference from the pixel-loss end
    half = tmp_path / "release_fp16.safetensors"
    assert main(["export", str(tiny_model), "--perceptual", str(perceptual), "-o", str(half)]) == 0
    stored = load_state_dict_file(half)
    assert not any(k.startswith("perceptual_end.") for k in stored)
    assert stored["perceptual_delta.codec.from_rgb.0.weight"].dtype == torch.int8
    assert "perceptual_delta.codec.from_rgb.1.bias" not in stored
    small, _ = load_model(half)
    for name, p in b.named_parameters():  # within fp16 rounding plus half an int8 step of the difference
        delta = p - a.state_dict()[name]
        err = (small.perceptual_end.state_dict()[name] - p).abs().max()
        assert err <= delta.abs().max() / 254 + p.abs().max() * 2**-10 + 1e-6, name
    other, wider = tmp_path / "other.safetensors", {**config, "narrow": 0.25}
    save_model(CodecPriorNet(**{k: v for k, v in wider.items() if k != "arch"}), other, wider)
    assert main(["export", str(tiny_model), "--perceptual", str(other), "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "is not the pixel-loss network's" in capsys.readouterr().err
