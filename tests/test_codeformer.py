"""CodeFormer against the upstream reference tensors (shared/reference/codeformer-fixtures), strict loading
of files in the released layout (`params_ema`), the fidelity = w mapping, and `faceres restore` with such a file."""

import hashlib
import json
import re

import cv2
import numpy as np
import pytest
import recipes
import torch
import torch.nn.functional as F

from faceres.archs import CodeFormer
from faceres.archs.codeformer import adain
from faceres.checkpoints import codeformer_config_from_state_dict, load_model
from faceres.cli import main
from faceres.weights import REGISTRY, WeightsError

TOL = dict(rtol=1e-4, atol=1e-4)  # README §7: lq_feat, logits, generator input (and the encoder features)
OUT_TOL = dict(rtol=1e-4, atol=2e-4)  # README §7: output views
RELEASE = dict(dim_embd=512, codebook_size=1024, n_head=8, n_layers=9, connect_list=["32", "64", "128", "256"], nf=64, emb_dim=256)
SMALL = dict(dim_embd=64, codebook_size=64, n_layers=1, nf=32, emb_dim=32)  # the smallest widths the layout allows
RUNS = ["w0_noadain", "w0_adain", "w0.5_adain", "w1_adain"]


@pytest.fixture(scope="module")
def cf_dir(shared):
    return recipes.reference_dir(shared, "codeformer")


@pytest.fixture(scope="module")
def ref(cf_dir):
    return torch.load(cf_dir / "codeformer512_recipe.pt", weights_only=True)


def recipe_value(key: str, shape) -> torch.Tensor:
    """README §4; CodeFormer's one exception: the position embedding is 2·z."""
    return recipes.recipe_value(key, shape, lambda k, z, _: 2.0 * z if k == "position_emb" else None)


def fixture_input(ref) -> torch.Tensor:
    """README §5: batch 2 at 512^2 from integers only (per-pixel noise, 16x16-pixel blocks)."""
    u8 = recipes.input_u8()
    assert hashlib.sha256(u8.numpy().tobytes()).hexdigest() == ref["input_u8_sha256"]
    return ((u8.double() / 255.0).float() - 0.5) / 0.5


def stats(t: torch.Tensor) -> torch.Tensor:
    """(B, C, 5) float64: mean, unbiased std, min, max, mean |x| per sample and channel."""
    flat = t.double().flatten(2)
    return torch.stack([flat.mean(2), flat.std(2), flat.amin(2), flat.amax(2), flat.abs().mean(2)], dim=2)


def assert_output(out: torch.Tensor, expected: dict, what: str):
    views = {"grid_a": out[..., ::8, ::8], "grid_b": out[..., 7::8, 7::8], "pool8": F.avg_pool2d(out, 8), "stats": stats(out)}
    for key, ours in views.items():
        torch.testing.assert_close(ours, expected[key].to(ours.dtype), **OUT_TOL, msg=lambda m, key=key: f"{what} {key}: {m}")


# ---------------------------------------------------------------- the released configuration with recipe weights


@pytest.fixture(scope="module")
def released(cf_dir, tmp_path_factory):
    """The released key list with recipe weights, saved as codeformer.pth ({'params_ema': ...}, as the release)
    and read back through load_model. The 376 MB file is deleted once loaded."""
    keys = json.loads((cf_dir / "keys_codeformer_512.json").read_text())["keys"]
    path = tmp_path_factory.mktemp("codeformer") / "codeformer.pth"
    torch.save({"params_ema": {key: recipe_value(key, shape) for key, shape, _ in keys}}, path)
    net, config = load_model(path)
    path.unlink()
    return net, config, keys


def test_released_key_list_loads_strictly_with_inferred_config(released, ref):
    net, config, keys = released
    assert len(keys) == 515
    assert config == {"arch": "codeformer", **RELEASE}
    assert isinstance(net, CodeFormer) and net.size == 512 and net.spec.template == "ffhq"
    own = net.state_dict()
    assert sum(v.numel() for v in own.values()) == 94_112_707 and not list(net.buffers())  # README §3
    assert [(k, list(v.shape)) for k, v in own.items()] == [(k, s) for k, s, _ in keys]  # same keys, shapes and order
    # the recipe, written to the file and read back, is bit for bit the reference's (README §4 checks)
    order = ref["recipe_check"]["keys"]
    assert [hashlib.sha256(own[k].numpy().tobytes()).hexdigest() for k in order] == ref["recipe_check"]["sha256"]
    assert hashlib.sha256(b"".join(own[k].numpy().tobytes() for k in order)).hexdigest() == ref["recipe_check"]["sha256_all"]


@pytest.fixture(scope="module")
def predicted(released, ref):
    """Encoder and transformer on the fixture input, once for the slow tests."""
    x = fixture_input(ref)
    with torch.no_grad():
        return (x, *released[0].predict_codes(x))


@pytest.mark.slow  # with the output tests: about 2 min on 2 busy cores (encoder + transformer about 12 s, each decode 10-40 s)
def test_codes_and_encoder_features_match_reference(predicted, released, ref):
    x, logits, lq_feat, skips = predicted
    top_idx = logits.argmax(-1)
    assert torch.equal(top_idx, ref["logits_top_idx"])  # exact: the codes decide everything downstream
    torch.testing.assert_close(lq_feat, ref["lq_feat"], **TOL)
    torch.testing.assert_close(logits[:, ::17], ref["logits_diag_rows"], **TOL)
    top2 = logits.topk(2, dim=-1).values
    torch.testing.assert_close(top2[..., 0], ref["logits_top1"], **TOL)
    torch.testing.assert_close(top2[..., 0] - top2[..., 1], ref["logits_top2_gap"], **TOL)
    torch.testing.assert_close(logits.logsumexp(-1), ref["logits_logsumexp"], **TOL)
    torch.testing.assert_close(skips[32][..., ::4, ::4], ref["encoder_feat_32"], **TOL)
    assert sorted(ref["encoder_feat_stats"], key=int) == [str(s) for s in sorted(skips)]  # 16 ... 512
    for size, expected in ref["encoder_feat_stats"].items():
        torch.testing.assert_close(stats(skips[int(size)]), expected, **TOL, msg=lambda m, size=size: f"encoder feature {size}: {m}")
    codes = released[0].quantize.lookup(top_idx, 16)
    torch.testing.assert_close(adain(codes, lq_feat), ref["generator_input_adain"], **TOL)


@pytest.mark.slow
@pytest.mark.parametrize("run", RUNS)
def test_outputs_match_reference(run, predicted, released, ref):
    net, expected = released[0], ref[run]
    x, logits, lq_feat, skips = predicted
    w, with_adain = expected["w"], expected["adain"]
    with torch.no_grad():
        if run == "w0.5_adain":  # the inference default, through the whole forward
            out, _, _ = net(x, w=w, adain_codes=with_adain)
            codes = adain(net.quantize.lookup(logits.argmax(-1), 16), lq_feat)
        else:
            codes = net.quantize.lookup(logits.argmax(-1), 16)
            codes = adain(codes, lq_feat) if with_adain else codes
            out = net.decode(codes, skips, w)
    torch.testing.assert_close(stats(codes), expected["generator_input_stats"], **TOL)
    assert_output(out, expected["output"], run)


# ---------------------------------------------------------------- fidelity, config inference, bad files


def test_restore_is_forward_with_w_equal_to_fidelity_and_adain():
    net = CodeFormer(**SMALL).eval()
    calls = []
    net.forward = lambda x, w=0.0, adain_codes=False: calls.append((w, adain_codes)) or (3 * x, None, None)
    x = torch.rand(1, 3, 512, 512) * 2 - 1
    out = net.restore(x, fidelity=0.3)
    assert calls == [(0.3, True)]  # faceres fidelity = CodeFormer's w; AdaIN on, as upstream inference
    assert torch.equal(out, (3 * x).clamp(-1, 1))
    assert net.spec.fidelity_range == (0.0, 1.0) and net.spec.has_fidelity
    assert "1 = closest to the input" in net.spec.fidelity_meaning and "w" in net.spec.fidelity_meaning
    with pytest.raises(ValueError, match=r"fidelity must be in \[0, 1\]"):
        net.restore(x, fidelity=1.5)


def small_state_dict() -> dict[str, torch.Tensor]:
    return {k: recipe_value(k, v.shape) for k, v in CodeFormer(**SMALL).state_dict().items()}


def test_config_inference_and_bad_files(tmp_path):
    sd = small_state_dict()
    config = codeformer_config_from_state_dict(sd)
    assert config == {"arch": "codeformer", **SMALL, "n_head": 8, "connect_list": ["32", "64", "128", "256"]}
    partial = {k: v for k, v in sd.items() if not k.startswith(("fuse_convs_dict.32.", "fuse_convs_dict.256."))}
    assert codeformer_config_from_state_dict(partial)["connect_list"] == ["64", "128"]
    bad = dict(sd, position_emb=sd["position_emb"][:64])
    with pytest.raises(WeightsError, match="needs 256"):
        codeformer_config_from_state_dict(bad)
    del sd["ft_layers.0.linear2.bias"]
    torch.save({"params_ema": sd}, tmp_path / "broken.pth")
    with pytest.raises(WeightsError, match=r"broken\.pth: does not match .*linear2\.bias"):
        load_model(tmp_path / "broken.pth")


# ---------------------------------------------------------------- end to end through the pipeline


@pytest.fixture(scope="module")
def small_release_file(tmp_path_factory):
    """A codeformer.pth-format file ({'params_ema': ...}, the release's key names, 512 crops) with recipe weights
    stored in fp16, at the smallest widths the layout allows (18 M instead of 94 M parameters)."""
    path = tmp_path_factory.mktemp("codeformer_small") / "codeformer.pth"
    torch.save({"params_ema": {k: v.half() for k, v in small_state_dict().items()}}, path)
    return path


@pytest.mark.slow
def test_cli_restore_with_released_format_file_and_fidelity(small_release_file, weights_env, shared, tmp_path):
    photo = shared / "data/multi-face/couple.jpg"
    src = cv2.imread(str(photo))
    faces = {}
    for fidelity in ("0.5", "0"):  # 0 skips the fusion blocks: the cheaper second run
        out = tmp_path / fidelity
        args = ["--model", small_release_file, "--detector", "retinaface_mobile0.25", "--only-center-face", "--fidelity", fidelity]
        assert main([str(a) for a in ["restore", photo, "-o", out, "-s", 1, *args]]) == 0
        report = json.loads((out / "report.json").read_text())
        assert report["images"][0]["faces"] == 1 and report["failed"] == 0
        assert cv2.imread(str(out / "restored_imgs/couple.jpg")).shape == src.shape
        assert cv2.imread(str(out / "cmp/couple_00.png")).shape == (512, 1024, 3)
        faces[fidelity] = [cv2.imread(str(out / f"{d}/couple_00.png")) for d in ("cropped_faces", "restored_faces")]
        assert all(face.shape == (512, 512, 3) for face in faces[fidelity])
    assert np.array_equal(faces["0.5"][0], faces["0"][0])  # the same crop went in ...
    diff = np.abs(faces["0.5"][1].astype(int) - faces["0"][1].astype(int))
    assert diff.mean() > 5  # ... and w changed what came out


def test_registry_entry_points_at_the_release(tmp_path, monkeypatch):
    monkeypatch.setenv("FACERES_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("FACERES_OFFLINE", "1")
    spec = REGISTRY["codeformer"]
    assert spec.kind == "restorer" and spec.filename == "codeformer.pth" and spec.arch == {"arch": "codeformer"}
    assert spec.url == "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth"
    assert "S-Lab License 1.0" in spec.licence and "non-commercial" in spec.licence
    assert spec.size == 376_637_898 and spec.sha256 is None  # only a truncated checksum is known (anchors.md)
    with pytest.raises(WeightsError, match=re.escape(spec.url)):
        load_model("codeformer")
