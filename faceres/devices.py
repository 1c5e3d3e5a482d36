"""Device and precision selection shared by inference and training."""

import functools

import torch


def pick_device(device: str = "auto") -> torch.device:
    """auto: CUDA, then Apple MPS, then CPU."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


@functools.cache
def cpu_has_bf16() -> bool:
    """True where the CPU computes bf16 natively (AMX or AVX512-BF16), so bf16 is faster, not emulated."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def use_bf16(precision: str, device: torch.device) -> bool:
    """precision auto | fp32 | bf16 -> whether to run in bf16 on `device` (auto: where the hardware has it)."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


def to_channels_last(module: torch.nn.Module) -> torch.nn.Module:
    """NHWC layout for every 4-D parameter and buffer (Module.to(memory_format=...) rejects the
    StyleGAN2 modulated convs' 5-D weights)."""
    for t in list(module.parameters()) + list(module.buffers()):
        if t.ndim == 4:
            t.data = t.data.contiguous(memory_format=torch.channels_last)
    return module


def prepare_for_inference(net: torch.nn.Module, precision: str = "auto", device: torch.device | str = "cpu") -> torch.nn.Module:
    """Put a restoration network (the `faceres.archs.contract` interface) in its fastest accurate form:
    eval mode, no grads, on `device`; in bf16 where `precision` asks for it (weights, buffers and stored
    noise cast, not autocast: fp32 biases and noise would promote every layer back to fp32) with NHWC
    activations. `net.restore` then takes and returns fp32 whatever the network runs in."""
    device = torch.device(device)
    net = net.eval().requires_grad_(False).to(device)
    if not use_bf16(precision, device):
        return net
    to_channels_last(net.to(torch.bfloat16))
    restore = type(net).restore.__get__(net)

    def restore_bf16(x: torch.Tensor, fidelity: float = 1.0) -> torch.Tensor:
        return restore(x.to(torch.bfloat16, memory_format=torch.channels_last), fidelity).float()

    net.restore = restore_bf16
    return net
