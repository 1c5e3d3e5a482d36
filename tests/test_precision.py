"""bf16 inference (`prepare_for_inference`) agrees with fp32 on the shipped model's real output."""

import copy

import numpy as np
import pytest
import torch

from faceres.checkpoints import load_model
from faceres.data.dataset import list_faces, load_face
from faceres.devices import prepare_for_inference, use_bf16
from faceres.weights import DEFAULT_RESTORER


def test_precision_choice():
    cpu = torch.device("cpu")
    assert use_bf16("bf16", cpu) and not use_bf16("fp32", cpu)
    with pytest.raises(ValueError, match="precision"):
        use_bf16("fp16", cpu)


def test_bf16_restoration_matches_fp32_above_40_db(shared):
    net, _ = load_model(DEFAULT_RESTORER)
    size = net.spec.size
    faces = [load_face(p, size, False)[0] for p in list_faces(shared / "data/celebahq-512/images", (0, 4))]
    x = torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        ref = prepare_for_inference(copy.deepcopy(net), "fp32").restore(x)
        bf16_net = prepare_for_inference(copy.deepcopy(net), "bf16")
        out = bf16_net.restore(x)
    assert next(bf16_net.parameters()).dtype == torch.bfloat16 and out.dtype == torch.float32
    mse = float(((out - ref) / 2).pow(2).mean())
    assert 10 * np.log10(1 / mse) >= 40


@pytest.mark.parametrize("arch", ["codec_prior", "gpen", "gfpgan_v1_clean"])
def test_bf16_networks_stay_nhwc_end_to_end(arch):
    """Every 4-D activation of a prepared network is NHWC: one NCHW layer (e.g. a repeated constant
    input) drags the layers after it and every concat into slow layout conversions."""
    from faceres.archs import build_network

    config = {"arch": arch} if arch == "gfpgan_v1_clean" else {"arch": arch, "size": 64, "narrow": 0.25}
    net = prepare_for_inference(build_network(**config), "bf16")
    nchw = []

    def check(module, inputs, output):
        if isinstance(output, torch.Tensor) and output.ndim == 4 and min(output.shape[1:]) > 1:
            if not output.is_contiguous(memory_format=torch.channels_last):
                nchw.append(type(module).__name__)

    for m in net.modules():
        m.register_forward_hook(check)
    with torch.no_grad():
        net.restore(torch.rand(1, 3, net.spec.size, net.spec.size) * 2 - 1)
    assert not nchw, nchw


def test_every_command_tunes_the_allocator_unless_told_not_to(monkeypatch):
    from faceres import allocator, cli

    calls = []
    monkeypatch.setattr(cli, "tune_allocator", lambda: calls.append(1))
    assert cli.main(["weights", "list"]) == 0 and calls == [1]
    monkeypatch.setenv("FACERES_ALLOCATOR", "system")
    assert allocator.tune_allocator() is False
    monkeypatch.delenv("FACERES_ALLOCATOR")
    assert allocator.tune_allocator() is True  # glibc here


def test_autocast_training_keeps_full_resolution_activations_in_bf16():
    """Under CPU bf16 autocast (training), fp32 parameters used outside convolutions (fused-lrelu
    biases, noise weights) must not promote the activations back to fp32: at 512² that elementwise
    work ran up to 10x slower. The RGB output itself stays fp32."""
    from faceres.archs import CodecPriorNet
    from faceres.archs.stylegan2 import ModulatedConv2d

    net = CodecPriorNet(64, 64, 2, 1, 0.25, enc_blocks=2, input_skip=True)
    seen = []
    for m in net.modules():
        if isinstance(m, ModulatedConv2d):
            m.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
    assert seen[-1] == torch.bfloat16 and out.dtype == torch.float32
