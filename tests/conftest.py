import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FACERES_SHARED", ROOT.parent / "shared"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED} (set FACERES_SHARED to the folder holding data/ and weights/)")
    return SHARED


@pytest.fixture(scope="session")
def fixtures_dir(shared) -> Path:
    d = shared / "reference" / "gpen-fixtures"
    if not d.is_dir():
        pytest.skip(f"GPEN fixtures not found at {d}")
    return d
