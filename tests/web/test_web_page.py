"""End-to-end tests of the web page in Debian's Chromium, against the real server (`restora serve`).

One server (tiny conformance weights via a custom manifest) and one browser serve the whole
module. Every test saves screenshots to ``artifacts/web-*.png`` for a person to look at; the
page's console errors fail the test that caused them.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image as PILImage

from conftest import REPO, shared_path
from tiny_models import write_tiny_manifest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
JOB_TIMEOUT_MS = 180_000
DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


from contextlib import contextmanager


@contextmanager
def run_server(home: Path, manifest: Path, port: int | None = None, *, crash: bool = False,
               **extra_env: str):
    """`restora serve` as a subprocess on ``port`` (default: a free one); yields its base URL.
    Stopped with SIGTERM, or SIGKILL with ``crash`` (gone at once, as in a crash)."""
    port = port or _free_port()
    env = {**os.environ, "RESTORA_HOME": str(home), "RESTORA_MODELS": str(manifest),
           "RESTORA_WORKERS": "1", "PYTHONPATH": str(REPO / "src"), **extra_env}
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "restora.cli", "serve", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
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
            raise RuntimeError("server did not start within 60 s")
        yield base
    finally:
        if crash:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    manifest = write_tiny_manifest(tmp_path_factory.mktemp("manifest"))
    with run_server(tmp_path_factory.mktemp("home"), manifest) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: scripts/install.sh installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    """A fresh browser context + page that records console errors and saves screenshots."""

    def __init__(self, browser, server: str, **context) -> None:
        self.context = browser.new_context(accept_downloads=True, **context)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.server = server

    def __enter__(self):
        return self.page

    def __exit__(self, *exc) -> None:
        self.context.close()
        # 4xx answers the test provoked are logged by Chromium as failed resources; JS errors not.
        js = [e for e in self.errors if "Failed to load resource" not in e]
        if exc[0] is None:
            assert js == [], js


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"web-{name}.png"), full_page=True)


def photo_files(tmp_path: Path) -> dict[str, Path]:
    """Inputs made here: a 16-bit TIFF of a real face photo, a small PNG, a damaged JPEG."""
    src = PILImage.open(shared_path("testdata", "photos", "00.jpg")).convert("RGB")
    arr = np.asarray(src.resize((src.width // 2, src.height // 2)), dtype=np.uint16) * 257
    import tifffile

    tif = tmp_path / "group.tif"
    tifffile.imwrite(tif, arr, photometric="rgb")
    small = tmp_path / "small.png"
    src.resize((180, 120)).save(small)
    jpg = io.BytesIO()
    src.save(jpg, "JPEG", quality=90)
    damaged = tmp_path / "damaged.jpg"
    damaged.write_bytes(jpg.getvalue()[: len(jpg.getvalue()) // 3])
    return {"tif": tif, "small": small, "damaged": damaged}


def wait_done(page, row: str = "#queue li", n: int = 1) -> None:
    page.wait_for_function(
        """([sel, n]) => [...document.querySelectorAll(sel)].filter(
             (li) => ['succeeded', 'failed', 'canceled'].includes(li.dataset.status)).length >= n""",
        arg=[row, n], timeout=JOB_TIMEOUT_MS)


def transfer(page, event: str, target: str = "document", files=(), text: str | None = None) -> bool:
    """Dispatches a real ``paste`` ClipboardEvent (or ``drop`` DragEvent) on ``target`` whose
    DataTransfer holds Files made from ``files`` ((bytes, name, type) each) and optionally plain
    text; returns whether the page took it (``defaultPrevented``)."""
    return page.evaluate("""([event, target, files, text]) => {
        const dt = new DataTransfer();
        for (const [b64, name, type] of files) {
          const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
          dt.items.add(new File([bytes], name, { type }));
        }
        if (text !== null) dt.setData("text/plain", text);
        const init = { bubbles: true, cancelable: true };
        const ev = event === "paste" ? new ClipboardEvent("paste", { ...init, clipboardData: dt })
          : new DragEvent(event, { ...init, dataTransfer: dt });
        (target === "document" ? document : document.querySelector(target)).dispatchEvent(ev);
        return ev.defaultPrevented;
    }""", [event, target, [[base64.b64encode(b).decode(), n, t] for b, n, t in files], text])


def test_page_loads_nothing_from_third_parties(server: str, browser) -> None:
    with Page(browser, server) as page:
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url))
        page.goto(server + "/")
        page.wait_for_load_state("networkidle")
        assert page.title().startswith("Restora")
        outside = [u for u in requested if not (u.startswith(server) or u.startswith("data:"))]
        assert requested and outside == []


def test_settings_match_documented_defaults_and_sliders_follow_steps(server: str,
                                                                      browser) -> None:
    from restora.service.params import EnhanceSettings, RestoreSettings

    with Page(browser, server, viewport=DESKTOP) as page:
        page.goto(server + "/")
        sent = page.evaluate("collectSettings('enhance-faces')")
        want = EnhanceSettings().model_dump(by_alias=True)
        # Every setting of the tool is on the page with the documented default, except the
        # client face boxes, the detector and identity-model ids (API-only), the seed (empty =
        # random) and referenceUrl (the page uploads reference photos as files instead).
        api_only = ("faces", "detector", "seed", "identityModel", "referenceUrl")
        assert sent == {k: v for k, v in want.items() if k not in api_only}
        assert page.locator("#reference").get_attribute("multiple") is not None
        page.select_option("#model", "gfpgan")
        assert page.locator("#fidelity-e").is_disabled()  # GFPGAN has no fidelity
        page.select_option("#model", "codeformer")
        assert page.locator("#fidelity-e").is_enabled()
        page.fill('#params-enhance-faces [name="seed"]', "7")
        assert page.evaluate("collectSettings('enhance-faces')")["seed"] == 7

        page.check('input[name="tool"][value="restore-photo"]')
        photo_defaults = RestoreSettings().model_dump(by_alias=True)
        # maskMode goes with a painted mask: the mask editor's "Use as" choice, same default.
        assert page.locator("#mask-mode").input_value() == photo_defaults.pop("maskMode")
        assert page.evaluate("collectSettings('restore-photo')") == photo_defaults
        assert page.locator("#colorizeStrength").is_disabled()  # colorize is off by default
        assert page.locator("#denoiseStrength").is_enabled()
        page.uncheck('input[name="denoise"]')
        page.uncheck('input[name="faceEnhancement"]')
        assert page.locator("#denoiseStrength").is_disabled()
        assert page.locator("#fidelity").is_disabled()
        page.check('input[name="colorize"]')
        assert page.locator("#colorizeStrength").is_enabled()
        shot(page, "settings-restore")
        page.click("#reset-settings")
        assert page.evaluate("collectSettings('restore-photo')") == photo_defaults


def test_batch_queue_zip_history_reload_and_delete(server: str, browser, tmp_path: Path) -> None:
    files = photo_files(tmp_path)
    photo = shared_path("testdata", "photos", "01.jpg")
    with Page(browser, server, viewport=DESKTOP) as page:
        page.goto(server + "/")
        page.set_input_files("#file", [str(photo), str(files["tif"])])
        assert page.locator("#file-name").inner_text().startswith("2 files")
        assert page.locator("#submit").inner_text() == "Restore 2 photos"
        page.click("#submit")
        assert page.locator("#queue li").count() == 2
        assert page.evaluate("document.activeElement.id") == "queue-title"
        wait_done(page, n=2)
        assert page.locator('#queue li[data-status="succeeded"]').count() == 2
        # The TIFF's queue thumbnail is the server's browser preview of the upload.
        tif_thumb = page.locator("#queue li").nth(1).locator("img.thumb")
        assert "/input.webp" in tif_thumb.get_attribute("src")
        page.wait_for_function(
            "document.querySelectorAll('#queue li img.thumb')[1].naturalWidth > 0")
        # The first result opened by itself, announced for screen readers.
        page.wait_for_selector("#result-panel:not([hidden])")
        page.wait_for_function("document.getElementById('announce').textContent.includes('ready')")

        # Download all: one zip with both results.
        assert page.locator("#download-all").is_visible()
        with page.expect_download() as dl:
            page.click("#download-all")
        names = zipfile.ZipFile(dl.value.path()).namelist()
        assert sorted(names) == ["01_enhanced.png", "group_enhanced.png"], names

        # The TIFF's "before" is the server's browser preview, not the result compared with itself.
        page.locator("#queue li").nth(1).get_by_role("button", name="View").click()
        page.wait_for_function("document.getElementById('before').naturalWidth > 0")
        before_src = page.locator("#before").get_attribute("src")
        after_src = page.locator("#after").get_attribute("src")
        assert before_src.endswith("/input.webp") and before_src != after_src
        tif_job = page.evaluate("new URLSearchParams(location.search).get('job')")
        assert tif_job and tif_job in before_src
        shot(page, "batch")

        # History: newest first, with thumbnails; the URL's job survives a reload.
        page.wait_for_function("document.querySelectorAll('#history li').length >= 2")
        # (Both uploads ran at once, so either may be the newer one.)
        ids = page.evaluate("[...document.querySelectorAll('#history li')].map(li => li.dataset.job)")
        jobs = {j["jobId"]: j for j in httpx.get(f"{server}/api/v1/jobs").json()["jobs"]}
        assert tif_job in ids[:2] and ids == sorted(ids, key=lambda i: jobs[i]["createdAt"],
                                                     reverse=True)
        row = page.locator(f'#history li[data-job="{tif_job}"]')
        assert "group.tif" in row.inner_text() and "done" in row.inner_text()
        page.wait_for_function(
            "document.querySelector('#history li img.thumb').naturalWidth > 0")
        page.reload()
        page.wait_for_selector("#result-panel:not([hidden])")
        page.wait_for_function("document.getElementById('after').naturalWidth > 0")
        assert tif_job in page.locator("#before").get_attribute("src")
        shot(page, "history-reload")

        # Delete from history: gone from the list and from the server.
        count = page.locator("#history li").count()
        page.locator(f'#history li[data-job="{tif_job}"]').get_by_role("button",
                                                                        name="Delete").click()
        page.wait_for_function(f"document.querySelectorAll('#history li').length == {count - 1}")
        assert page.locator("#result-panel").is_hidden()  # it was the job on show
        assert httpx.get(f"{server}/api/v1/jobs/{tif_job}").status_code == 404
        assert "job=" not in page.url


def test_pasted_images_are_taken_as_if_dropped(server: str, browser) -> None:
    """Ctrl/Cmd+V of clipboard images: the drop's path (same label, queue, results), with names
    made from the type when the clipboard gives none (or the browser's generic "image.png")."""
    from playwright.sync_api import expect

    dropped = shared_path("testdata", "photos", "01.jpg")
    jpeg = shared_path("testdata", "photos", "03.jpg").read_bytes()
    buf = io.BytesIO()
    PILImage.open(shared_path("testdata", "photos", "04.jpg")).save(buf, "PNG")
    png = buf.getvalue()
    with Page(browser, server, viewport=DESKTOP) as page:
        page.goto(server + "/")
        assert "or paste an image" in page.locator("#drop-help").inner_text()
        expect(page.locator("#drop")).to_have_accessible_description(
            "One or many, or paste an image (Ctrl+V). JPEG, PNG, WebP, AVIF, HEIC, TIFF, RAW, PSD, "
            "EXR, HDR…")
        # A drop first: what a paste must look like.
        assert transfer(page, "drop", "#drop", [(dropped.read_bytes(), "01.jpg", "image/jpeg")])
        assert page.locator("#file-name").inner_text() == "01.jpg (9.1 KB)"
        assert page.locator("#submit").inner_text() == "Restore"

        # A paste anywhere on the page (not in a field) replaces the choice, like a new drop.
        assert transfer(page, "paste", files=[(jpeg, "", "image/jpeg"),
                                              (png, "image.png", "image/png")])
        assert page.evaluate("state.files.map((f) => [f.name, f.type, f.size])") == [
            ["pasted-1.jpg", "image/jpeg", len(jpeg)], ["pasted-2.png", "image/png", len(png)]]
        assert page.locator("#file-name").inner_text().startswith("2 files (")
        assert page.locator("#submit").inner_text() == "Restore 2 photos"
        shot(page, "pasted")
        page.click("#submit")
        assert page.locator("#queue li .job-name").all_inner_texts() == ["pasted-1.jpg",
                                                                         "pasted-2.png"]
        wait_done(page, n=2)
        assert page.locator('#queue li[data-status="succeeded"]').count() == 2
        page.wait_for_function("[...document.querySelectorAll('#queue li img.thumb')]"
                               ".every((img) => img.naturalWidth > 0)")
        page.wait_for_selector("#result-panel:not([hidden])")
        page.wait_for_function("document.getElementById('after').naturalWidth > 0 && "
                               "document.getElementById('before').naturalWidth > 0")
        assert page.locator("#result-title").inner_text() in ("Result — pasted-1.jpg",
                                                              "Result — pasted-2.png")
        with page.expect_download() as dl:
            page.click("#download-all")
        names = zipfile.ZipFile(dl.value.path()).namelist()
        assert sorted(names) == ["pasted-1_enhanced.png", "pasted-2_enhanced.png"], names
        jobs = page.evaluate("state.entries.map((e) => e.jobId)")
        shot(page, "pasted-result")
    # The server kept the names the page gave the pasted files.
    for job, name in zip(jobs, ["pasted-1.jpg", "pasted-2.png"]):
        snap = httpx.get(f"{server}/api/v1/jobs/{job}").json()
        assert snap["status"] == "succeeded" and snap["result"]["filename"].startswith(name[:-4])


def test_paste_in_fields_and_pastes_without_images_add_no_file(server: str, browser) -> None:
    """In the seed and API key fields paste edits the text; a paste of text elsewhere does
    nothing. The real keys too: the clipboard written, then Ctrl+V."""
    jpeg = shared_path("testdata", "photos", "03.jpg").read_bytes()
    with Page(browser, server, viewport=DESKTOP,
              permissions=["clipboard-read", "clipboard-write"]) as page:
        page.goto(server + "/")
        seed = '#params-enhance-faces [name="seed"]'
        page.click(".apikey summary")
        for field in (seed, "#api-key"):
            page.focus(field)
            assert not transfer(page, "paste", field, [(jpeg, "", "image/jpeg")])
        assert page.evaluate("state.files.length") == 0
        assert page.locator("#submit").is_disabled()
        assert page.locator("#file-name").inner_text() == ""
        # Plain text on the page: nothing taken, no error (console errors fail the test).
        page.focus("#drop")
        assert not transfer(page, "paste", text="just some words")
        assert not transfer(page, "paste", files=[(b"%PDF-1.4", "notes.pdf", "application/pdf")])
        assert page.evaluate("state.files.length") == 0
        assert page.locator("#error-panel").is_hidden()

        # Real Ctrl+V: text typed into the seed field keeps its meaning there...
        page.evaluate("navigator.clipboard.writeText('42')")
        page.focus(seed)
        page.keyboard.press("Control+V")
        assert page.locator(seed).input_value() == "42"
        # ...and an image on the clipboard goes into the seed field as nothing, onto the page
        # as a file (Chromium names it image.png: renamed by its type).
        page.evaluate("""async (b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const bitmap = await createImageBitmap(new Blob([bytes], { type: "image/jpeg" }));
            const canvas = document.createElement("canvas");
            canvas.width = bitmap.width; canvas.height = bitmap.height;
            canvas.getContext("2d").drawImage(bitmap, 0, 0);
            const png = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
            await navigator.clipboard.write([new ClipboardItem({ "image/png": png })]);
        }""", base64.b64encode(jpeg).decode())
        page.keyboard.press("Control+V")
        assert page.evaluate("state.files.length") == 0
        page.locator("#theme").focus()
        page.keyboard.press("Control+V")
        page.wait_for_function("state.files.length == 1")
        assert page.evaluate("[state.files[0].name, state.files[0].type]") == ["pasted-1.png",
                                                                               "image/png"]
        assert page.locator("#file-name").inner_text().startswith("pasted-1.png (")
        assert page.locator("#submit").is_enabled()
        # A text paste afterwards leaves the chosen file alone.
        page.evaluate("navigator.clipboard.writeText('not a photo')")
        page.keyboard.press("Control+V")
        assert page.evaluate("state.files.map((f) => f.name)") == ["pasted-1.png"]


def test_comparison_labels_drag_touch_side_by_side_zoom_pan_and_face_strip(
        server: str, browser) -> None:
    photo = shared_path("testdata", "photos", "00.jpg")
    with Page(browser, server, viewport=DESKTOP, has_touch=True) as page:
        page.goto(server + "/")
        page.set_input_files("#file", str(photo))
        page.click("#submit")
        wait_done(page)
        page.wait_for_function("document.getElementById('after').naturalWidth > 0 && "
                               "document.getElementById('before').naturalWidth > 0")
        assert page.locator(".tag-before").is_visible() and page.locator(".tag-after").is_visible()
        # Mouse drag on the picture moves the split.
        box = page.locator("#compare").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] / 2, steps=4)
        page.mouse.up()
        assert 20 <= int(page.locator("#slider").input_value()) <= 30
        # A touch drag (pointer events from a finger) moves it too.
        for kind, frac in (("pointerdown", 0.5), ("pointermove", 0.7), ("pointerup", 0.7)):
            page.locator("#viewport").dispatch_event(kind, {
                "pointerType": "touch", "pointerId": 7, "isPrimary": True, "buttons": 1,
                "clientX": box["x"] + box["width"] * frac, "clientY": box["y"] + 50})
        assert 65 <= int(page.locator("#slider").input_value()) <= 75
        clip = page.eval_on_selector("#before-clip", "el => el.style.clipPath")
        assert clip.startswith("inset(0px 3") or clip.startswith("inset(0 3"), clip
        # The keyboard moves it as well.
        page.focus("#slider")
        page.keyboard.press("ArrowRight")
        assert int(page.locator("#slider").input_value()) >= 66

        # Numbered face boxes and a strip of numbered before/after crops.
        faces = page.evaluate("state.shown.result.faces.length")
        assert faces >= 3
        page.check("#show-faces")
        assert page.locator("#faces rect").count() == faces
        assert page.locator("#faces text").all_text_contents() == [str(i + 1) for i in range(faces)]
        assert page.locator("#face-strip li").count() == faces
        assert page.locator("#face-strip .num").all_inner_texts() == [str(i + 1)
                                                                      for i in range(faces)]
        # The crops are drawn (not blank canvases).
        drawn = page.evaluate("""() => [...document.querySelectorAll('#face-strip canvas')].map(c => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i + 3]; return s > 0; })""")
        assert all(drawn) and len(drawn) == 2 * faces
        # One identity badge per face, from the result's verdict (the dlib model is installed).
        verdicts = page.evaluate("state.shown.result.faces.map(f => f.identity && f.identity.verdict)")
        assert all(verdicts), verdicts
        badges = page.locator("#face-strip .badge")
        assert badges.count() == faces
        assert [c.split()[-1] for c in badges.evaluate_all("bs => bs.map(b => b.className)")] == \
            [f"badge-{v}" for v in verdicts]
        shot(page, "compare-slider")

        # Side by side, labelled.
        page.check('input[name="view"][value="side"]')
        assert page.locator("#side").is_visible() and not page.locator("#compare").is_visible()
        assert page.locator("#side figcaption").all_inner_texts() == ["Before", "After"]
        shot(page, "compare-side")
        page.check('input[name="view"][value="slider"]')

        # Zoom 400 %: real pixels, scrollable, and a drag pans.
        page.select_option("#zoom", "4")
        natural = page.evaluate("document.getElementById('after').naturalWidth")
        assert page.evaluate("document.getElementById('compare').getBoundingClientRect().width") \
            == pytest.approx(4 * natural, abs=2)
        vp = page.locator("#viewport").bounding_box()
        page.mouse.move(vp["x"] + vp["width"] * 0.8, vp["y"] + 100)
        page.mouse.down()
        page.mouse.move(vp["x"] + vp["width"] * 0.3, vp["y"] + 60, steps=4)
        page.mouse.up()
        assert page.evaluate("document.getElementById('viewport').scrollLeft") > 100
        # Keyboard: the zoomed view takes focus and the arrow keys pan it.
        page.focus("#viewport")
        before_keys = page.evaluate("document.getElementById('viewport').scrollLeft")
        page.keyboard.press("ArrowRight")
        page.wait_for_function(
            f"document.getElementById('viewport').scrollLeft > {before_keys}")
        shot(page, "compare-zoom")
        # Side by side at 400 %: each pane keeps its own image, and both pan together.
        page.check('input[name="view"][value="side"]')
        pane = page.locator("#side .pane").first.bounding_box()
        page.mouse.move(pane["x"] + pane["width"] * 0.8, pane["y"] + 100)
        page.mouse.down()
        page.mouse.move(pane["x"] + pane["width"] * 0.2, pane["y"] + 60, steps=4)
        page.mouse.up()
        lefts = page.evaluate("[...document.querySelectorAll('#side .pane')].map(p => p.scrollLeft)")
        assert lefts[0] > 50 and lefts[0] == lefts[1], lefts
        boxes = [page.locator("#side .pane").nth(i).bounding_box() for i in (0, 1)]
        assert boxes[0]["x"] + boxes[0]["width"] <= boxes[1]["x"] + 1  # panes do not overlap
        assert page.locator("#side figcaption").first.is_visible()
        caption = page.locator("#side figcaption").first.bounding_box()
        assert caption["y"] >= page.locator("#viewport").bounding_box()["y"] - 1  # labels stay
        shot(page, "compare-side-zoom")


def test_a_running_job_shows_the_time_left_from_the_server_estimate(server: str,
                                                                     browser) -> None:
    """The progress frames' ``estimate`` becomes "about N s left" in the job's row while it
    runs (every status the row showed is recorded, however briefly)."""
    import re

    photo = shared_path("testdata", "photos", "00.jpg")  # a group: several faces to restore
    with Page(browser, server, viewport=DESKTOP) as page:
        page.goto(server + "/")
        page.evaluate("""() => {
            window.seen = [];
            new MutationObserver(() => document.querySelectorAll('#queue .status').forEach(
                (s) => window.seen.push(s.textContent))).observe(
                document.getElementById('queue'),
                {subtree: true, childList: true, characterData: true});
        }""")
        page.set_input_files("#file", str(photo))
        page.click("#submit")
        wait_done(page)
        assert page.locator("#queue li").first.get_attribute("data-status") == "succeeded"
        seen = page.evaluate("window.seen")
    left = [t for t in seen if re.fullmatch(r"\d+% · .+ · about \d+ (s|min) left", t)]
    assert left, sorted(set(seen))
    # once the pipeline is done, saving the result is not in its estimate
    assert not [t for t in seen if re.match(r"\d+% · (Done|Saving result\.\.\.) · ", t)], seen
    assert seen[-1] == "done"


def test_small_image_not_stretched_warnings_shown_and_stale_result_cleared(
        server: str, browser, tmp_path: Path) -> None:
    files = photo_files(tmp_path)
    with Page(browser, server, viewport=DESKTOP) as page:
        page.goto(server + "/")
        page.set_input_files("#file", str(files["small"]))
        page.check('input[name="faceUpsample"]')  # no effect at upscale 1: the server warns
        page.click("#submit")
        wait_done(page)
        page.wait_for_function("document.getElementById('after').naturalWidth > 0")
        width = page.evaluate("document.getElementById('compare').getBoundingClientRect().width")
        assert width == pytest.approx(180, abs=1)  # its own size, not the page's width
        warnings = page.locator("#warnings").inner_text()
        assert page.locator("#warnings").is_visible() and "face_upsample" in warnings, warnings
        shot(page, "warnings-small")
        # Choosing a new file hides the old result.
        page.set_input_files("#file", str(files["tif"]))
        assert page.locator("#result-panel").is_hidden()
        assert page.locator("#after").get_attribute("src") is None


def test_a_photo_lying_on_its_side_is_restored_the_right_way_up(server: str, browser,
                                                                  tmp_path: Path) -> None:
    sideways = tmp_path / "sideways.jpg"
    src = PILImage.open(shared_path("testdata", "photos", "00.jpg")).convert("RGB")
    src.transpose(PILImage.Transpose.ROTATE_270).save(sideways, quality=95)  # turned clockwise
    with Page(browser, server, viewport=DESKTOP) as page:
        page.goto(server + "/")
        assert page.locator('#params-enhance-faces select[name="orientation"]').input_value() == "auto"
        page.set_input_files("#file", str(sideways))
        page.click("#submit")
        wait_done(page)
        facts = page.locator("#facts").inner_text()
        assert "Faces turned" in facts and "90°" in facts, facts
        page.check("#show-faces")
        assert page.locator("#faces rect").count() == 4
        shot(page, "sideways")


def test_cancel_is_not_a_failure_and_failure_keeps_the_server_reason(
        server: str, browser, tmp_path: Path) -> None:
    files = photo_files(tmp_path)
    photo = shared_path("testdata", "photos", "00.jpg")
    with Page(browser, server, viewport=DESKTOP) as page:
        page.goto(server + "/")
        page.set_input_files("#file", str(files["damaged"]))
        page.click("#submit")
        wait_done(page)
        page.wait_for_selector("#error-panel:not([hidden])")
        message = page.locator("#error-message").inner_text()
        assert "damaged" in message.lower() or "truncated" in message.lower(), message
        assert message != "The job failed."
        assert page.locator("#error-panel").get_attribute("role") == "alert"
        shot(page, "failed")

        # Three jobs on one worker: the last one waits, and is cancelled.
        page.set_input_files("#file", [str(photo), str(files["tif"]), str(photo)])
        page.click("#submit")
        last = page.locator("#queue li").last
        last.get_by_role("button", name="Cancel").click()
        page.wait_for_function(
            "document.querySelector('#queue li:last-child').dataset.status == 'canceled'",
            timeout=JOB_TIMEOUT_MS)
        assert "cancelled" in last.inner_text()
        assert page.locator("#error-title").inner_text().endswith("cancelled")
        assert "went wrong" not in page.locator("#error-panel").inner_text()
        assert page.locator("#error-panel").get_attribute("role") == "status"
        shot(page, "cancelled")
        # Cancel the rest too (running or waiting): the queue settles without running them.
        for i in range(1, 3):
            row = page.locator("#queue li").nth(i)
            if row.get_by_role("button", name="Cancel").count():
                row.get_by_role("button", name="Cancel").click()
        wait_done(page, n=4)
        # "Clear finished" empties the queue and hands focus back to the drop zone.
        page.click("#clear-finished")
        assert page.locator("#queue li").count() == 0 and page.locator("#progress-panel").is_hidden()
        assert page.evaluate("document.activeElement.id") == "drop"


def test_try_again_sends_a_failed_history_job_as_a_new_job(server: str, browser) -> None:
    # A realistic failure: the mask's aspect ratio is not the photo's, found when the job starts.
    buf = io.BytesIO()
    PILImage.new("L", (10, 50), 255).save(buf, "PNG")
    photo = shared_path("testdata", "gray", "Einstein01.png")
    r = httpx.post(f"{server}/api/v1/tools/restore-photo", timeout=60,
                   files={"file": ("einstein.png", photo.read_bytes(), "image/png"),
                          "mask": ("mask.png", buf.getvalue(), "image/png")},
                   data={"settings": json.dumps({"faceEnhancement": False})})
    assert r.status_code == 202, r.text
    failed = r.json()["jobId"]
    deadline = time.monotonic() + JOB_TIMEOUT_MS / 1000
    while httpx.get(f"{server}/api/v1/jobs/{failed}").json()["status"] in ("queued", "processing"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert httpx.get(f"{server}/api/v1/jobs/{failed}").json()["status"] == "failed"
    with Page(browser, server, viewport=DESKTOP) as page:
        page.goto(server + "/")
        row = page.locator(f'#history li[data-job="{failed}"]')
        row.wait_for()
        assert row.get_attribute("data-status") == "failed"
        # no result: the thumbnail is the server's preview of the input it kept
        page.wait_for_function(
            f"document.querySelector('#history li[data-job=\"{failed}\"] img.thumb')"
            ".naturalWidth > 0")
        # only a failed job offers it
        assert page.locator('#history li[data-status="succeeded"]').get_by_role(
            "button", name="Try again").count() == 0
        row.get_by_role("button", name="Try again einstein.png").click()
        page.wait_for_function("state.entries.length == 1 && state.entries[0].jobId !== null")
        again = page.evaluate("state.entries[0].jobId")
        assert again != failed
        assert page.evaluate("document.activeElement.id") == "queue-title"
        wait_done(page)  # the new job ran (and failed the same way: the same mask)
        assert page.locator("#queue li").first.get_attribute("data-status") == "failed"
        assert "the mask is 10 x 50" in page.locator("#error-message").inner_text()
        # the history lists the new job (newest first) and still the failed one
        page.wait_for_function(
            "([a, f]) => { const ids = [...document.querySelectorAll('#history li')]"
            ".map((li) => li.dataset.job); return ids.includes(a) && ids.includes(f)"
            " && ids.indexOf(a) < ids.indexOf(f); }", arg=[again, failed])
        shot(page, "try-again")
    snap = httpx.get(f"{server}/api/v1/jobs/{again}").json()
    assert snap["tool"] == "restore-photo" and snap["status"] == "failed"


def test_missing_model_is_explained(server: str, browser) -> None:
    photo = shared_path("testdata", "gray", "Einstein01.png")
    with Page(browser, server) as page:
        page.goto(server + "/")
        page.set_input_files("#file", str(photo))
        page.check('input[name="tool"][value="restore-photo"]')
        page.check('input[name="colorize"]')  # no colorization model in the tiny manifest
        page.click("#submit")
        page.wait_for_selector("#error-panel:not([hidden])", timeout=JOB_TIMEOUT_MS)
        message = page.locator("#error-message").inner_text()
        assert "colorization" in message.lower() or "ddcolor" in message.lower(), message
        hint = page.locator("#error-hint code").inner_text()
        assert hint.startswith("restora models pull ") and "`" not in hint, hint
        shot(page, "missing-model")


def test_phone_scrolls_focuses_and_announces_the_result(server: str, browser) -> None:
    photo = shared_path("testdata", "photos", "01.jpg")
    with Page(browser, server, viewport=PHONE, is_mobile=True, has_touch=True) as page:
        page.goto(server + "/")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"page scrolls sideways on a phone by {overflow}px"
        page.set_input_files("#file", str(photo))
        page.click("#submit")
        # The queue is brought into view with focus on its heading.
        assert page.evaluate("document.activeElement.id") == "queue-title"
        top = page.evaluate("document.getElementById('queue-title').getBoundingClientRect().top")
        assert -2 <= top < PHONE["height"]
        wait_done(page)
        page.wait_for_function("document.activeElement.id == 'result-title'")
        top = page.evaluate("document.getElementById('result-title').getBoundingClientRect().top")
        assert -2 <= top < PHONE["height"] / 2
        page.wait_for_function(
            "document.getElementById('announce').textContent.startsWith('Result ready')")
        assert page.get_attribute("#announce", "aria-live") == "polite"
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1
        page.screenshot(path=str(ARTIFACTS / "web-phone-result.png"))
        shot(page, "phone")


def test_dark_mode_follows_system_and_toggle_and_keyboard(server: str, browser) -> None:
    with Page(browser, server, viewport=DESKTOP, color_scheme="dark") as page:
        page.goto(server + "/")
        bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert bg == "rgb(21, 23, 27)", bg
        assert page.get_attribute("#theme", "aria-pressed") == "true"
        # A result in dark colours, opened by its address (a job submitted over the API).
        photo = shared_path("testdata", "photos", "05.jpg")
        job = httpx.post(f"{server}/api/v1/tools/enhance-faces",
                         files={"file": ("05.jpg", photo.read_bytes(), "image/jpeg")}).json()["jobId"]
        deadline = time.monotonic() + JOB_TIMEOUT_MS / 1000
        while httpx.get(f"{server}/api/v1/jobs/{job}").json()["status"] != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.3)
        page.goto(f"{server}/?job={job}")
        page.wait_for_function("document.getElementById('after').naturalWidth > 0")
        panel = page.evaluate("getComputedStyle(document.getElementById('result-panel'))"
                              ".backgroundColor")
        assert panel == "rgb(31, 34, 39)", panel
        assert "job=" in page.url
        assert page.locator("#result-title").inner_text() == "Result — 05.jpg"
        shot(page, "dark")
        page.click("#theme")
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == \
            "rgb(246, 245, 242)"
        page.reload()  # the choice is remembered
        assert page.get_attribute("#theme", "aria-pressed") == "false"
        # Keyboard: skip link first, then the theme toggle and the drop zone; then the settings.
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.className") == "skip"
        reached = []
        for _ in range(16):
            page.keyboard.press("Tab")
            reached.append(page.evaluate("document.activeElement.name || document.activeElement.id"))
        assert reached[:2] == ["theme", "drop"], reached
        assert {"tool", "model", "strength", "fidelity", "upscale", "sensitivity", "bgUpscale",
                "faceUpsample", "onlyCenterFace", "seed"} <= set(reached), reached
        # Enter on the drop zone opens the (multiple-file) picker.
        page.evaluate("""() => { window.pickerOpened = false; document.getElementById('file')
            .addEventListener('click', (e) => { window.pickerOpened = true; e.preventDefault(); }); }""")
        page.focus("#drop")
        page.keyboard.press("Enter")
        assert page.evaluate("window.pickerOpened")
        assert page.get_attribute("#file", "multiple") is not None


def test_damage_mask_overlay_brush_and_rerun(server: str, browser, tmp_path: Path) -> None:
    photo = shared_path("testdata", "gray", "Einstein01.png")
    with Page(browser, server, viewport=DESKTOP) as page:
        page.goto(server + "/")
        page.check('input[name="tool"][value="restore-photo"]')
        page.uncheck('input[name="faceEnhancement"]')  # keep the job short
        page.set_input_files("#file", str(photo))
        page.click("#submit")
        wait_done(page)
        page.wait_for_selector("#mask-section:not([hidden])")
        # Steps that did not run say why; a step the user turned off is not listed.
        facts = page.locator("#facts").inner_text()
        assert "Skipped" in facts and "Denoise: already clean" in facts, facts
        assert "Face enhancement" not in facts and "Faces enhanced" in facts
        assert page.locator("#show-faces").is_hidden()  # no face boxes to show
        page.wait_for_function("state.mask !== null && document.getElementById('mask-canvas').width > 0")
        page.check("#mask-show")
        assert page.locator("#mask-canvas").is_visible()
        # Paint a horizontal stroke across the middle of the photo.
        box = page.locator("#mask-canvas").bounding_box()
        y = box["y"] + box["height"] * 0.5
        page.mouse.move(box["x"] + box["width"] * 0.2, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.8, y, steps=8)
        page.mouse.up()
        shot(page, "mask-brush")
        page.select_option("#mask-mode", "add")
        page.click("#mask-rerun")
        wait_done(page, n=2)
        assert page.locator("#queue li").nth(1).get_attribute("data-status") == "succeeded"
        job = page.evaluate("state.entries[1].jobId")
        mask_url = page.evaluate("state.entries[1].result.maskUrl")
    # The server used the painted stroke: the new mask is white along it.
    snap = httpx.get(f"{server}/api/v1/jobs/{job}").json()
    assert snap["status"] == "succeeded"
    mask = np.asarray(PILImage.open(io.BytesIO(httpx.get(server + mask_url).content)).convert("L"))
    h, w = mask.shape
    row = mask[h // 2 - 2: h // 2 + 3, int(w * 0.3): int(w * 0.7)]
    assert row.mean() > 200, row.mean()


def test_api_key_server_history_is_per_key_and_images_load(browser, tmp_path: Path) -> None:
    photo = shared_path("testdata", "photos", "04.jpg")
    home = tmp_path / "home"
    home.mkdir()
    manifest = write_tiny_manifest(tmp_path)
    with run_server(home, manifest, RESTORA_API_KEYS="key-one,key-two") as base:
        with httpx.Client(base_url=base, headers={"X-API-Key": "key-two"}) as other:
            r = other.post("/api/v1/tools/enhance-faces",
                           files={"file": ("other.jpg", photo.read_bytes(), "image/jpeg")})
            assert r.status_code == 202
        with Page(browser, base, viewport=DESKTOP) as page:
            page.goto(base + "/")
            page.wait_for_selector("#history-empty:not([hidden])")
            assert "API key" in page.locator("#history-empty").inner_text()
            page.click(".apikey summary")
            page.fill("#api-key", "key-one")
            page.locator("#api-key").dispatch_event("change")
            page.set_input_files("#file", str(photo))
            page.click("#submit")
            wait_done(page)
            assert page.locator("#queue li").get_attribute("data-status") == "succeeded"
            # Images and downloads carry the key (an <img> cannot send a header).
            page.wait_for_function("document.getElementById('after').naturalWidth > 0 && "
                                   "document.getElementById('before').naturalWidth > 0")
            assert "api_key=" in page.locator("#download").get_attribute("href")
            # History shows this key's job only, not key-two's.
            page.wait_for_function("document.querySelectorAll('#history li').length == 1")
            assert "04.jpg" in page.locator("#history li").inner_text()
            page.wait_for_function(
                "document.querySelector('#history li img.thumb').naturalWidth > 0")
            shot(page, "api-key")


def test_a_sepia_photo_says_its_faces_take_the_photos_tone(server: str, browser,
                                                           tmp_path: Path) -> None:
    toned = tmp_path / "sepia.png"
    gray = np.asarray(PILImage.open(shared_path("testdata", "photos", "00.jpg")).convert("L"),
                      np.float32)
    tint = np.array([1.08, 0.94, 0.76], np.float32)
    PILImage.fromarray(np.clip(np.rint(gray[..., None] * tint), 0, 255).astype(np.uint8)).save(toned)
    with Page(browser, server, viewport=DESKTOP) as page:
        page.goto(server + "/")
        page.set_input_files("#file", str(toned))
        page.click("#submit")
        wait_done(page)
        facts = page.locator("#facts").inner_text()
        assert "Monochrome" in facts and "faces take the photo's tone" in facts, facts
