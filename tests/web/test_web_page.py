"""End-to-end test of the web page in Debian's Chromium, against the real server (`restora serve`).

The server runs as a subprocess on 127.0.0.1 with tiny conformance weights (custom manifest). The
test uploads a real multi-face photo, follows the progress to 100%, checks the before/after
slider and the face boxes, checks a missing-model error is explained, and saves screenshots to
``artifacts/`` for a person to look at.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import REPO, shared_path
from tiny_models import write_tiny_manifest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("home")
    manifest = write_tiny_manifest(tmp_path_factory.mktemp("manifest"))
    port = _free_port()
    env = {**os.environ, "RESTORA_HOME": str(home), "RESTORA_MODELS": str(manifest)}
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "restora.cli", "serve", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {(home / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError("server did not start within 60 s")
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: scripts/install.sh installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_page_loads_nothing_from_third_parties(server: str, browser) -> None:
    page = browser.new_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(server + "/")
    page.wait_for_load_state("networkidle")
    assert page.title().startswith("Restora")
    assert requested, "page made no requests at all"
    outside = [u for u in requested if not (u.startswith(server) or u.startswith("data:"))]
    assert outside == []
    page.close()


def test_upload_progress_slider_and_face_boxes(server: str, browser) -> None:
    photo = shared_path("testdata", "photos", "00.jpg")
    page = browser.new_page(viewport={"width": 1200, "height": 1100})
    stages: list[str] = []
    page.expose_function("recordStage", lambda s: stages.append(s))
    page.goto(server + "/")
    page.evaluate("""() => new MutationObserver(() => window.recordStage(
        document.getElementById('stage').textContent)).observe(
        document.getElementById('stage'), {childList: true, characterData: true, subtree: true})""")
    assert page.locator("#params-enhance-faces").is_visible()
    assert not page.locator("#params-restore-photo").is_visible()
    page.set_input_files("#file", str(photo))
    assert page.locator("#file-name").inner_text().startswith("00.jpg")
    page.click("#submit")
    page.wait_for_selector("#result-panel:not([hidden])", timeout=180_000)
    assert page.locator("#progress").get_attribute("value") == "100"
    assert page.locator("#percent").inner_text() == "100%"
    assert len(stages) >= 2, f"progress stream showed too few stages: {stages}"

    # Both images of the comparison loaded.
    page.wait_for_function("document.getElementById('after').naturalWidth > 0")
    page.wait_for_function("document.getElementById('before').naturalWidth > 0")
    # The slider moves the split, also from the keyboard.
    page.focus("#slider")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    value = int(page.locator("#slider").input_value())
    assert value > 50
    clip = page.eval_on_selector("#before-clip", "el => el.style.clipPath")
    assert clip.startswith("inset(") and f"{100 - value}%" in clip, clip

    facts = page.locator("#facts").inner_text()
    assert "Faces detected" in facts
    faces = int(page.locator("#facts dd").first.inner_text())
    assert faces >= 3, facts  # 00.jpg has 4 faces
    assert not page.locator("#faces").is_visible()
    page.check("#show-faces")
    assert page.locator("#faces").is_visible()
    assert page.locator("#faces rect").count() == faces
    box = page.locator("#faces rect").first.bounding_box()
    view = page.locator("#compare").bounding_box()
    assert box and view and box["width"] > 5 and view["x"] <= box["x"] <= view["x"] + view["width"]

    href = page.locator("#download").get_attribute("href")
    assert httpx.get(server + href if href.startswith("/") else href).status_code == 200
    preview = page.locator("#download-preview").get_attribute("href")
    assert httpx.get(server + preview if preview.startswith("/") else preview).status_code == 200

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-result.png"), full_page=True)
    page.check("#zoom")
    assert "zoomed" in page.locator("#viewport").get_attribute("class")
    page.close()


def test_missing_model_is_explained(server: str, browser) -> None:
    photo = shared_path("testdata", "gray", "Einstein01.png")
    page = browser.new_page()
    page.goto(server + "/")
    page.set_input_files("#file", str(photo))
    page.check('input[name="tool"][value="restore-photo"]')
    assert page.locator("#params-restore-photo").is_visible()
    page.check('input[name="colorize"]')  # no colorization model in the tiny manifest
    page.click("#submit")
    page.wait_for_selector("#error-panel:not([hidden])", timeout=180_000)
    message = page.locator("#error-message").inner_text()
    assert "colorization" in message.lower() or "ddcolor" in message.lower(), message
    hint = page.locator("#error-hint code").inner_text()
    assert hint.startswith("restora models pull ") and "`" not in hint, hint
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-missing-model.png"), full_page=True)
    page.close()


def test_phone_width_and_keyboard(server: str, browser) -> None:
    page = browser.new_page(viewport={"width": 375, "height": 740})
    page.goto(server + "/")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"page scrolls sideways on a phone by {overflow}px"
    # Every control is reachable with Tab: the drop zone comes first and takes focus.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "drop"
    # Walking on with Tab reaches the tool choice and the parameter controls.
    reached = set()
    for _ in range(12):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("document.activeElement.name || document.activeElement.id"))
    assert {"tool", "model", "strength", "sensitivity"} <= reached, reached
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-phone.png"), full_page=True)
    page.close()
