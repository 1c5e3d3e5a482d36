import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from faceres.archs import StyleGAN2Discriminator, freeze_d
from faceres.data import DEGRADATION_PRESETS, DatasetOpts, DegradationOpts, FaceDataset, IterationSampler, degrade, sample_params
from faceres.data.components import COMPONENTS, boxes_from_mask, component_boxes, components_from_68, prepare_landmarks
from faceres.data.dataset import ArrayCache, list_faces, load_face
from faceres.losses import artifact_loss, excess_detail, excess_detail_loss, ssim_loss
from faceres.metrics import ssim
from faceres.train.loop import latest_checkpoint, train
from faceres.train.models import build_model
from faceres.train.options import OptionsError, load_options
from faceres.train.restoration import visibly_degraded

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "options/train_faceres_tiny.yml"


@pytest.fixture(scope="session")
def tiny_landmarks(shared, tmp_path_factory) -> Path:
    opts = load_options(TINY, ["train.losses.gan_local=0"])
    files = list_faces(opts.datasets.train.dataroot, opts.datasets.train.subset)
    out = tmp_path_factory.mktemp("lm") / "landmarks68.json"
    return prepare_landmarks(files[0].parent, out, progress=False, files=files)


@pytest.fixture(scope="session")
def loss_backbones(tmp_path_factory) -> dict[str, Path]:
    """Randomly initialised files in the official formats (torchvision VGG19, facexlib IR-SE50):
    they exercise the real loaders and the loss wiring; they carry no knowledge."""
    from facexlib.recognition.arcface_arch import Backbone
    from torchvision.models import vgg19

    d = tmp_path_factory.mktemp("backbones")
    torch.manual_seed(0)
    vgg = {f"features.{k}": v for k, v in vgg19().features.state_dict().items()}
    torch.save(vgg, d / "vgg19-random.pth")
    torch.save(Backbone(50, 0.6, "ir_se").state_dict(), d / "arcface-random.pth")
    return {"vgg": d / "vgg19-random.pth", "arcface": d / "arcface-random.pth"}


def tiny_opts(tmp_path, tiny_landmarks, loss_backbones, *extra):
    return load_options(
        TINY,
        [
            f"path.experiments_root={tmp_path}",
            f"datasets.train.landmarks={tiny_landmarks}",
            f"train.losses.feature_matching.weights={loss_backbones['vgg']}",
            f"train.losses.identity.weights={loss_backbones['arcface']}",
            *extra,
        ],
    )


# ------------------------------------------------------------------ degradation


def test_degradation_is_reproducible_and_in_range(shared):
    opts = DegradationOpts()
    draws = [sample_params(np.random.default_rng(s), opts) for s in range(300)]
    assert draws[:5] == [sample_params(np.random.default_rng(s), opts) for s in range(5)]
    for p in draws:
        assert opts.scale[0] <= p["scale"] <= opts.scale[1]
        assert opts.noise[0] <= p["noise"] <= opts.noise[1]
        assert opts.jpeg[0] <= p["jpeg"] <= opts.jpeg[1]
        if p["blur"]["type"] == "gaussian":
            sigmas = (p["blur"]["sigma_x"], p["blur"]["sigma_y"])
            assert opts.blur_sigma[0] <= min(sigmas) <= max(sigmas) <= opts.blur_sigma[1]
    kinds = {p["blur"]["type"] for p in draws}
    assert kinds == {"gaussian", "motion"}
    gt = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    a, b = degrade(gt, draws[0]), degrade(gt, draws[0])
    assert np.array_equal(a, b) and a.shape == gt.shape and 0 <= a.min() and a.max() <= 1
    ds = FaceDataset(DatasetOpts(str(shared / "data/celebahq-512/images"), size=64, subset=(0, 4)))
    assert torch.equal(ds[(1, 7)]["lq"], ds[(1, 7)]["lq"])
    assert not torch.equal(ds[(1, 7)]["lq"], ds[(1, 8)]["lq"])


def test_mild_share_draws_near_clean_pairs_and_keeps_old_draws():
    paper, mixed = DegradationOpts(), DegradationOpts(mild_prob=0.3)
    mild = DEGRADATION_PRESETS["mild"]
    draws = [sample_params(np.random.default_rng(s), mixed) for s in range(400)]
    is_mild = [p["scale"] <= mild.scale[1] and p["noise"] <= mild.noise[1] and p["blur"]["type"] != "motion" for p in draws]
    assert 0.2 < np.mean(is_mild) < 0.45  # the paper ranges also land there, rarely
    assert any(p["blur"]["type"] == "none" and p["jpeg"] is None for p in draws)  # some are untouched but for resizing
    assert [sample_params(np.random.default_rng(s), paper) for s in range(5)] == [
        sample_params(np.random.default_rng(s), DegradationOpts(mild_prob=0.0)) for s in range(5)
    ]
    gt = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    clean = {**sample_params(np.random.default_rng(0), mild), "blur": {"type": "none"}, "scale": 1.0, "noise": 0.0, "jpeg": None}
    assert np.allclose(degrade(gt, clean), gt, atol=1e-6)
    with pytest.raises(ValueError, match="mild_prob"):
        DegradationOpts(mild_prob=1.5).validate()


def test_clean_share_leaves_pairs_untouched_and_keeps_old_draws():
    gt = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    opts = DegradationOpts(clean_prob=0.2, mild_prob=0.35)
    untouched = [np.array_equal(degrade(gt, sample_params(np.random.default_rng(s), opts)), gt) for s in range(200)]
    assert 0.1 < np.mean(untouched) < 0.3
    old = DegradationOpts(mild_prob=0.35)
    assert [sample_params(np.random.default_rng(s), old) for s in range(5)] == [
        sample_params(np.random.default_rng(s), DegradationOpts(mild_prob=0.35, clean_prob=0.0)) for s in range(5)
    ]
    with pytest.raises(ValueError, match="clean_prob"):
        DegradationOpts(clean_prob=-0.1).validate()


def test_pair_colour_jitter_shifts_gt_and_lq_alike(shared):
    """'pair' jitter is an augmentation: the model sees the same cast in LQ and GT, so it learns to keep it."""
    root = str(shared / "data/celebahq-512/images")
    clean = dict(blur_prob=0.0, scale=(1.0, 1.0), noise=(0.0, 0.0), jpeg_prob=0.0)
    for on in ("lq", "pair"):
        jittered = DegradationOpts(**clean, color_jitter_prob=1.0, color_jitter_on=on)
        ds = FaceDataset(DatasetOpts(root, size=64, subset=(0, 2), degradation=jittered))
        plain = FaceDataset(DatasetOpts(root, size=64, subset=(0, 2), degradation=DegradationOpts(**clean, color_jitter_prob=0.0)))
        item, ref = ds[(0, 3)], plain[(0, 3)]
        lq_shift = (item["lq"] - ref["lq"]).mean((1, 2))
        gt_shift = (item["gt"] - ref["gt"]).mean((1, 2))
        assert lq_shift.abs().max() > 2 / 255
        assert torch.allclose(gt_shift, lq_shift if on == "pair" else torch.zeros(3), atol=0.5 / 255), on
    with pytest.raises(ValueError, match="color_jitter_on"):
        DegradationOpts(color_jitter_on="gt").validate()


def test_degradation_rejects_empty_range():
    with pytest.raises(ValueError, match="noise"):
        DegradationOpts(noise=(5, 1)).validate()


def test_iteration_sampler_resumes_exactly_and_splits_ranks():
    full = list(IterationSampler(10, 2, seed=3, total_iter=8))
    resumed = list(IterationSampler(10, 2, seed=3, total_iter=8, start_iter=4))
    assert full[8:] == resumed
    r0 = list(IterationSampler(10, 2, seed=3, total_iter=2, rank=0, world=2))
    r1 = list(IterationSampler(10, 2, seed=3, total_iter=2, rank=1, world=2))
    assert not {i for i, _ in r0[:2]} & {i for i, _ in r1[:2]}


# ------------------------------------------------------------------ component boxes


def test_flip_swaps_eyes_without_mutating():
    comp = {"left_eye": [100.0, 200.0, 20.0], "right_eye": [300.0, 200.0, 20.0], "mouth": [200.0, 350.0, 40.0]}
    before = json.dumps(comp)
    boxes = component_boxes(comp, 512, flip=True)
    assert json.dumps(comp) == before
    np.testing.assert_allclose(boxes[0], [511 - 300 - 20, 180, 511 - 300 + 20, 220])  # new left eye = mirrored right eye
    np.testing.assert_allclose(boxes[2][[0, 2]].mean(), 511 - 200)


def test_landmark_boxes_agree_with_parsing_masks(shared, tiny_landmarks):
    from PIL import Image

    marks = json.loads(tiny_landmarks.read_text())
    errors = {c: [] for c in COMPONENTS}
    for name, pts in marks.items():
        mask = np.asarray(Image.open(shared / "data/celebahq-512/masks" / name.replace(".jpg", ".png")))
        ref = boxes_from_mask(mask)
        ours = components_from_68(np.asarray(pts))
        for c in COMPONENTS:
            if c in ref:
                errors[c].append(np.hypot(ours[c][0] - ref[c][0], ours[c][1] - ref[c][1]))
    for c in COMPONENTS:  # centres within a few percent of the 512 face
        assert np.median(errors[c]) < 12, (c, errors[c])


# ------------------------------------------------------------------ options


def test_options_reject_unknown_and_mistyped_keys(shared):
    with pytest.raises(OptionsError, match="train.batchsize"):
        load_options(TINY, ["train.batchsize=4"])
    with pytest.raises(OptionsError, match="train.batch_size"):
        load_options(TINY, ["train.batch_size=four"])
    with pytest.raises(OptionsError, match="landmarks"):
        load_options(TINY, ["datasets.train.landmarks=null"])  # local Ds need boxes


def test_missing_loss_weights_fail_loudly(shared, tmp_path, tiny_landmarks, monkeypatch):
    monkeypatch.setenv("FACERES_OFFLINE", "1")
    monkeypatch.setenv("FACERES_WEIGHTS_DIR", str(tmp_path))
    opts = load_options(TINY, [f"datasets.train.landmarks={tiny_landmarks}"])
    with pytest.raises(OptionsError, match="VGG19"):
        build_model(opts, torch.device("cpu"))
    opts = load_options(TINY, [f"datasets.train.landmarks={tiny_landmarks}", "train.losses.feature_matching.type=discriminator_features"])
    with pytest.raises(OptionsError, match="ArcFace"):
        build_model(opts, torch.device("cpu"))


# ------------------------------------------------------------------ training


@pytest.mark.slow  # > 20 s on 2 shared cores
def test_tiny_training_with_every_paper_loss(shared, tmp_path, tiny_landmarks, loss_backbones, capsys):
    opts = tiny_opts(tmp_path, tiny_landmarks, loss_backbones)
    trainer = train(opts, "cpu")
    out = capsys.readouterr().out
    assert "VGG19 feature matching" in out and "identity (ArcFace" in out and "gan_local 3.0" in out
    log = [json.loads(line) for line in (opts.experiment_dir / "train_log.jsonl").read_text().splitlines()]
    steps = [e for e in log if e["kind"] == "train"]
    assert len(steps) == 4
    for key in ("l_l1", "l_ms", "l_gan", "l_local", "l_vgg", "l_id", "l_d", "l_d_local"):
        assert all(np.isfinite(e[key]) for e in steps), key
    assert any("r1" in e for e in steps)
    assert (opts.experiment_dir / "visualization/val_00000004.png").is_file()
    # checkpoint round trip
    state = torch.load(opts.experiment_dir / "checkpoints/iter_00000004.pt", weights_only=True)
    fresh = build_model(opts, torch.device("cpu"))
    fresh.load_state_dict(state)
    assert fresh.iter == 4
    for a, b in zip(fresh.net_g.state_dict().values(), trainer.net_g.state_dict().values()):
        assert torch.equal(a, b)
    from faceres.checkpoints import load_model

    model, config = load_model(opts.experiment_dir / "models/net_g_ema_00000004.safetensors")
    assert config["size"] == 64


@pytest.mark.slow  # > 20 s on 2 shared cores
def test_substitute_feature_loss_is_named_not_vgg(shared, tmp_path, tiny_landmarks, loss_backbones, capsys):
    opts = tiny_opts(
        tmp_path, tiny_landmarks, loss_backbones, "train.losses.feature_matching.type=discriminator_features", "train.total_iter=1"
    )
    train(opts, "cpu")
    out = capsys.readouterr().out
    assert "discriminator-feature matching (not VGG)" in out and "l_dfeat" in out and "l_vgg" not in out


@pytest.mark.slow  # > 20 s on 2 shared cores
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_is_exact(shared, tmp_path, tiny_landmarks, loss_backbones, precision):
    """A run stopped at iteration 2 and continued with `faceres train -opt RUN/options.yml` (the
    options it saved) ends bit-identical to a straight run."""
    from faceres.cli import main

    extra = [
        "train.losses.identity.type=none",
        "train.losses.feature_matching.type=discriminator_features",
        "val.every=100",
        f"train.precision={precision}",
    ]
    straight = train(tiny_opts(tmp_path / "a", tiny_landmarks, loss_backbones, *extra), "cpu")
    opts_b = tiny_opts(tmp_path / "b", tiny_landmarks, loss_backbones, *extra)
    train(opts_b, "cpu", max_iters=2)
    saved = opts_b.experiment_dir / "options.yml"
    assert load_options(saved) == dataclasses.replace(opts_b, path=dataclasses.replace(opts_b.path, resume="auto"))
    assert main(["train", "-opt", str(saved), "--device", "cpu"]) == 0
    state = torch.load(latest_checkpoint(opts_b.experiment_dir), weights_only=True)
    resumed = build_model(load_options(saved), torch.device("cpu"))
    resumed.load_state_dict(state)
    assert resumed.iter == straight.iter == 4
    assert resumed.use_bf16 == (precision == "bf16")
    assert all(v.dtype == torch.float32 for v in state["net_g"].values())  # bf16 is autocast: weights stay fp32
    for name in ("net_g", "net_g_ema", "net_d", "local_d"):
        sa, sb = getattr(straight, name).state_dict(), getattr(resumed, name).state_dict()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), (name, k)
    assert not list(opts_b.experiment_dir.glob("options_until_*.yml"))  # same options: nothing to keep aside


def test_sigterm_saves_a_checkpoint_and_the_run_resumes(shared, tmp_path, tiny_landmarks, loss_backbones):
    """`kill` (SIGTERM) on a training run: it finishes the iteration, saves a checkpoint there and exits
    cleanly, so nothing is lost; the run's saved options continue from it."""
    import signal
    import time

    sets = [
        f"path.experiments_root={tmp_path}",
        f"datasets.train.landmarks={tiny_landmarks}",
        "train.losses.identity.type=none",
        "train.losses.feature_matching.type=discriminator_features",
        "logger.print_every=1",
        "logger.save_every=1000",
        "val.every=1000",
    ]
    command = lambda iters: (
        [sys.executable, "-m", "faceres.cli", "train", "-opt", str(TINY), "--device", "cpu", "--max-iters", str(iters)]
        + [a for s in sets for a in ("--set", s)]
    )
    scalars = tmp_path / "faceres_tiny/train_log.jsonl"  # written from the first logged iteration on
    sets.append("datasets.train.num_workers=1")
    proc = subprocess.Popen(command(1000), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not scalars.exists():
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)  # the whole process group, data worker included, as `pkill -f` or Ctrl-C do
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    stopped = int(out.split("stopped by SIGTERM at iteration ")[1].split(";")[0])
    assert 1 <= stopped < 1000
    assert latest_checkpoint(tmp_path / "faceres_tiny").name == f"iter_{stopped:08d}.pt"
    saved = tmp_path / "faceres_tiny/options.yml"
    resumed = subprocess.run([*command(1)[:5], str(saved), "--device", "cpu", "--max-iters", "1"], capture_output=True, text=True)
    assert f"at iteration {stopped}" in resumed.stdout, resumed.stdout + resumed.stderr


def step_once(opts):
    """A training model built from `opts` after one step on two faces, its D and G states before the
    step, and the step's logs."""
    trainer = build_model(opts, torch.device("cpu"))
    d_before = {k: v.clone() for k, v in trainer.net_d.state_dict().items()}
    g_before = {k: v.clone() for k, v in trainer.net_g.state_dict().items()}
    batch = torch.utils.data.default_collate([FaceDataset(opts.datasets.train)[(i, i)] for i in range(2)])
    return trainer, d_before, g_before, trainer.step(batch)


def unchanged(before: dict, net) -> bool:
    return all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())


def changed(before: dict, net) -> bool:
    return any(not torch.equal(v, net.state_dict()[k]) for k, v in before.items())


@pytest.mark.slow
def test_freeze_d_keeps_frozen_layers_bit_identical(shared, tmp_path, tiny_landmarks, loss_backbones):
    opts = tiny_opts(
        tmp_path,
        tiny_landmarks,
        loss_backbones,
        "train.losses.identity.type=none",
        "train.losses.feature_matching.type=discriminator_features",
    )
    trainer, before, _, _ = step_once(opts)
    after = trainer.net_d.state_dict()
    frozen = [k for k in before if k.startswith(("convs.0.", "convs.1.")) and not k.endswith("kernel")]
    trained = [k for k in before if not k.startswith(("convs.0.", "convs.1.")) and not k.endswith("kernel")]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert all(not torch.equal(before[k], after[k]) for k in trained)


def test_l1_only_stage_leaves_the_global_d_alone(shared, tmp_path, tiny_landmarks, loss_backbones):
    opts = tiny_opts(
        tmp_path,
        tiny_landmarks,
        loss_backbones,
        "train.losses.identity.type=none",
        "train.losses.gan_global=0",
        "train.losses.gan_local=0",
        "train.losses.feature_matching.weight=0",
    )
    trainer, d_before, g_before, logs = step_once(opts)
    assert "l_d" not in logs and trainer.local_d is None
    assert unchanged(d_before, trainer.net_d) and changed(g_before, trainer.net_g)


def test_discriminator_warmup_leaves_g_alone_then_ends(shared, tmp_path, tiny_landmarks, loss_backbones):
    opts = tiny_opts(
        tmp_path,
        tiny_landmarks,
        loss_backbones,
        "train.losses.identity.type=none",
        "train.losses.gan_local=0",
        "train.losses.feature_matching.type=discriminator_features",
        "train.d_warmup=1",
    )
    trainer, d_before, g_before, logs = step_once(opts)
    assert set(logs) <= {"l_d", "r1"} and "l_d" in logs
    assert unchanged(g_before, trainer.net_g) and changed(d_before, trainer.net_d)
    batch = torch.utils.data.default_collate([FaceDataset(opts.datasets.train)[(i, i)] for i in range(2)])
    assert "l_gan" in trainer.step(batch)  # the warm-up counts from the stage's start, here 0
    assert changed(g_before, trainer.net_g)


def test_degraded_inputs_count_as_fakes_for_the_global_d(shared, tmp_path, tiny_landmarks, loss_backbones):
    gt = torch.rand(3, 3, 16, 16) * 2 - 1
    lq = torch.stack([gt[0], gt[1] + 0.002, (gt[2] + 0.3 * torch.randn(3, 16, 16)).clamp(-1, 1)])
    assert torch.equal(visibly_degraded(lq, gt), lq[2:])  # the untouched and the near-clean pair are left out
    with pytest.raises(ValueError, match="size of the ground truth"):
        visibly_degraded(lq[:, :, :8, :8], gt)
    extra = ["train.losses.identity.type=none", "train.losses.gan_local=0", "datasets.train.degradation.clean_prob=0"]
    with_negatives = step_once(tiny_opts(tmp_path / "a", tiny_landmarks, loss_backbones, *extra, "train.d_input_as_fake=1"))
    without = step_once(tiny_opts(tmp_path / "b", tiny_landmarks, loss_backbones, *extra))
    assert with_negatives[3]["l_d_neg"] > 0 and "l_d_neg" not in without[3]
    d_a, d_b = with_negatives[0].net_d.state_dict(), without[0].net_d.state_dict()
    assert any(not torch.equal(d_a[k], d_b[k]) for k in d_a)  # same seed and batch: only the extra fakes differ


def test_conditional_d_judges_the_output_beside_its_degraded_input(shared, tmp_path, tiny_landmarks, loss_backbones):
    extra = ["network_d.luma=true", "network_d.detail=true", "train.losses.identity.type=none", "train.losses.gan_local=0"]
    extra += ["train.losses.feature_matching.type=discriminator_features", "network_d.freeze_layers=0"]
    trainer, d_before, _, logs = step_once(tiny_opts(tmp_path, tiny_landmarks, loss_backbones, *extra, "network_d.condition=true"))
    assert trainer.net_d.convs[0][0].weight.shape[1] == 3  # luma, its finest band, the input's luma
    assert all(np.isfinite(logs[k]) for k in ("l_gan", "l_dfeat", "l_d")) and changed(d_before, trainer.net_d)
    torch.manual_seed(0)
    image, lq = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    seen = trainer.d_view(image, lq)
    assert seen.shape == (2, 4, 64, 64) and torch.equal(seen[:, :3], image)
    with torch.no_grad():
        assert not torch.allclose(trainer.net_d(seen), trainer.net_d(trainer.d_view(image, -lq)))
    with pytest.raises(OptionsError, match="exclude each other"):
        tiny_opts(tmp_path, tiny_landmarks, loss_backbones, "network_d.condition=true", "train.d_input_as_fake=1")
    with pytest.raises(OptionsError, match="needs train.mode restoration"):
        tiny_opts(tmp_path, tiny_landmarks, loss_backbones, "network_d.condition=true", "train.mode=prior")


def test_ssim_loss_is_one_minus_the_reported_ssim():
    rng = np.random.default_rng(0)
    gt = rng.random((48, 40, 3)).astype(np.float32)
    out = np.clip(gt + rng.normal(0, 0.1, gt.shape), 0, 1).astype(np.float32)
    to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None]
    assert abs(1 - float(ssim_loss(to_t(out), to_t(gt))) - ssim(out, gt)) < 1e-5
    assert float(ssim_loss(to_t(gt), to_t(gt))) < 1e-6
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the trainer's autocast: bf16 variances went negative (-inf loss)
        flat = torch.full((1, 3, 32, 32), 0.7)
        assert float(ssim_loss(flat, flat)) == 0.0
        assert abs(1 - float(ssim_loss(to_t(out), to_t(gt))) - ssim(out, gt)) < 1e-5


def test_luma_d_and_chroma_l1_train_together(shared, tmp_path, tiny_landmarks, loss_backbones):
    opts = tiny_opts(
        tmp_path,
        tiny_landmarks,
        loss_backbones,
        "network_d.luma=true",
        "network_d.detail=true",
        "network_d.freeze_layers=0",
        "train.losses.chroma_l1=2",
        "train.losses.ssim=0.5",
        "train.losses.mse=3",
        "train.losses.artifacts=1",
        "train.losses.excess_detail=5",
        "train.losses.identity.type=none",
        "train.losses.gan_local=0",
        "train.losses.feature_matching.type=discriminator_features",
    )
    trainer, d_before, _, logs = step_once(opts)
    assert trainer.net_d.convs[0][0].weight.shape[1] == 2  # luma and its finest band
    assert all(
        np.isfinite(logs[k]) and logs[k] > 0 for k in ("l_chroma", "l_ssim", "l_mse", "l_artifacts", "l_excess", "l_gan", "l_dfeat", "l_d")
    )
    assert changed(d_before, trainer.net_d)
    assert {"chroma_l1 2.0", "ssim 0.5", "mse 3.0", "artifacts 1.0", "excess_detail 5.0"} <= set(trainer.describe_losses())


def test_artifact_loss_targets_erratic_error_the_ema_does_not_make():
    torch.manual_seed(0)
    gt = torch.rand(1, 3, 64, 64) * 2 - 1
    noise = torch.randn(1, 1, 64, 64).expand(1, 3, 64, 64)
    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(1, 3, 64, 64)
    noisy, smooth = gt + 0.1 * noise, gt + 0.1 * noise.abs().mean() * 2 * ramp  # the same mean error
    assert torch.allclose((noisy - gt).abs().mean(), (smooth - gt).abs().mean(), rtol=0.05)
    noisy_loss, smooth_loss = artifact_loss(noisy, gt, gt), artifact_loss(smooth, gt, gt)
    assert noisy_loss > 20 * smooth_loss > 0  # erratic error weighs, a smooth offset hardly
    assert float(artifact_loss(noisy, gt, gt + 2 * (noisy - gt))) == 0.0  # where the EMA is worse: no penalty
    out = noisy.clone().requires_grad_(True)
    artifact_loss(out, gt, gt).backward()
    assert out.grad.abs().sum() > 0


def test_excess_detail_loss_charges_edges_the_truth_lacks_not_texture_it_has():
    torch.manual_seed(0)
    gt = torch.zeros(1, 3, 64, 64)
    gt[..., 32:] = 0.3 * torch.randn(1, 1, 64, 32)  # smooth skin on the left, texture on the right
    grid = gt.clone()
    grid[..., ::4, :32] += 0.3  # lines on the smooth half
    other_texture = gt.clone()
    other_texture[..., 32:] = 0.3 * torch.randn(1, 1, 64, 32)  # different texture, the same energy
    blurred = torch.nn.functional.avg_pool2d(gt, 3, 1, 1)
    assert float(excess_detail_loss(gt, gt)) == 0.0
    lines = excess_detail_loss(grid, gt)
    assert lines > 5 * excess_detail_loss(other_texture, gt)  # local energies of random texture vary a little
    assert lines > 10 * excess_detail_loss(blurred, gt)
    out = grid.clone().requires_grad_(True)
    excess_detail_loss(out, gt).backward()
    assert out.grad[..., :32].abs().sum() > 0


def test_excess_detail_sorts_lines_by_their_period():
    gt = torch.zeros(1, 3, 64, 64)
    fine, coarse = gt.clone(), gt.clone()
    fine[..., ::3, :] = 0.3  # a 3-px period: the finest band (2-4 px)
    coarse[..., (torch.arange(64) % 12) < 6, :] = 0.3  # a 12-px period: the third (8-16 px)
    fine_bands, coarse_bands = excess_detail(fine, gt), excess_detail(coarse, gt)
    assert fine_bands.shape == (3,)
    assert fine_bands.argmax() == 0 and coarse_bands.argmax() == 2
    assert torch.allclose(excess_detail_loss(fine, gt), fine_bands.mean())


def test_freeze_d_helper_counts_layers():
    d = StyleGAN2Discriminator(64, 1, 0.125)
    names = freeze_d(d, 5)
    assert {n.split(".")[1] for n in names} == {"0", "1", "2", "3", "4"}


def test_prior_stage_then_restoration_from_its_export(shared, tmp_path, tiny_landmarks, loss_backbones):
    prior = tiny_opts(tmp_path, tiny_landmarks, loss_backbones, "train.mode=prior", "train.total_iter=2", "name=prior_tiny")
    train(prior, "cpu")
    models = prior.experiment_dir / "models"
    g, d = models / "prior_g_00000002.safetensors", models / "prior_d_00000002.safetensors"
    opts = tiny_opts(
        tmp_path,
        tiny_landmarks,
        loss_backbones,
        f"path.prior_g={g}",
        f"path.prior_d={d}",
        "train.losses.identity.type=none",
        "train.losses.feature_matching.type=discriminator_features",
    )
    trainer = build_model(opts, torch.device("cpu"))
    from faceres.checkpoints import load_state_dict_file

    sd = load_state_dict_file(g)
    assert torch.equal(trainer.net_g.generator.conv1.conv.weight, sd["conv1.conv.weight"])


@pytest.mark.parametrize("loss", ["ffl", "gfl"])
def test_frequency_losses_selectable_in_training(shared, tmp_path, tiny_landmarks, loss_backbones, loss):
    opts = tiny_opts(
        tmp_path,
        tiny_landmarks,
        loss_backbones,
        f"train.losses.{loss}.weight=1",
        "train.total_iter=2",
        "train.losses.identity.type=none",
        "train.losses.feature_matching.type=discriminator_features",
    )
    trainer = train(opts, "cpu")
    log = [json.loads(x) for x in (opts.experiment_dir / "train_log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(e[f"l_{loss}"]) for e in log if e["kind"] == "train")
    if loss == "gfl":
        state = torch.load(opts.experiment_dir / "checkpoints/iter_00000002.pt", weights_only=True)
        assert state["gfl"]["schedule"]["omega"] == trainer.gfl.schedule.omega


@pytest.mark.slow  # > 20 s on 2 shared cores
def test_ddp_two_processes_gloo(shared, tmp_path, tiny_landmarks, loss_backbones):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "faceres.cli",
        "train",
        "-opt",
        str(TINY),
        "--device",
        "cpu",
        "--set",
        f"path.experiments_root={tmp_path}",
        "--set",
        f"datasets.train.landmarks={tiny_landmarks}",
        "--set",
        "train.total_iter=2",
        "--set",
        "train.losses.identity.type=none",
        "--set",
        "train.losses.feature_matching.type=discriminator_features",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x2" in proc.stdout  # world size reported
    assert (tmp_path / "faceres_tiny/checkpoints/iter_00000002.pt").is_file()


def test_sfmnet_trains_and_restores_aligned(shared, tmp_path):
    opts = load_options(
        ROOT / "options/train_sfmnet_x8.yml",
        [
            f"path.experiments_root={tmp_path}",
            "datasets.train.size=64",
            "datasets.val.size=64",
            "network_g.size=64",
            "network_g.channels=16",
            "network_g.n_modules=2",
            "train.batch_size=2",
            "train.total_iter=2",
            "datasets.train.subset=[500, 504]",
            "datasets.val.subset=[0, 2]",
            "datasets.train.num_workers=0",
            "val.every=2",
            "logger.print_every=1",
            "logger.save_every=2",
            "logger.tensorboard=false",
        ],
    )
    train(opts, "cpu")
    log = [json.loads(x) for x in (opts.experiment_dir / "train_log.jsonl").read_text().splitlines() if '"train"' in x]
    assert all(np.isfinite(e["l_l1_fre"]) and np.isfinite(e["l_amp_pha"]) for e in log)
    model = opts.experiment_dir / "models/net_g_ema_00000002.safetensors"
    from faceres.cli import main

    src = sorted((shared / "data/celeba-aligned/images").iterdir())[:1]
    assert main(["restore", str(src[0]), "-o", str(tmp_path / "out"), "--model", str(model), "--aligned", "-s", "1"]) == 0
    assert (tmp_path / "out/restored_imgs" / src[0].name).is_file()
    assert main(["restore", str(src[0]), "-o", str(tmp_path / "out2"), "--model", str(model), "--aligned", "--fidelity", "0.5"]) == 2


def test_noise_init_option_sets_injection_weights(shared, tmp_path, tiny_landmarks, loss_backbones):
    opts = tiny_opts(
        tmp_path,
        tiny_landmarks,
        loss_backbones,
        "network_g.noise_init=1.0",
        "train.losses.identity.type=none",
        "train.losses.feature_matching.type=discriminator_features",
    )
    trainer = build_model(opts, torch.device("cpu"))
    weights = [p for n, p in trainer.net_g.generator.named_parameters() if n.endswith("noise.weight")]
    assert weights and all(w.item() == 1.0 for w in weights)


def test_export_writes_half_precision_release(tiny_model, tmp_path):
    from faceres.checkpoints import load_model, read_metadata
    from faceres.cli import main

    out = tmp_path / "release.safetensors"
    assert main(["export", str(tiny_model), "-o", str(out)]) == 0
    assert out.stat().st_size < tiny_model.stat().st_size * 0.6
    model, config = load_model(out)
    assert config == read_metadata(tiny_model)["arch"]
    assert next(model.parameters()).dtype == torch.float32  # loaded back as float32 for CPU inference


def test_training_continues_from_a_committed_release(shared, tmp_path, tiny_landmarks, loss_backbones):
    """Cumulative CPU training: a fresh run with path.init_state starts G and EMA from the fp16 release
    at its iteration (the data order and LR schedule continue from there)."""
    from faceres.checkpoints import load_model, load_state_dict_file, save_model
    from faceres.cli import main

    extra = [
        "train.losses.identity.type=none",
        "train.losses.gan_local=0",
        "train.losses.gan_global=0",
        "train.losses.feature_matching.weight=0",
        "network_g.input_skip=true",
    ]
    first = train(tiny_opts(tmp_path / "a", tiny_landmarks, loss_backbones, *extra), "cpu", max_iters=2)
    release = tmp_path / "release.safetensors"
    assert main(["export", str(tmp_path / "a/faceres_tiny/models/net_g_ema_00000002.safetensors"), "-o", str(release)]) == 0
    opts = tiny_opts(tmp_path / "b", tiny_landmarks, loss_backbones, *extra, f"path.init_state={release}")
    trainer = build_model(opts, torch.device("cpu"))
    trainer.init_from_release(opts.path.init_state)
    assert trainer.iter == first.iter == 2
    saved = load_state_dict_file(release)
    for k, v in trainer.net_g.state_dict().items():
        assert torch.equal(v, saved[k].float()), k
    # an interpolated release (pixel-loss + adversarial networks) continues from its pixel-loss network
    gan, config = load_model(release)
    for p in gan.parameters():
        p.data.add_(0.1)
    save_model(gan, tmp_path / "gan.safetensors", config)
    both = tmp_path / "interpolated.safetensors"
    assert main(["export", str(release), "--perceptual", str(tmp_path / "gan.safetensors"), "-o", str(both)]) == 0
    trainer.init_from_release(str(both))
    assert trainer.iter == 2 and all(torch.equal(v, saved[k].float()) for k, v in trainer.net_g_ema.state_dict().items())
    with pytest.raises(OptionsError, match="architecture"):  # another architecture is refused, not half-loaded
        other = build_model(tiny_opts(tmp_path / "c", tiny_landmarks, loss_backbones, *extra[:-1]), torch.device("cpu"))
        other.init_from_release(str(release))
    # the same network with more MMRBs per scale and more channels at 64² grows from it: same function at the start
    grown = ["network_g.enc_blocks=2", "network_g.min_channels=64"]
    deeper = build_model(tiny_opts(tmp_path / "d", tiny_landmarks, loss_backbones, *extra, *grown), torch.device("cpu"))
    deeper.init_from_release(str(release))
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.inference_mode():
        torch.testing.assert_close(deeper.net_g_ema(x), trainer.net_g_ema(x), rtol=1e-5, atol=1e-6)
    assert deeper.iter == 2 and len(deeper.net_g.state_dict()) > len(saved)
    assert deeper.net_g.codec.from_rgb[0].weight.shape[0] == 2 * saved["codec.from_rgb.0.weight"].shape[0] == 64
    # its export names what it grew from, so a run continuing from it gives the same elements their own rate
    deeper.export(tmp_path / "d_models")
    again = build_model(tiny_opts(tmp_path / "e", tiny_landmarks, loss_backbones, *extra, *grown), torch.device("cpu"))
    again.init_from_release(str(tmp_path / "d_models/net_g_ema_00000002.safetensors"))
    assert again.grown_from == deeper.grown_from and again.grown.keys() == deeper.grown.keys()
    assert all(torch.equal(again.grown[k], m) for k, m in deeper.grown.items())
    # grown again from that export, at one resolution (`channels_at`): the same function still, and the elements
    # either growth added keep their own rate (grown_from stays the first architecture)
    wider_opts = tiny_opts(tmp_path / "w", tiny_landmarks, loss_backbones, *extra, *grown, "network_g.channels_at={32: 128}")
    assert wider_opts.network_g.arch_config()["channels_at"] == {"32": 128}  # as JSON metadata will hold it
    wider = build_model(wider_opts, torch.device("cpu"))
    wider.init_from_release(str(tmp_path / "d_models/net_g_ema_00000002.safetensors"))
    with torch.inference_mode():
        torch.testing.assert_close(wider.net_g_ema(x), trainer.net_g_ema(x), rtol=1e-5, atol=1e-6)
    assert wider.grown_from == deeper.grown_from and wider.net_g.generator.channels[32] == 128
    assert all(torch.equal(wider.grown[k] & m, m) for k, m in deeper.grown.items() if wider.grown[k].shape == m.shape)
    assert sum(int(m.sum()) for m in wider.grown.values()) > sum(int(m.sum()) for m in deeper.grown.values())
    # a checkpoint keeps only what it grew from, and resuming rebuilds the same masks
    state = deeper.state_dict()
    assert "grown" not in state
    resumed = build_model(tiny_opts(tmp_path / "f", tiny_landmarks, loss_backbones, *extra, *grown), torch.device("cpu"))
    resumed.load_state_dict(state)
    assert resumed.grown.keys() == deeper.grown.keys() and all(torch.equal(resumed.grown[k], m) for k, m in deeper.grown.items())
    # train.grown_lr_mult: the added elements step that many times further, the others alike
    batch = torch.utils.data.default_collate([FaceDataset(opts.datasets.train)[(i, i)] for i in range(2)])
    steps = {}
    for mult in (1, 8):
        torch.manual_seed(0)
        opts = tiny_opts(tmp_path / f"m{mult}", tiny_landmarks, loss_backbones, *extra, *grown, f"train.grown_lr_mult={mult}")
        model = build_model(opts, torch.device("cpu"))
        model.init_from_release(str(release))
        to_rgb = model.net_g.generator.to_rgbs[-1].conv.weight  # its added input channels learn from the first step
        before = to_rgb.detach().clone()
        model.step(batch)
        steps[mult] = to_rgb.detach() - before
    mask = model.grown["generator.to_rgbs.3.conv.weight"]
    assert mask.any() and not mask.all() and steps[1][mask].abs().sum() > 0
    torch.testing.assert_close(steps[8][mask], 8 * steps[1][mask])
    torch.testing.assert_close(steps[8][~mask], steps[1][~mask])


# ------------------------------------------------------------------ models, stages, run folder, cache


def test_options_pick_the_training_model(shared, tmp_path, tiny_landmarks, loss_backbones):
    from faceres.train.prior import PriorModel
    from faceres.train.restoration import RestorationModel
    from faceres.train.sfmnet import SFMNetModel

    extra = ["train.losses.identity.type=none", "train.losses.feature_matching.type=discriminator_features"]
    cpu = torch.device("cpu")
    assert type(build_model(tiny_opts(tmp_path, tiny_landmarks, loss_backbones, *extra), cpu)) is RestorationModel
    assert type(build_model(tiny_opts(tmp_path, tiny_landmarks, loss_backbones, *extra, "train.mode=prior"), cpu)) is PriorModel
    sfm = build_model(
        tiny_opts(
            tmp_path,
            tiny_landmarks,
            loss_backbones,
            *extra,
            "network_g.arch=sfmnet",
            "network_g.channels=8",
            "network_g.n_modules=1",
            "train.losses.gan_local=0",
        ),
        cpu,
    )
    assert type(sfm) is SFMNetModel and sfm.local_d is None
    assert [g["name"] for g in sfm.opt_g.param_groups] == ["sfmnet"]


def test_cpu_recipe_stage_files_are_the_recorded_commands(shared):
    """The three stage files give exactly the options of the three commands faceres-v0 was trained with."""
    l1 = ["train.losses.gan_global=0", "train.losses.gan_local=0", "train.losses.feature_matching.weight=0"]
    stage1 = ROOT / "options/train_faceres_128_cpu.yml"
    assert load_options(stage1).train.total_iter == 1000
    assert load_options(ROOT / "options/train_faceres_128_cpu_2a.yml") == load_options(stage1, [*l1, "train.total_iter=2000"])
    stage2b = load_options(ROOT / "options/train_faceres_128_cpu_2b.yml")
    assert stage2b == load_options(stage1, [*l1, "train.total_iter=9500", "train.milestones=[5000, 7500, 8500]"])
    assert stage2b.name == "faceres_128_cpu" and stage2b.path.resume == "auto"  # continues stage 2a's run


def test_base_file_merges_and_errors_name_it(shared, tmp_path):
    child = tmp_path / "child.yml"
    child.write_text(f"base: {TINY}\ntrain: {{losses: {{l1: 2, gan_local: 0}}}}\n")
    opts = load_options(child)
    assert opts.train.losses.l1 == 2 and opts.train.losses.gan_local == 0 and opts.train.losses.gan_global == 0.5
    assert opts.train.total_iter == 4 and opts.train.losses.identity.type == "arcface"  # the rest of the section stays
    child.write_text(f"base: {TINY}\ntrain: {{batchsize: 2}}\n")
    with pytest.raises(OptionsError, match="train.batchsize"):
        load_options(child)
    child.write_text("base: missing.yml\n")
    with pytest.raises(OptionsError, match="base .*missing.yml: no such options file"):
        load_options(child)
    child.write_text("base: child.yml\n")
    with pytest.raises(OptionsError, match="nested base files"):
        load_options(child)


def test_a_changed_stage_keeps_the_previous_options(shared, tmp_path, tiny_landmarks, loss_backbones):
    from faceres.train.loop import save_run_options

    opts = tiny_opts(tmp_path, tiny_landmarks, loss_backbones, "train.losses.identity.type=none")
    root = opts.experiment_dir
    save_run_options(opts, root, 0)
    save_run_options(opts, root, 2)  # resumed with the same options
    assert sorted(p.name for p in root.iterdir()) == ["options.yml"]
    stage2 = dataclasses.replace(opts, train=dataclasses.replace(opts.train, total_iter=8))
    save_run_options(stage2, root, 4)
    assert load_options(root / "options_until_00000004.yml").train.total_iter == 4
    assert load_options(root / "options.yml").train.total_iter == 8


def test_array_cache_is_bounded_least_recently_used():
    face = lambda v: (np.full((64, 64, 3), v, np.uint8), 1.0)
    cache = ArrayCache(max_mb=3 * 64 * 64 * 3 / 2**20)  # room for three faces
    loads = []
    get = lambda k: cache.get(k, lambda: loads.append(k) or face(k))
    for k in (0, 1, 2, 0, 3):  # 0 was used again, so 1 is the least recent when 3 arrives
        assert get(k)[0][0, 0, 0] == k
    assert list(cache.items) == [2, 0, 3] and cache.nbytes == 3 * 64 * 64 * 3
    get(1)
    assert loads == [0, 1, 2, 3, 1]
    off = ArrayCache(0)
    off.get(0, lambda: face(0))
    assert len(off) == 0 and off.nbytes == 0


def test_dataset_cache_off_gives_the_same_items(shared):
    root = str(shared / "data/celebahq-512/images")
    cached = FaceDataset(DatasetOpts(root, size=64, subset=(0, 3), cache_mb=1))
    uncached = FaceDataset(DatasetOpts(root, size=64, subset=(0, 3), cache_mb=0))
    for key in [(0, 5), (1, 6), (0, 5), (2, 7)]:
        a, b = cached[key], uncached[key]
        assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"])
    assert len(cached.cache) == 3 and len(uncached.cache) == 0
    assert np.array_equal(cached.cache.items[2][0], load_face(cached.files[2], 64, False)[0])


# the face parser's options have their own loader (tests/test_face_parser.py trains from that file)
RESTORATION_OPTIONS = sorted(p for p in (ROOT / "options").glob("*.yml") if p.name != "train_face_parser.yml")


@pytest.mark.parametrize("path", RESTORATION_OPTIONS, ids=lambda p: p.name)
def test_every_shipped_options_file_loads(path, shared, monkeypatch):
    monkeypatch.setenv("FACERES_SHARED", str(shared))
    needs_landmarks = path.name == TINY.name  # its local Ds read a landmarks file the tiny_landmarks fixture makes
    opts = load_options(path, ["train.losses.gan_local=0"] if needs_landmarks else [])
    assert opts.name and opts.train.total_iter > 0
