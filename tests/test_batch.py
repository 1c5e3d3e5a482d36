"""The folder job from Python (faceres.pipeline.batch): names, resume, shards, report. The CLI tests
(test_cli.py) run the same code through `faceres restore`."""

import json
import shutil

import cv2
import numpy as np
import pytest

from faceres.pipeline import BatchReport, FaceRestorer, RestoreOptions, restore_folder
from faceres.pipeline.batch import plan_jobs

ALIGNED = RestoreOptions(aligned=True, upscale=1)


@pytest.fixture
def inputs(shared, tmp_path):
    """Two aligned faces under one stem (a.jpg, a.png), one in a sub-folder; 128² keeps them fast."""
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    faces = sorted((shared / "data/real-lq/cropped").iterdir())[:3]
    for face, target in zip(faces, [d / "a.jpg", d / "a.png", d / "sub" / "a.png"]):
        cv2.imwrite(str(target), cv2.resize(cv2.imread(str(face)), (128, 128), interpolation=cv2.INTER_AREA))
    return d


def test_output_names_are_unique_and_decided_before_sharding(inputs, tmp_path):
    out = tmp_path / "out"
    jobs = plan_jobs([inputs], out, recursive=True)
    assert [str(j.stem) for j in jobs] == ["a", "a_png", "sub/a"]
    assert [j.image.relative_to(out).as_posix() for j in jobs] == [
        "restored_imgs/a.jpg",
        "restored_imgs/a_png.png",
        "restored_imgs/sub/a.png",
    ]
    shards = [plan_jobs([inputs], out, recursive=True, shard=(i, 2)) for i in range(2)]
    assert sorted(j.image for s in shards for j in s) == sorted(j.image for j in jobs)
    assert [j.stem for j in plan_jobs([inputs], out, recursive=True, ext="png")] == [j.stem for j in jobs]
    with pytest.raises(ValueError, match="shard 2/2"):
        plan_jobs([inputs], out, shard=(2, 2))


def test_restore_folder_from_python_resumes_and_reports(tiny_model, inputs, tmp_path):
    out = tmp_path / "out"
    restorer = FaceRestorer(tiny_model, device="cpu")
    report = restore_folder([inputs], out, restorer, ALIGNED, recursive=True)
    assert isinstance(report, BatchReport) and report.ok == 3 and report.failed == 0 and report.faces == 3
    assert report.path == out / "report.json"
    assert json.loads(report.path.read_text()) == json.loads(json.dumps(report.to_dict()))
    assert report.header["detector"] == "none (aligned input)" and report.header["fidelity"] == 1.0
    for name in ("a_00.png", "a_png_00.png", "sub/a_00.png"):  # a.jpg's and a.png's faces no longer collide
        assert cv2.imread(str(out / "restored_faces" / name)).shape == (128, 128, 3)
    again = restore_folder([inputs], out, restorer, ALIGNED, recursive=True)
    assert [e.get("skipped") for e in again.images] == ["output exists"] * 3 and again.faces == 0
    redo = restore_folder([inputs], out, restorer, ALIGNED, recursive=True, overwrite=True, faces=False)
    assert redo.faces == 3 and not any("skipped" in e for e in redo.images)


def test_bad_file_is_an_entry_and_empty_input_an_error(tiny_model, inputs, tmp_path):
    (inputs / "broken.png").write_bytes(b"not a png")
    shutil.rmtree(inputs / "sub")
    (inputs / "empty").mkdir()
    seen = []
    report = restore_folder(
        [inputs], tmp_path / "out", FaceRestorer(tiny_model, device="cpu"), ALIGNED, on_entry=lambda entry, rep: seen.append(entry)
    )
    assert report.failed == 1 and report.ok == 2 and len(seen) == 3
    assert "broken.png" in next(e for e in report.images if "error" in e)["input"]
    with pytest.raises(ValueError, match="no images found"):
        restore_folder([inputs / "empty"], tmp_path / "out2", None)


# ------------------------------------------------- issue 18: settings, size caps, resume report, lock


def restore_cli(*args):
    from faceres.cli import main

    return main(["restore", *[str(a) for a in args]])


@pytest.mark.parametrize(
    "args, message",
    [
        (["-s", "nan"], "upscale must be a finite number"),
        (["-s", "inf"], "upscale must be a finite number"),
        (["-s", "1e-9"], "upscale must be in [0.1, 16]"),
        (["--batch-size", "0"], "--batch-size must be a positive integer"),
        (["--batch-size", "-1"], "--batch-size must be a positive integer"),
        (["--device", "cuda"], "no CUDA GPU is available"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--drift-threshold", "0"], "--drift-threshold must be in (0, 1)"),
        (["--drift-threshold", "5"], "--drift-threshold must be in (0, 1)"),
        (["--suffix", "/../../x"], "must not contain a path separator"),
        (["--suffix", ".."], "must not contain a path separator"),
        (["--max-output-pixels", "0"], "--max-output-pixels must be >= 1"),
    ],
)
def test_cli_rejects_bad_settings_before_any_work(inputs, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    # a missing model: had the settings passed, the error would name the model instead
    assert restore_cli(inputs / "a.jpg", "-o", out, "--model", tmp_path / "absent.safetensors", *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and not out.exists(), err


def test_cli_rejects_an_empty_output_folder(inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert restore_cli(inputs / "a.jpg", "-o", "") == 2
    assert "the output folder (-o) must not be empty" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["in"]  # nothing written into the current folder


@pytest.mark.parametrize("env, message", [({"WORLD_SIZE": "0"}, "need 0 <= i < n"), ({"RANK": "2", "WORLD_SIZE": "2"}, "--shard 2/2")])
def test_shard_auto_checks_rank_and_world_size(inputs, tmp_path, capsys, monkeypatch, env, message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as exc:
        restore_cli(inputs, "-o", tmp_path / "out", "--shard", "auto")
    assert exc.value.code == 2 and message in capsys.readouterr().err


def never_restore(*args, **kwargs):
    raise AssertionError("the photo was processed although its output cannot be written")


@pytest.mark.parametrize(
    "size, kwargs, message",
    [
        ((1000, 800), dict(options=RestoreOptions(upscale=16)), "16000x12800 px (205 MP), over the limit of 100 MP"),
        ((9000, 40), dict(options=RestoreOptions(upscale=2), ext="webp"), "too large for .webp"),
    ],
    ids=["pixel-cap", "webp-side"],
)
def test_output_size_is_checked_before_the_photo_is_processed(tiny_model, tmp_path, size, kwargs, message):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "big.png"), np.full((size[1], size[0], 3), 128, np.uint8))
    restorer = FaceRestorer(tiny_model, device="cpu")
    restorer.restore = never_restore
    report = restore_folder([src], tmp_path / "out", restorer, **kwargs)
    error = report.images[0]["error"]
    assert report.failed == 1 and message in error and "\n" not in error
    assert not list((tmp_path / "out" / "restored_imgs").rglob("*"))


def test_pixel_cap_names_the_largest_upscale_that_fits():
    from faceres.pipeline.images import ImageError
    from faceres.pipeline.runchecks import check_output_pixels

    with pytest.raises(ImageError, match=r"7000x4640 px \(32 MP\), over the limit of 10 MP; use an upscale of at most 5.54 or raise"):
        check_output_pixels((700, 464), 10, 10e6)
    check_output_pixels((700, 464), 5.54, 10e6)  # the named upscale fits
    with pytest.raises(ImageError):
        check_output_pixels((700, 464), 5.55, 10e6)


def test_recursive_run_into_the_input_tree_does_not_reingest_outputs(tiny_model, inputs):
    out = inputs / "out"
    restorer = FaceRestorer(tiny_model, device="cpu")
    first = restore_folder([inputs], out, restorer, ALIGNED, recursive=True)
    assert first.ok == 3
    again = plan_jobs([inputs], out, recursive=True)
    assert [str(j.stem) for j in again] == ["a", "a_png", "sub/a"]


def test_report_lists_every_output_after_a_resume(tiny_model, inputs, tmp_path):
    out = tmp_path / "out"
    restorer = FaceRestorer(tiny_model, device="cpu")
    first = restore_folder([inputs], out, restorer, ALIGNED, recursive=True)
    on_disk = sorted(str(f) for d in ("restored_imgs", "cropped_faces", "restored_faces", "cmp") for f in (out / d).rglob("*.*"))
    assert sorted(f for e in first.images for f in e["outputs"]) == on_disk and len(on_disk) == 12
    resumed = json.loads(restore_folder([inputs], out, restorer, ALIGNED, recursive=True).path.read_text())
    assert all(e["skipped"] == "output exists" for e in resumed["images"])
    assert sorted(f for e in resumed["images"] for f in e["outputs"]) == on_disk
    assert [e["faces"] for e in resumed["images"]] == [1, 1, 1] and resumed["faces_total"] == 3
    assert resumed["skipped"] == 3 and resumed["ok"] == 0


def test_a_second_run_into_one_folder_is_refused_and_a_stale_lock_taken_over(tiny_model, inputs, tmp_path, capsys):
    import os
    import subprocess

    from faceres.pipeline.runchecks import OutputLocked

    out = tmp_path / "out"
    out.mkdir()
    lock = out / ".faceres.lock"
    lock.write_text(f"{os.getpid()} {__import__('socket').gethostname()}\n")  # a live run: this process
    restorer = FaceRestorer(tiny_model, device="cpu")
    with pytest.raises(OutputLocked, match="is writing into this folder"):
        restore_folder([inputs], out, restorer, ALIGNED)
    assert restore_cli(inputs, "-o", out, "--model", tiny_model, "--aligned", "-s", "1") == 2
    assert "is writing into this folder" in capsys.readouterr().err
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock.write_text(f"{dead.pid} {__import__('socket').gethostname()}\n")  # a killed run's lock
    assert restore_folder([inputs], out, restorer, ALIGNED).ok == 2 and not lock.exists()


def test_part_cleanup_spares_another_live_runs_temp_files(tmp_path):
    import os
    import socket

    from faceres.pipeline.batch import clean_partial_files

    out = tmp_path / "out"
    (out / "restored_imgs").mkdir(parents=True)
    part = out / "restored_imgs" / ".a.png.x1y2.part"
    part.write_bytes(b"half")
    other = out / ".faceres.lock.shard1-of-2"
    other.write_text(f"{os.getpid()} {socket.gethostname()}\n")
    assert clean_partial_files(out, out / ".faceres.lock.shard0-of-2") == 0 and part.exists()
    other.unlink()
    assert clean_partial_files(out, out / ".faceres.lock.shard0-of-2") == 1 and not part.exists()


def test_drift_guard_flags_a_blank_restored_face():
    import torch
    from torch import nn

    from faceres.pipeline.reference import IdentityGuard

    class SameForEveryFace(nn.Module):  # similarity 1 whatever the faces: only the blankness check can flag
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(8))

        def forward(self, x):
            return self.w.expand(x.shape[0], 8)

    guard = IdentityGuard(0.5, recognizer=SameForEveryFace())
    face = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    assert guard.check(face, face) == (pytest.approx(1.0), False)
    for blank in (np.zeros_like(face), np.full_like(face, 0.5) + 1e-3 * face, np.full_like(face, np.nan)):
        assert guard.check(face, blank)[1] is True
