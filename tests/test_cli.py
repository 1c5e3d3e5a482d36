import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from faceres.cli import main


def run_cli(*args):
    return main([str(a) for a in args])


@pytest.mark.slow
def test_restore_multi_face_writes_every_output(tiny_model, weights_env, shared, tmp_path):
    out = tmp_path / "out"
    assert run_cli("restore", shared / "data/multi-face", "-o", out, "--model", tiny_model, "--detector", "retinaface_mobile0.25") == 0
    report = json.loads((out / "report.json").read_text())
    t1 = next(e for e in report["images"] if e["input"].endswith("t1.jpg"))
    assert t1["faces"] == 6
    src = cv2.imread(str(shared / "data/multi-face/t1.jpg"))
    restored = cv2.imread(str(out / "restored_imgs/t1.jpg"))
    assert restored.shape == (src.shape[0] * 2, src.shape[1] * 2, 3)
    for idx in range(6):
        assert cv2.imread(str(out / f"cropped_faces/t1_{idx:02d}.png")).shape == (128, 128, 3)
        assert cv2.imread(str(out / f"restored_faces/t1_{idx:02d}.png")).shape == (128, 128, 3)
        assert cv2.imread(str(out / f"cmp/t1_{idx:02d}.png")).shape == (128, 256, 3)
    assert set(report["images"][0]["seconds"]) >= {"decode", "detect", "align", "restore", "paste", "encode"}


def _png_with_declared_size(path: Path, width: int, height: int):
    """A valid tiny PNG whose header claims width x height (a decompression bomb)."""
    Image.new("L", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data[12:29]
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))


def make_bad_corpus(d: Path, face: Path) -> dict[str, str]:
    """name -> expected outcome ('error' or 'ok')."""
    d.mkdir()
    (d / "empty.jpg").write_bytes(b"")
    full = face.read_bytes()
    (d / "truncated.jpg").write_bytes(full[: len(full) // 3])
    (d / "text.jpg").write_text("this is not an image\n")
    rgb = np.asarray(Image.open(face).convert("RGB"))
    cv2.imwrite(str(d / "deep16.png"), (rgb[..., ::-1].astype(np.uint16) * 257))
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])).save(d / "rgba.png")
    Image.fromarray(rgb).convert("CMYK").save(d / "cmyk.jpg")
    Image.new("RGB", (1, 1), (90, 80, 70)).save(d / "tiny.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    Image.fromarray(rgb).save(d / "rotated.jpg", exif=exif)
    frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    shutil.copy(face, d / "visage_élève_照片.jpg")
    _png_with_declared_size(d / "bomb.png", 100_000, 100_000)
    return {
        "empty.jpg": "error",
        "truncated.jpg": "error",
        "text.jpg": "error",
        "deep16.png": "ok",
        "rgba.png": "ok",
        "cmyk.jpg": "ok",
        "tiny.png": "ok",
        "rotated.jpg": "ok",
        "anim.gif": "ok",
        "visage_élève_照片.jpg": "ok",
        "bomb.png": "error",
    }


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.mark.slow
def test_bad_input_corpus(tiny_model, weights_env, shared, tmp_path, capsys):
    corpus = tmp_path / "bad"
    face = shared / "data/multi-face/couple.jpg"
    expected = make_bad_corpus(corpus, face)
    before = digest(corpus)
    out = tmp_path / "out"
    code = run_cli("restore", corpus, "-o", out, "--model", tiny_model, "--detector", "retinaface_mobile0.25", "-s", 1)
    assert code == 1  # some files failed
    assert digest(corpus) == before  # originals untouched
    report = {Path(e["input"]).name: e for e in json.loads((out / "report.json").read_text())["images"]}
    err = capsys.readouterr().err
    for name, outcome in expected.items():
        assert ("error" in report[name]) == (outcome == "error"), (name, report[name])
        if outcome == "error":
            line = next(ln for ln in err.splitlines() if name in ln)
            assert report[name]["error"] in line
    assert "too large" in report["bomb.png"]["error"]
    assert "empty" in report["empty.jpg"]["error"]
    assert "no face found" in report["tiny.png"]["notes"]
    assert "animated: first frame only" in report["anim.gif"]["notes"]
    rotated = cv2.imread(str(out / "restored_imgs/rotated.jpg"))
    src = cv2.imread(str(face))
    assert rotated.shape[:2] == src.shape[1::-1]  # EXIF orientation applied
    deep = cv2.imread(str(out / "restored_imgs/deep16.png"), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16
    rgba = cv2.imread(str(out / "restored_imgs/rgba.png"), cv2.IMREAD_UNCHANGED)
    assert rgba.shape[2] == 4 and abs(int(rgba[..., 3].mean()) - 200) <= 1
    assert (out / "restored_imgs" / "visage_élève_照片.jpg").is_file()
    assert not list(out.rglob("*.part"))


def test_unwritable_output_is_reported_per_file(tiny_model, weights_env, shared, tmp_path):
    # root ignores chmod, so block the output folder with a file instead
    out = tmp_path / "out"
    out.mkdir()
    (out / "restored_imgs").write_text("in the way")
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(shared / "data/multi-face/couple.jpg", inputs / "a.jpg")
    shutil.copy(shared / "data/multi-face/t1.jpg", inputs / "b.jpg")
    code = run_cli("restore", inputs, "-o", out, "--model", tiny_model, "--detector", "retinaface_mobile0.25", "--no-faces")
    assert code == 1
    report = json.loads((out / "report.json").read_text())
    assert [bool(e.get("error")) for e in report["images"]] == [True, True]


@pytest.mark.slow
def test_rerun_skips_finished_and_overwrite_redoes(tiny_model, weights_env, shared, tmp_path):
    out = tmp_path / "out"
    args = ["restore", shared / "data/multi-face/t1.jpg", "-o", out, "--model", tiny_model, "--detector", "retinaface_mobile0.25"]
    assert run_cli(*args) == 0
    assert json.loads((out / "report.json").read_text())["images"][0]["faces"] == 6
    assert run_cli(*args) == 0
    assert json.loads((out / "report.json").read_text())["images"][0]["skipped"] == "output exists"
    assert run_cli(*args, "--overwrite") == 0
    assert json.loads((out / "report.json").read_text())["images"][0]["faces"] == 6


@pytest.mark.slow
def test_shards_split_without_overlap(tiny_model, weights_env, shared, tmp_path):
    outs = []
    for i in range(2):
        out = tmp_path / f"out{i}"
        assert (
            run_cli(
                "restore",
                shared / "data/multi-face",
                "-o",
                out,
                "--model",
                tiny_model,
                "--shard",
                f"{i}/2",
                "--detector",
                "retinaface_mobile0.25",
                "--no-faces",
                "-s",
                1,
            )
            == 0
        )
        outs.append({p.name for p in (out / "restored_imgs").iterdir()})
        assert (out / f"report.shard{i}-of-2.json").is_file()
    assert not outs[0] & outs[1]
    assert len(outs[0] | outs[1]) == len(list((shared / "data/multi-face").iterdir()))


@pytest.mark.slow
def test_kill_mid_batch_then_rerun_completes(tiny_model, weights_env, shared, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(6):
        shutil.copy(shared / "data/multi-face/t1.jpg", inputs / f"p{i}.jpg")
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "faceres.cli",
        "restore",
        str(inputs),
        "-o",
        str(out),
        "--model",
        str(tiny_model),
        "--detector",
        "retinaface_mobile0.25",
    ]
    proc = subprocess.Popen(cmd, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "restored_imgs").glob("*.jpg")):
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no handler runs
    proc.wait()
    done_before = {p.name for p in (out / "restored_imgs").glob("*.jpg")}
    assert 0 < len(done_before) < 6
    for p in (out / "restored_imgs").glob("*.jpg"):  # whatever exists is complete
        assert cv2.imread(str(p)) is not None
    assert subprocess.run(cmd, env=dict(os.environ), capture_output=True).returncode == 0
    report = json.loads((out / "report.json").read_text())
    assert sum("skipped" in e for e in report["images"]) >= len(done_before)
    assert {p.name for p in (out / "restored_imgs").iterdir()} == {f"p{i}.jpg" for i in range(6)}
    assert not list(out.rglob("*.part"))
    for kind in ("cropped_faces", "restored_faces", "cmp"):
        assert len(list((out / kind).glob("*.png"))) == 36


def test_aligned_inputs(tiny_model, shared, tmp_path):
    src = sorted((shared / "data/real-lq/cropped").iterdir())[:2]
    out = tmp_path / "out"
    assert run_cli("restore", *src, "-o", out, "--model", tiny_model, "--aligned", "-s", 1) == 0
    for p in src:
        img = cv2.imread(str(out / "restored_imgs" / p.name))
        assert img.shape == cv2.imread(str(p)).shape


def test_missing_inputs_fail_before_the_model_loads(tmp_path, capsys, monkeypatch):
    from faceres.pipeline import restorer

    monkeypatch.setattr(restorer.FaceRestorer, "__init__", lambda *a, **k: pytest.fail("the model loaded"))
    code = run_cli("restore", tmp_path / "gone.jpg", tmp_path / "gone2.jpg", "-o", tmp_path / "o")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"faceres: error: {tmp_path / 'gone.jpg'}: no such file (and 1 more inputs)"]
    assert not (tmp_path / "o").exists()


def test_missing_model_is_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FACERES_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    img = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(img)
    code = run_cli("restore", img, "-o", tmp_path / "o", "--model", "gpen-bfr-256", "--device", "cpu")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "GPEN-BFR-256.pth" in err[0] and "http" in err[0] and "Traceback" not in err[0]
