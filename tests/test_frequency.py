import math

import pytest
import torch

from faceres.archs.sfmnet import FSIB, SFCA, SFMNet
from faceres.losses.frequency import BandSchedule, FocalFrequencyLoss, GuidedFrequencyLoss, high_pass, laplacian_pyramid_1, radial_frequency


def band_image(freq: int, size: int = 32) -> torch.Tensor:
    """A cosine along x with `freq` cycles per image."""
    x = torch.arange(size, dtype=torch.float32)
    return torch.cos(2 * math.pi * freq * x / size).expand(1, 1, size, size).clone()


# ------------------------------------------------------------------ FFL


def test_ffl_zero_for_identical_images():
    x = torch.rand(2, 3, 32, 32)
    assert FocalFrequencyLoss()(x, x).item() == 0


def test_ffl_weights_emphasise_frequencies_with_larger_error():
    ffl = FocalFrequencyLoss(alpha=1.0)
    target = torch.zeros(1, 1, 32, 32)
    pred = target + 0.1 * band_image(2) + 1.0 * band_image(10)  # small error at 2 cycles, large at 10
    diff = ffl.spectrum(pred) - ffl.spectrum(target)
    w = ffl.weights(diff.real.square() + diff.imag.square())[0, 0, 0]
    assert w[0, 10] == pytest.approx(1.0)  # largest error -> weight 1
    assert w[0, 2] == pytest.approx(0.1, rel=1e-3)  # |F| ratio 0.1 with alpha 1
    assert w[5, 5] == 0  # no error -> no weight


def test_ffl_gradient_flows_only_through_the_distance():
    ffl = FocalFrequencyLoss()
    pred = torch.rand(1, 1, 16, 16, requires_grad=True)
    target = torch.rand(1, 1, 16, 16)
    diff = ffl.spectrum(pred) - ffl.spectrum(target)
    w = ffl.weights(diff.real.square() + diff.imag.square())
    assert not w.requires_grad
    ffl(pred, target).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_ffl_options_patch_log_batch():
    pred, target = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    values = {
        FocalFrequencyLoss(patch_factor=p, log_matrix=lg, batch_matrix=b)(pred, target).item()
        for p in (1, 2)
        for lg in (False, True)
        for b in (False, True)
    }
    assert len(values) == 8 and all(v > 0 for v in values)
    with pytest.raises(ValueError):
        FocalFrequencyLoss(patch_factor=3)(pred, target)


# ------------------------------------------------------------------ GFL


def test_gfl_components_on_constructed_images():
    gfl = GuidedFrequencyLoss(BandSchedule(0.5, 0.1, 4, total=100))
    flat = torch.full((1, 1, 32, 32), 0.5)
    parts = gfl.components(flat, flat)
    assert parts["charbonnier"].item() == pytest.approx(1e-6)  # eps² only
    assert parts["laplacian"].item() == pytest.approx(0, abs=1e-10) and parts["frequency"].item() == pytest.approx(0, abs=1e-10)
    assert gfl(flat, flat).item() == pytest.approx(1e-3)
    # a low-frequency error (2 cycles: radius 0.125 < ω 0.5) is invisible to the high-pass term
    low = flat + 0.1 * band_image(2)
    parts = gfl.components(low, flat)
    assert parts["frequency"].item() < 1e-10 and parts["charbonnier"].item() > 1e-3
    # a high-frequency error (12 cycles: radius 0.75 > 0.5) is seen by it and by the Laplacian level 0
    high = flat + 0.1 * band_image(12)
    parts = gfl.components(high, flat)
    assert parts["frequency"].item() == pytest.approx(0.005, rel=1e-3)  # mean of (0.1 cos)² = 0.005
    h0, _ = laplacian_pyramid_1(high - flat)
    assert h0.square().mean() > 0.5 * (high - flat).square().mean()


def test_high_pass_keeps_only_frequencies_above_threshold():
    x = band_image(3) + band_image(12)
    r3, r12 = radial_frequency(32, 32)[0, 3].item(), radial_frequency(32, 32)[0, 12].item()
    assert r3 < 0.5 < r12
    torch.testing.assert_close(high_pass(x, 0.5), band_image(12), atol=1e-5, rtol=0)


def test_band_schedule_static_advances_every_n_over_s_and_snaps():
    s = BandSchedule(omega0=0.9, omega_final=0.1, stages=4, total=40)
    omegas = []
    for it in range(40):
        s.advance(it)
        omegas.append(s.omega)
    assert omegas[8] == pytest.approx(0.9) and omegas[9] == pytest.approx(0.7)  # first change after 10 iterations
    assert omegas[19] == pytest.approx(0.5) and omegas[29] == pytest.approx(0.3)
    assert omegas[39] == 0.1 and s.fixed  # last stage snaps exactly to ωF
    assert not s.advance(40) and s.omega == 0.1


def test_band_schedule_dynamic_advances_on_loss_threshold():
    s = BandSchedule(omega0=0.8, omega_final=0.2, stages=3, total=1000, mode="dynamic", thresholds=(0.5, 0.3))
    assert not s.advance(0, 0.9) and s.omega == 0.8
    assert s.advance(1, 0.4) and s.omega == pytest.approx(0.6)
    assert not s.advance(2, 0.4)  # second stage needs < 0.3
    assert s.advance(3, 0.2) and s.omega == pytest.approx(0.4)
    assert s.advance(4, 0.1) and s.omega == 0.2 and s.fixed
    restored = BandSchedule(0.8, 0.2, 3, 1000, "dynamic", (0.5, 0.3))
    restored.load_state_dict(s.state_dict())
    assert restored.omega == 0.2 and restored.fixed
    with pytest.raises(ValueError):
        BandSchedule(0.8, 0.2, 3, 10, mode="dynamic")


# ------------------------------------------------------------------ SFMNet


@pytest.mark.parametrize("scale", [4, 8])
def test_sfmnet_forward_backward(scale):
    net = SFMNet(size=64, channels=16, n_modules=2, scale=scale)
    x = torch.randn(2, 3, 64, 64)
    out, aux = net(x, return_aux=True)
    assert out.shape == x.shape and aux["frequency_output"].shape == x.shape
    (out.abs().mean() + aux["frequency_output"].abs().mean()).backward()
    assert all(p.grad is not None for p in net.parameters())


def test_sfca_query_from_source_and_keys_from_guidance():
    torch.manual_seed(0)
    attn = SFCA(16, heads=4)
    src, guide = torch.randn(1, 16, 8, 8), torch.randn(1, 16, 8, 8)
    out = attn(src, guide)
    assert out.shape == src.shape
    assert not torch.allclose(out, attn(src, torch.randn(1, 16, 8, 8)))  # guidance changes the output
    assert not torch.allclose(out, attn(torch.randn(1, 16, 8, 8), guide))  # so does the source


def test_fsib_mixes_the_two_domains():
    torch.manual_seed(0)
    block = FSIB(16)
    spa, fre = torch.randn(1, 16, 8, 8), torch.randn(1, 16, 8, 8)
    s_out, f_out = block(spa, fre)
    assert s_out.shape == spa.shape and f_out.shape == fre.shape
    s2, _ = block(spa, torch.randn(1, 16, 8, 8))
    _, f2 = block(torch.randn(1, 16, 8, 8), fre)
    assert not torch.allclose(s_out, s2)  # spatial output depends on the frequency input
    assert not torch.allclose(f_out, f2)  # and vice versa


def test_sfmnet_parameter_count_near_poster():
    n = sum(p.numel() for p in SFMNet().parameters()) / 1e6
    print(f"SFMNet parameters: {n:.2f} M (poster: 8.1 M)")
    assert 6 < n < 10
