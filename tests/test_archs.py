import re

import pytest
import torch

from faceres.archs import MMRB, CodecPriorNet, ComponentDiscriminator, GPENGenerator, StyleGAN2Discriminator, freeze_d
from faceres.archs.discriminators import d_input, detail_bands
from faceres.archs.stylegan2 import NoiseInjection, StyleGAN2Generator, upfirdn2d
from faceres.checkpoints import (
    discriminator_config_from_state_dict,
    gpen_config_from_state_dict,
    init_generator_from,
    load_model,
    save_model,
)
from faceres.losses.perceptual import discriminator_features


def numel(sd):
    return sum(v.numel() for v in sd.values())


# Counts published for the official classes (anchors.md §2.7), independent of our code.
@pytest.mark.parametrize(
    "cls,kwargs,keys,total",
    [
        (GPENGenerator, dict(size=512, channel_multiplier=2, narrow=1), 163, 71_005_559),
        (GPENGenerator, dict(size=256, channel_multiplier=1, narrow=0.5), 144, 18_879_298),
        (StyleGAN2Discriminator, dict(size=512, channel_multiplier=2, narrow=1), 57, 28_983_073),
        (StyleGAN2Discriminator, dict(size=256, channel_multiplier=1, narrow=0.5), 50, 6_003_169),
    ],
)
def test_gpen_key_and_element_counts(cls, kwargs, keys, total):
    sd = cls(**kwargs).state_dict()
    assert len(sd) == keys
    assert numel(sd) == total


def documented_state_dict(shared, appendix: str) -> dict[str, torch.Tensor]:
    """Random tensors with exactly the keys/shapes listed in anchors.md's appendix."""
    text = (shared / "reference" / "anchors.md").read_text()
    section = text.split(f"## Appendix {appendix}")[1].split("```")[1]
    sd = {}
    for line in section.strip().splitlines():
        m = re.match(r"(\S+)\s+\(([\d, ]*)\)", line.strip())
        sd[m.group(1)] = torch.randn(*[int(s) for s in m.group(2).split(",") if s.strip()])
    return sd


@pytest.mark.parametrize(
    "appendix,n_keys,expected",
    [
        ("A", 163, dict(size=512, channel_multiplier=2, narrow=1.0, n_mlp=8, style_dim=512, isconcat=True)),
        ("B", 144, dict(size=256, channel_multiplier=1, narrow=0.5, n_mlp=8, style_dim=512, isconcat=True)),
    ],
)
def test_gpen_generator_documented_keys_load_strictly(shared, appendix, n_keys, expected):
    sd = documented_state_dict(shared, appendix)
    assert len(sd) == n_keys
    config = gpen_config_from_state_dict(sd)
    assert {k: config[k] for k in expected} == expected
    model = GPENGenerator(**{k: v for k, v in config.items() if k != "arch"})
    model.load_state_dict(sd, strict=True)


@pytest.mark.parametrize(
    "appendix,n_keys,expected",
    [("C", 57, dict(size=512, channel_multiplier=2, narrow=1.0)), ("D", 50, dict(size=256, channel_multiplier=1, narrow=0.5))],
)
def test_gpen_discriminator_documented_keys_load_strictly(shared, appendix, n_keys, expected):
    sd = documented_state_dict(shared, appendix)
    assert len(sd) == n_keys
    config = discriminator_config_from_state_dict(sd)
    assert {k: config[k] for k in expected} == expected
    StyleGAN2Discriminator(**expected).load_state_dict(sd, strict=True)


def test_gpen_config_inference_on_unusual_config():
    sd = GPENGenerator(128, style_dim=128, n_mlp=4, channel_multiplier=2, narrow=0.125).state_dict()
    assert gpen_config_from_state_dict(sd) == dict(
        arch="gpen", size=128, style_dim=128, n_mlp=4, channel_multiplier=2, narrow=0.125, isconcat=True
    )


@pytest.mark.parametrize("name", ["gen64", "gen128"])
@pytest.mark.parametrize("perturbed", [False, True])
def test_gpen_generator_matches_upstream_outputs(fixtures_dir, name, perturbed):
    fx = torch.load(fixtures_dir / f"{name}.pt", weights_only=True)
    sd, ref = dict(fx["state_dict"]), fx
    if perturbed:  # biases and noise weights moved off their init values: catches noise/bias wiring errors
        extra = torch.load(fixtures_dir / f"{name}_extra.pt", weights_only=True)["perturbed"]
        sd.update(extra["overrides"])
        ref = extra
    model = GPENGenerator(**fx["config"]).eval()
    model.load_state_dict(sd, strict=True)
    with torch.no_grad():
        out, latent = model(fx["input"], return_latents=True)
    torch.testing.assert_close(out, ref["output"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(latent, ref["latent"], rtol=1e-4, atol=1e-4)


def test_gpen_discriminator_matches_upstream_outputs(fixtures_dir):
    fx = torch.load(fixtures_dir / "disc64.pt", weights_only=True)
    extra = torch.load(fixtures_dir / "disc64_extra.pt", weights_only=True)
    d = StyleGAN2Discriminator(**fx["config"]).eval()
    d.load_state_dict(fx["state_dict"], strict=True)
    with torch.no_grad():
        torch.testing.assert_close(d(fx["input"]), fx["output"], rtol=0, atol=1e-5)
        # batch of 8 separates GPEN's whole-batch stddev from min(B, 4) grouping
        torch.testing.assert_close(d(extra["batch8"]["input"]), extra["batch8"]["output"], rtol=0, atol=1e-5)
        sd = dict(fx["state_dict"])
        sd.update(extra["perturbed"]["overrides"])
        d.load_state_dict(sd, strict=True)
        torch.testing.assert_close(d(fx["input"]), extra["perturbed"]["output"], rtol=0, atol=1e-5)


def test_upfirdn2d_upsample_matches_reference_loop():
    x = torch.randn(1, 1, 3, 3)
    k = torch.arange(16.0).view(4, 4)
    got = upfirdn2d(x, k, up=2, pad=(2, 1))
    z = torch.zeros(1, 1, 6, 6)
    z[..., ::2, ::2] = x
    z = torch.nn.functional.pad(z, (2, 1, 2, 1))
    want = torch.zeros(1, 1, 6, 6)
    for i in range(6):
        for j in range(6):  # true convolution: flipped kernel
            want[0, 0, i, j] = (z[0, 0, i : i + 4, j : j + 4] * k.flip(0, 1)).sum()
    torch.testing.assert_close(got, want)


def test_mmrb_structure_and_residual():
    block = MMRB(8)
    convs = [m for m in block.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size[0] for c in convs] == [3, 5, 3, 5, 1]
    assert [c.in_channels for c in convs] == [4, 4, 8, 8, 8]
    assert sum(isinstance(m, torch.nn.PReLU) for m in block.modules()) == 5
    x = torch.randn(2, 8, 16, 16)
    assert block(x).shape == x.shape
    torch.nn.init.zeros_(convs[-1].weight), torch.nn.init.zeros_(convs[-1].bias)
    torch.testing.assert_close(block(x), x)  # fusion output 0 -> pure identity path
    with pytest.raises(ValueError):
        MMRB(7)


def test_mmrb_prelu_inference_path_matches_aten():
    from faceres.archs.mmrb import PReLU

    act = PReLU(16)
    act.weight.data.uniform_(-0.5, 0.5)  # negative slopes too
    for dtype, layout in ((torch.float32, torch.contiguous_format), (torch.bfloat16, torch.channels_last)):
        x = torch.randn(2, 16, 8, 8).to(dtype).contiguous(memory_format=layout)
        want = torch.nn.functional.prelu(x, act.weight.to(dtype))
        with torch.no_grad():
            assert torch.equal(act(x), want)
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    act(x).sum().backward()  # training path: ATen's kernel and its gradient
    torch.testing.assert_close(x.grad, torch.where(x > 0, 1.0, act.weight.view(1, -1, 1, 1)).expand_as(x))


def test_noise_injection_modes():
    x, n = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    cat = NoiseInjection(isconcat=True)
    cat.weight.data.fill_(0.5)
    assert torch.equal(cat(x, n), torch.cat([x, 0.5 * n], 1))
    add = NoiseInjection(isconcat=False)
    add.weight.data.fill_(0.5)
    assert torch.equal(add(x, n[:, :1]), x + 0.5 * n[:, :1])


def count_mmrb(module):
    return sum(isinstance(m, MMRB) for m in module.modules())


def test_codec_prior_512_has_paper_structure():
    net = CodecPriorNet(512)
    codec = net.codec
    assert count_mmrb(codec.enc_blocks) == 6  # one per scale except the first (512) and last (4x4)
    assert count_mmrb(codec.dec_blocks) == 0  # decoder: one fewer per scale than the encoder
    assert all(isinstance(layer.noise, NoiseInjection) and layer.noise.isconcat for layer in [net.generator.conv1, *net.generator.convs])
    assert len(net.generator.style) == 9  # PixelNorm + 8-layer MLP
    assert all(layer.lr_mul == 0.01 for layer in list(net.generator.style)[1:])
    # decoder channels at each resolution == the generator's noise-branch channels there
    for res, to_rgb in zip(codec.resolutions[::-1], codec.to_rgbs):
        assert to_rgb.weight.shape[1] == net.generator.channels[res]


def test_codec_prior_forward_backward_small():
    net = CodecPriorNet(64, style_dim=64, n_mlp=2, channel_multiplier=1, narrow=0.125, enc_blocks=2)
    assert count_mmrb(net.codec.enc_blocks) == 6 and count_mmrb(net.codec.dec_blocks) == 4  # 3 inner scales x2; 4 dec scales x1
    x = torch.randn(2, 3, 64, 64)
    out, aux = net(x, return_aux=True)
    assert out.shape == x.shape
    assert [r.shape[-1] for r in aux["rgbs"]] == [4, 8, 16, 32, 64]
    (out.square().mean() + sum(r.mean() for r in aux["rgbs"])).backward()
    groups = net.param_groups()
    assert all(p.grad is not None for p in groups["codec"])
    assert sum(p.numel() for g in groups.values() for p in g) == sum(p.numel() for p in net.parameters())
    assert len(groups["noise"]) == net.generator.num_noise_layers


def test_codec_prior_fidelity_changes_output():
    torch.manual_seed(0)
    net = CodecPriorNet(64, style_dim=64, n_mlp=2, channel_multiplier=1, narrow=0.125).eval()
    for m in net.modules():
        if isinstance(m, NoiseInjection):
            m.weight.data.fill_(1.0)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outs = [net(x, fidelity=f) for f in (0.0, 0.5, 1.0)]
    assert not torch.allclose(outs[0], outs[2])
    assert torch.equal(outs[2], net(x).detach())


@pytest.mark.parametrize("size", [64, 128, 256])
def test_codec_prior_sizes(size):
    net = CodecPriorNet(size, style_dim=32, n_mlp=1, channel_multiplier=1, narrow=1 / 16)
    assert net(torch.randn(1, 3, size, size)).shape[-1] == size
    assert count_mmrb(net.codec) == int(torch.log2(torch.tensor(size))) - 3


def test_codec_prior_rejects_bad_size():
    with pytest.raises(ValueError):
        CodecPriorNet(100)


@pytest.mark.parametrize(
    "grown",
    [
        dict(enc_blocks=2),
        dict(enc_blocks=1, min_channels=128),
        dict(enc_blocks=2, min_channels=256),
        dict(enc_blocks=1, channels_at={"16": 256}),
    ],
)
def test_codec_grows_from_smaller_weights(grown):
    """More MMRBs per scale and/or more channels at some resolutions: the same function at the start,
    and the added channels learn (their outgoing weights get gradients)."""
    torch.manual_seed(0)
    small = CodecPriorNet(64, 64, 2, 1, 0.25, enc_blocks=1, input_skip=True)  # 64 channels at 64², 128 below
    for p in small.parameters():
        torch.nn.init.normal_(p, 0, 0.1)
    big = CodecPriorNet(64, 64, 2, 1, 0.25, input_skip=True, **grown)
    added = big.load_smaller(small)  # {name: mask of the added elements}
    assert ("codec.enc_blocks.0.1.fuse.0.weight" in added) == (grown["enc_blocks"] == 2)
    ratio = big.codec.from_rgb[0].weight.shape[0] // 64
    assert ratio == max(64, grown.get("min_channels", 0)) // 64
    if ratio > 1:  # old output channel i sits at i * ratio; the rows between are new
        rows = added["codec.from_rgb.0.weight"].flatten(1).all(1)
        assert not rows[::ratio].any() and rows.sum() == 64 * (ratio - 1)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x), rtol=0, atol=1e-5)
    big(x).square().mean().backward()
    assert big.generator.to_rgbs[-1].conv.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="smaller version"):
        CodecPriorNet(64, 128, 2, 1, 0.25, input_skip=True, **grown).load_smaller(small)


def test_init_from_gpen_prior():
    kw = dict(size=64, style_dim=64, n_mlp=2, channel_multiplier=1, narrow=0.25)
    gpen = GPENGenerator(**kw)
    net = CodecPriorNet(**kw)
    report = init_generator_from(net, gpen.state_dict())
    assert len(report["loaded"]) == len(gpen.generator.state_dict()) and not report["new"]
    assert report["skipped"] and all(k.startswith(("ecd", "final_linear")) for k in report["skipped"])
    assert torch.equal(net.generator.conv1.conv.weight, gpen.generator.conv1.conv.weight)


def test_freeze_d_freezes_first_layers():
    d = StyleGAN2Discriminator(64, channel_multiplier=1, narrow=0.25)
    frozen = freeze_d(d, 3)
    assert frozen and all(n.startswith(("convs.0.", "convs.1.", "convs.2.")) for n in frozen)
    assert all(p.requires_grad for p in d.convs[3].parameters()) and all(p.requires_grad for p in d.final_linear.parameters())


def test_luma_discriminator_is_blind_to_colour_but_not_to_detail():
    torch.manual_seed(0)
    d = StyleGAN2Discriminator(32, channel_multiplier=1, narrow=0.25, luma=True).eval()
    assert d.convs[0][0].weight.shape[1] == 1
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    # a colour change with zero luma: orthogonal to the BT.601 weights
    chroma = torch.tensor([0.587, -0.299, 0.0]).view(1, 3, 1, 1) * 0.3
    detail = torch.randn(2, 1, 32, 32) * 0.3
    with torch.no_grad():
        assert torch.allclose(d(x), d(x + chroma), atol=1e-5)
        assert not torch.allclose(d(x), d(x + detail), atol=1e-3)
        feats = discriminator_features(d, x + chroma)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(feats, discriminator_features(d, x)))
    local = ComponentDiscriminator((8, 8, 8), luma=True).eval()
    with torch.no_grad():
        assert torch.allclose(local(x), local(x + chroma), atol=1e-5)
        assert not torch.allclose(local(x), local(x + detail), atol=1e-3)


def test_detail_input_is_the_finest_luma_band():
    flat, ramp = torch.full((1, 3, 32, 32), 0.3), torch.linspace(-1, 1, 32).expand(1, 3, 32, 32)
    edge = torch.zeros(1, 3, 32, 32)
    edge[..., 16:] = 1
    for x in (flat, ramp):  # smooth content: no band (a linear ramp passes the symmetric blur unchanged)
        assert d_input(x, True, True)[:, 1].abs()[..., 2:-2, 2:-2].max() < 1e-5
    band = d_input(edge, True, True)[0, 1]
    assert band[:, 14:18].abs().min() > 0.1 and band[:, :13].abs().max() < 1e-6
    d = StyleGAN2Discriminator(32, channel_multiplier=1, narrow=0.25, luma=True, detail=True)
    local = ComponentDiscriminator((8, 8, 8), detail=True)
    assert d.convs[0][0].weight.shape[1] == 2 and local.body[0][0].weight.shape[1] == 4
    assert d(edge).shape == (1, 1) and local(edge).shape == (1, 1, 8, 8)


def test_coarser_detail_bands_hold_an_8px_grid_the_finest_misses():
    rows = torch.arange(64.0).view(1, 1, 64, 1).expand(1, 1, 64, 64)
    for period, band in ((2, 0), (4, 0), (8, 1), (16, 2)):  # the adversarial stages drew horizontal lines every 8 px
        energy = detail_bands(torch.cos(2 * torch.pi * rows / period), 3)[..., 16:-16, 16:-16].square().mean((0, 2, 3))
        assert int(energy.argmax()) == band, (period, energy)
    grid = torch.cos(2 * torch.pi * rows / 8)
    assert torch.equal(detail_bands(grid, 3)[:, :1], detail_bands(grid, 1))  # the finest band is the same in both
    ramp = torch.linspace(-1, 1, 64).expand(1, 1, 64, 64)
    assert detail_bands(ramp, 3)[..., 16:-16, 16:-16].abs().max() < 1e-5
    d = StyleGAN2Discriminator(32, channel_multiplier=1, narrow=0.25, luma=True, detail=3)
    assert d.convs[0][0].weight.shape[1] == 4 and d(torch.rand(2, 3, 32, 32)).shape == (2, 1)


def test_component_discriminator_output_map():
    d = ComponentDiscriminator()
    logits, feats = d(torch.randn(2, 3, 80, 80), return_feats=True)
    assert logits.shape == (2, 1, 20, 20) and len(feats) == 2


def test_safetensors_roundtrip_keeps_arch(tmp_path):
    arch = dict(arch="codec_prior", size=64, style_dim=32, n_mlp=1, channel_multiplier=1, narrow=0.125)
    net = CodecPriorNet(**{k: v for k, v in arch.items() if k != "arch"}).eval()
    path = tmp_path / "m.safetensors"
    save_model(net, path, arch)
    loaded, config = load_model(path)
    assert config == arch
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))


def test_stylegan2_unconditional_generation_runs():
    g = StyleGAN2Generator(32, style_dim=16, n_mlp=2, channel_multiplier=1, narrow=1 / 16)
    img, _ = g(torch.randn(3, 16))  # noise=None: Gaussian noise of the right channel count per layer
    assert img.shape == (3, 3, 32, 32)
