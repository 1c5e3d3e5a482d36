"""Reading and writing checkpoints: format detection, config-from-shapes per family, strict
loading (safetensors, or torch.load with weights_only: no pickle ever runs code)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from .archs import InterpolatedNet, build_network
from .files import atomic_path
from .weights import WeightsError, resolve


def is_safetensors(path: Path) -> bool:
    """By suffix, or by content for a file without one (an 8-byte header length, then a JSON object)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from .safetensors or a .pth/.pt state_dict (weights_only: no code runs).
    Unwraps the usual containers: params_ema / params / g_ema / state_dict."""
    path = Path(path)
    if is_safetensors(path):
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # SafetensorError: truncated or corrupt header/data
            raise WeightsError(f"{path}: corrupt or truncated safetensors file ({_first_line(err)})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle with code objects, truncated zip, not a checkpoint at all
        raise WeightsError(f"{path}: not a loadable weights-only checkpoint ({err.__class__.__name__})") from None
    for key in ("params_ema", "params", "g_ema", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: does not contain a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


DELTA, DELTA_SCALE = "perceptual_delta.", "perceptual_delta_scale."


def quantize_perceptual_end(tensors: dict[str, torch.Tensor], shared_below: float = 1e-3) -> dict[str, torch.Tensor]:
    """An interpolated release's adversarial end stored as an int8 difference from the (already
    rounded) pixel-loss end, one fp32 scale per output channel: the two ends differ by a short
    fine-tuning, so this keeps the file near the size of one network. A tensor the fine-tuning moved by
    less than `shared_below` of its norm (the mapping MLP, fixed kernels) is stored once, for both ends."""
    out = {k: v for k, v in tensors.items() if not k.startswith("perceptual_end.")}
    for key, value in tensors.items():
        if not key.startswith("perceptual_end.") or not value.is_floating_point():
            continue
        name = key.removeprefix("perceptual_end.")
        base = tensors["fidelity_end." + name].float()
        delta = value.float() - base
        if delta.norm() <= shared_below * base.norm():
            continue
        reduce = tuple(range(1, delta.dim()))
        scale = (delta.abs().amax(dim=reduce, keepdim=True) if reduce else delta.abs().max()).clamp_min(1e-12) / 127
        out[DELTA + name] = torch.round(delta / scale).to(torch.int8)
        out[DELTA_SCALE + name] = scale.float()
    return out


def dequantize_perceptual_end(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `quantize_perceptual_end`: every pixel-loss tensor without a stored adversarial one gets
    it back from its int8 difference, or shares it when the stage left it alone (files that store both
    ends, or are no release, pass unchanged)."""
    out = {k: v for k, v in sd.items() if not k.startswith((DELTA, DELTA_SCALE))}
    for key, base in sd.items():
        name = key.removeprefix("fidelity_end.")
        if name == key or "perceptual_end." + name in sd:
            continue
        q = sd.get(DELTA + name)
        out["perceptual_end." + name] = base if q is None else base.float() + q.float() * sd[DELTA_SCALE + name]
    return out


def save_model(model: nn.Module, path: Path, arch: dict, half: bool = False, extra: dict | None = None) -> None:
    """safetensors file with the architecture config in its metadata; written atomically. In half
    precision, an interpolated release keeps its adversarial end as an int8 difference."""
    from safetensors.torch import save_file

    tensors = {k: (v.half() if half and v.is_floating_point() else v).contiguous().cpu() for k, v in model.state_dict().items()}
    if half and arch.get("arch") == "interpolated":
        tensors = quantize_perceptual_end(tensors)
    meta = {"arch": json.dumps(arch), **{k: json.dumps(v) for k, v in (extra or {}).items()}}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [err.__class__.__name__])[0]


def read_metadata(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    except Exception as err:  # SafetensorError, or metadata that is not JSON
        raise WeightsError(f"{path}: unreadable safetensors header or metadata ({_first_line(err)})") from None


def check_finite(path: Path, sd: dict[str, torch.Tensor]) -> None:
    """Refuse weights holding NaN or Inf (they turn photos black without any other error)."""
    bad = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise WeightsError(f"{path}: {len(bad)} tensor(s) hold NaN or Inf, e.g. {bad[0]} (a diverged or corrupt checkpoint)")


def gpen_config_from_state_dict(sd: dict[str, torch.Tensor]) -> dict:
    """Infer FullGenerator(size, style_dim, n_mlp, channel_multiplier, narrow, isconcat) from shapes."""
    try:
        n_ecd = len({k.split(".")[0] for k in sd if k.startswith("ecd")})
        size = 2 ** (n_ecd + 1)
        c4 = sd["generator.input.input"].shape[1]
        narrow = c4 / 512
        channel_multiplier = sd["ecd0.0.0.weight"].shape[0] / ((2**14 / size) * narrow)
        style_dim = sd["generator.style.1.weight"].shape[0]
        n_mlp = sum(1 for k in sd if k.startswith("generator.style.") and k.endswith(".weight"))
        isconcat = sd["generator.conv1.activate.bias"].numel() == 2 * c4
    except KeyError as err:
        raise WeightsError(f"not a GPEN generator state_dict (missing {err})") from None
    cm = int(channel_multiplier) if float(channel_multiplier).is_integer() else channel_multiplier
    return {
        "arch": "gpen",
        "size": size,
        "style_dim": style_dim,
        "n_mlp": n_mlp,
        "channel_multiplier": cm,
        "narrow": narrow,
        "isconcat": isconcat,
    }


def discriminator_config_from_state_dict(sd: dict[str, torch.Tensor]) -> dict:
    try:
        n_blocks = len({k.split(".")[1] for k in sd if k.startswith("convs.")}) - 1
        size = 2 ** (n_blocks + 2)
        c4 = sd["final_conv.1.bias"].shape[0]
        narrow = c4 / 512
        top = sd["convs.0.0.weight"].shape[0]
        channel_multiplier = top / ((2**14 / size) * narrow) if size >= 64 else 1
    except KeyError as err:
        raise WeightsError(f"not a StyleGAN2/GPEN discriminator state_dict (missing {err})") from None
    cm = int(channel_multiplier) if float(channel_multiplier).is_integer() else channel_multiplier
    return {"arch": "stylegan2_d", "size": size, "channel_multiplier": cm, "narrow": narrow}


def gfpgan_config_from_state_dict(sd: dict[str, torch.Tensor]) -> dict:
    """Infer GFPGANv1Clean(out_size, num_style_feat, channel_multiplier, num_mlp, different_w, narrow,
    sft_half) from shapes. input_is_latent leaves no trace in the shapes: True, as in every release."""
    from .archs.stylegan2 import channel_table

    try:
        log_size = len({k.split(".")[1] for k in sd if k.startswith("conv_body_down.")}) + 2
        dec = [sd[f"stylegan_decoder.to_rgbs.{j}.modulated_conv.weight"].shape[2] for j in range(log_size - 2)]  # 8 .. size
        c4 = sd["stylegan_decoder.constant_input.weight"].shape[1]
        style_dim = sd["stylegan_decoder.style_conv1.modulated_conv.modulation.weight"].shape[1]
        different_w = sd["final_linear.weight"].shape[0] == (2 * log_size - 2) * style_dim
        sft_half = sd["condition_scale.0.2.weight"].shape[0] == sd["conv_body_up.0.conv2.weight"].shape[0]
    except KeyError as err:
        raise WeightsError(f"not a GFPGANv1Clean state_dict (missing {err})") from None
    size, narrow = 2**log_size, c4 / 512
    cm = dec[-1] / (channel_table(size, 1, 1)[size] * narrow) if size >= 64 else 2  # no channel_multiplier below 64
    cm = int(cm) if float(cm).is_integer() else cm
    if list(channel_table(size, cm, narrow).values())[1:] != dec:
        raise WeightsError(f"GFPGANv1Clean decoder channels {dec} fit no channel_multiplier/narrow")
    n_mlp = sum(1 for k in sd if k.startswith("stylegan_decoder.style_mlp.") and k.endswith(".weight"))
    return {
        "arch": "gfpgan_v1_clean",
        "out_size": size,
        "num_style_feat": style_dim,
        "channel_multiplier": cm,
        "num_mlp": n_mlp,
        "input_is_latent": True,
        "different_w": different_w,
        "narrow": narrow,
        "sft_half": sft_half,
    }


def _count(sd: dict[str, torch.Tensor], prefix: str, field: int) -> int:
    """Number of distinct indices at dot-separated position `field` among the keys under `prefix`."""
    return len({k.split(".")[field] for k in sd if k.startswith(prefix)})


def restoreformer_config_from_state_dict(sd: dict[str, torch.Tensor]) -> dict:
    """Infer RestoreFormer(n_embed, embed_dim, ch, ch_mult, num_res_blocks, z_channels) from shapes. The head
    count leaves no trace (8, as released); attention sits at 16^2 as released, so resolution = 16 * 2^(levels-1)."""
    try:
        n_embed, embed_dim = sd["quantize.embedding.weight"].shape
        ch = sd["encoder.conv_in.weight"].shape[0]
        levels = _count(sd, "encoder.down.", 2)
        ch_mult = [sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in range(levels)]
        num_res_blocks = _count(sd, "encoder.down.0.block.", 4)
        z_channels = sd["encoder.conv_out.weight"].shape[0]
    except KeyError as err:
        raise WeightsError(f"not a RestoreFormer state_dict (missing {err})") from None
    return {
        "arch": "restoreformer",
        "n_embed": n_embed,
        "embed_dim": embed_dim,
        "ch": ch,
        "ch_mult": ch_mult,
        "num_res_blocks": num_res_blocks,
        "resolution": 16 * 2 ** (levels - 1),
        "z_channels": z_channels,
        "heads": 8,
    }


def codeformer_config_from_state_dict(sd: dict[str, torch.Tensor]) -> dict:
    """Infer CodeFormer(dim_embd, codebook_size, n_layers, connect_list, nf, emb_dim) from shapes. The head
    count leaves no trace (8, as released); the code map must be 16x16 (512^2 input)."""
    try:
        latent_size, dim_embd = sd["position_emb"].shape
        codebook_size, emb_dim = sd["quantize.embedding.weight"].shape
        nf = sd["encoder.blocks.0.weight"].shape[0]
    except KeyError as err:
        raise WeightsError(f"not a CodeFormer state_dict (missing {err})") from None
    if latent_size != 256:
        raise WeightsError(f"CodeFormer position_emb has {latent_size} rows; the 512^2 network needs 256 (a 16x16 code map)")
    connect_list = sorted({k.split(".")[1] for k in sd if k.startswith("fuse_convs_dict.")}, key=int)
    return {
        "arch": "codeformer",
        "dim_embd": dim_embd,
        "codebook_size": codebook_size,
        "n_head": 8,
        "n_layers": _count(sd, "ft_layers.", 1),
        "connect_list": connect_list,
        "nf": nf,
        "emb_dim": emb_dim,
    }


def arch_config_for(path: Path, sd: dict[str, torch.Tensor]) -> dict:
    if is_safetensors(path):
        meta = read_metadata(path)
        if "arch" not in meta:
            raise WeightsError(f"{path}: safetensors file without faceres 'arch' metadata")
        return meta["arch"]
    if any(k.startswith("ecd0.") for k in sd):
        return gpen_config_from_state_dict(sd)
    if "stylegan_decoder.constant_input.weight" in sd and "conv_body_first.weight" in sd:
        return gfpgan_config_from_state_dict(sd)
    if "position_emb" in sd and "ft_layers.0.self_attn.in_proj_weight" in sd:
        return codeformer_config_from_state_dict(sd)
    if "quantize.embedding.weight" in sd and "decoder.mid.attn_1.q.weight" in sd:
        return restoreformer_config_from_state_dict(sd)
    if "final_conv.1.bias" in sd:
        return discriminator_config_from_state_dict(sd)
    raise WeightsError(
        f"{path}: unrecognised checkpoint layout (neither faceres, GPEN generator, GFPGAN, RestoreFormer, CodeFormer nor discriminator)"
    )


def load_model(name_or_path: str | os.PathLike, allow_download: bool = True) -> tuple[nn.Module, dict]:
    """Build the architecture recorded for a checkpoint and load it strictly. Returns (model, config)."""
    path = resolve(name_or_path, allow_download)
    sd = dequantize_perceptual_end(load_state_dict_file(path))
    check_finite(path, sd)
    config = dict(arch_config_for(path, sd))
    model = build_network(**config)
    try:
        model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
        raise WeightsError(f"{path}: does not match architecture {config} ({first})") from None
    return model.eval(), config


def interpolated_release(fidelity_model: nn.Module, config: dict, perceptual: str | os.PathLike) -> tuple[nn.Module, dict]:
    """One `InterpolatedNet` from a pixel-loss network and the adversarial stage of the same
    architecture (`perceptual`, a file). Returns (model, config)."""
    other, other_config = load_model(perceptual)
    if other_config != config:
        raise WeightsError(f"{perceptual}: architecture {other_config} is not the pixel-loss network's {config}")
    net = InterpolatedNet(config)
    net.fidelity_end.load_state_dict(fidelity_model.state_dict())
    net.perceptual_end.load_state_dict(other.state_dict())
    return net.eval(), {"arch": "interpolated", "base": config}


def init_generator_from(model: nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Copy a StyleGAN2 prior into `model` (a CodecPriorNet's `generator`, or a bare generator):
    from a GPEN-BFR state_dict (`generator.*` keys; its encoder is skipped) or from a prior-stage
    export (bare keys). Returns {"loaded": [...], "new": [...], "skipped": [...]}, names relative to
    the generator."""
    target = getattr(model, "generator", model)
    prior = {k.removeprefix("generator."): v for k, v in sd.items() if not k.startswith(("ecd", "final_linear"))}
    own = target.state_dict()
    mismatched = [k for k, v in prior.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        raise WeightsError(f"prior does not fit this network: {len(mismatched)} tensors differ in shape, e.g. {mismatched[0]}")
    loaded = [k for k in prior if k in own]
    target.load_state_dict({k: prior[k].float() for k in loaded}, strict=False)
    skipped = [k for k in sd if k.removeprefix("generator.") not in own]
    return {"loaded": loaded, "new": [k for k in own if k not in prior], "skipped": skipped}
