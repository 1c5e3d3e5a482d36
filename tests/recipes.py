"""The reference fixtures' recipes (READMEs in ../shared/reference/*-fixtures), shared by the anchors'
tests: released-configuration weights regenerated key by key, and the integer-only test input."""

import math
import zlib
from pathlib import Path

import pytest
import torch


def recipe_value(key: str, shape, special=None) -> torch.Tensor:
    """One generator per key, seeded with the key's CRC32: biases 0.1·z, 1-D weights 1 + 0.1·z, other
    weights z / sqrt(fan-in), anything else z. `special(key, z, shape)` may return a family's exception."""
    g = torch.Generator()
    g.manual_seed(zlib.crc32(key.encode("utf-8")))
    z = torch.randn(list(shape), generator=g)
    if special is not None and (value := special(key, z, shape)) is not None:
        return value
    if key.endswith("bias"):
        return 0.1 * z
    if key.endswith("weight") and len(shape) == 1:
        return 1.0 + 0.1 * z
    if key.endswith("weight"):
        return z / math.sqrt(math.prod(shape[1:]))
    return z


def hash_u8(shape, offset: int) -> torch.Tensor:
    """Deterministic uint8 noise from integers only (the same on every platform)."""
    x = (torch.arange(math.prod(shape), dtype=torch.int64) + offset) & 0xFFFFFFFF
    x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    return (((x >> 16) ^ x) & 0xFF).to(torch.uint8).reshape(shape)


def input_u8() -> torch.Tensor:
    """The 512² batch of two: per-pixel noise, and 16x16-pixel blocks."""
    blocks = hash_u8((3, 32, 32), 1 << 20).repeat_interleave(16, 1).repeat_interleave(16, 2)
    return torch.stack([hash_u8((3, 512, 512), 0), blocks])


def reference_dir(shared: Path, family: str) -> Path:
    """../shared/reference/<family>-fixtures, or skip the test saying where it looked."""
    d = shared / "reference" / f"{family}-fixtures"
    if not d.is_dir():
        pytest.skip(f"{family} fixtures not found at {d}")
    return d
