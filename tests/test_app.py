"""The web demo, driven as a person would: headless Chromium through Playwright."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-quic"]

pytest.importorskip("gradio", reason="web demo needs the app extra: pip install -e '.[app]'")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(shared, tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    port = free_port()
    env = dict(os.environ, FACERES_WEIGHTS_DIR=str(shared / "weights"), GRADIO_ANALYTICS_ENABLED="False", FACERES_OFFLINE="1",
               GRADIO_TEMP_DIR=str(tmp_path_factory.mktemp("gradio")))
    log = open(tmp_path_factory.mktemp("applog") / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(Path(log.name).read_text()[-3000:]) from None
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("the app did not start within 120 s")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def page(app_url):
    playwright = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield pg
        browser.close()


def upload_and_run(page, url, files):
    page.goto(url)
    page.locator("#upload input[type=file]").set_input_files([str(f) for f in files])
    page.wait_for_timeout(500)
    page.locator("#restore").click()


def test_restore_t1_in_the_browser(page, app_url, shared):
    src = shared / "data/multi-face/t1.jpg"
    upload_and_run(page, app_url, [src])
    link = page.locator("#download a").first
    link.wait_for(timeout=300_000)
    page.wait_for_timeout(500)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app_t1.png"), full_page=True)
    status = page.locator("#status").inner_text()
    assert "6 face(s)" in status
    data = page.request.get(link.get_attribute("href")).body()
    restored = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    original = cv2.imread(str(src))
    assert restored.shape == (original.shape[0] * 2, original.shape[1] * 2, 3)
    assert np.abs(cv2.resize(restored, original.shape[1::-1]).astype(float) - original).mean() > 0.5
    assert page.locator("#faces img").count() >= 6
    assert page.locator("#result img").count() >= 1


def test_corrupt_upload_shows_error(page, app_url, tmp_path):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"this is not a jpeg at all")
    upload_and_run(page, app_url, [bad])
    error = page.locator("#status").get_by_text("corrupt.jpg: not an image or unsupported format")
    error.wait_for(timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app_corrupt.png"))
    assert error.is_visible()


def test_concurrent_requests_share_one_restorer(tiny_model, weights_env, shared, tmp_path, monkeypatch):
    """Two requests at once with different fidelities, served by one shared restorer: each gets what
    it gets alone (the options travel with the request, not in the restorer)."""
    from collections import OrderedDict
    from concurrent.futures import ThreadPoolExecutor

    from faceres import webapp

    monkeypatch.setattr(webapp, "_restorers", OrderedDict())
    photo = tmp_path / "couple.png"  # half size: detection is most of the time
    cv2.imwrite(str(photo), cv2.resize(cv2.imread(str(shared / "data/multi-face/couple.jpg")), None, fx=0.5, fy=0.5))
    model = str(tiny_model)

    def request(fidelity):
        return webapp.restore_files([str(photo)], model, "retinaface_mobile0.25", 1, fidelity, "none", False, [model])

    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(request, [0.25, 1.0]))
    alone = [request(f) for f in (0.25, 1.0)]
    assert len(webapp._restorers) == 1
    for (first, _, status, downloads), (first_alone, _, _, _) in zip(together, alone):
        assert "face(s)" in status and len(downloads) == 1
        np.testing.assert_array_equal(first[1], first_alone[1])
    assert np.abs(alone[0][0][1].astype(int) - alone[1][0][1]).max() > 10  # the two fidelities really differ
