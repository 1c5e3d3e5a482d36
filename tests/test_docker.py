"""No Docker engine runs here: check the Dockerfile statically."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def instructions():
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.M)]


def test_every_copied_path_exists():
    copies = [args.split()[:-1] for op, args in instructions() if op == "COPY"]
    assert copies
    for sources in copies:
        for src in sources:
            assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is not in the repository"


def test_entrypoint_is_the_documented_command():
    cmd = [args for op, args in instructions() if op == "CMD"][-1]
    argv = json.loads(cmd)
    assert argv[:2] == ["python", "app.py"]
    readme = (ROOT / "README.md").read_text()
    assert "python app.py" in readme and "docker build" in readme and "docker run" in readme


def test_image_essentials():
    ops = instructions()
    names = [op for op, _ in ops]
    assert "EXPOSE" in names and "HEALTHCHECK" in names and "VOLUME" in names
    users = [args for op, args in ops if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(op == "ARG" and args.startswith("BASE=") for op, args in ops)  # CUDA variant via build arg
    assert any(op == "RUN" and ".[app]" in args for op, args in ops)
    port = [args for op, args in ops if op == "EXPOSE"][0]
    cmd = json.loads([args for op, args in ops if op == "CMD"][-1])
    assert cmd[cmd.index("--port") + 1] == port and cmd[cmd.index("--host") + 1] == "0.0.0.0"
