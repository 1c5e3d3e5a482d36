"""The folder job from Python (faceres.pipeline.batch): names, resume, shards, report. The CLI tests
(test_cli.py) run the same code through `faceres restore`."""

import json
import shutil

import cv2
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
    assert [j.image.relative_to(out).as_posix() for j in jobs] == ["restored_imgs/a.jpg", "restored_imgs/a_png.png",
                                                                    "restored_imgs/sub/a.png"]
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
    report = restore_folder([inputs], tmp_path / "out", FaceRestorer(tiny_model, device="cpu"), ALIGNED,
                            on_entry=lambda entry, rep: seen.append(entry))
    assert report.failed == 1 and report.ok == 2 and len(seen) == 3
    assert "broken.png" in next(e for e in report.images if "error" in e)["input"]
    with pytest.raises(ValueError, match="no images found"):
        restore_folder([inputs / "empty"], tmp_path / "out2", None)
