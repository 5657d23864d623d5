"""The web page under a demanding self-hoster's conditions, in Debian's Chromium against the real
server: a 360 px phone, invalid settings typed in, the server going away mid-job, a full queue,
a reload mid-batch and long sessions (object URLs released).

Servers and the browser are started as in ``test_web_page.py`` (tiny models, 127.0.0.1).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from conftest import shared_path
from test_web_page import DESKTOP, JOB_TIMEOUT_MS, Page, browser, run_server, server, shot, wait_done  # noqa: F401
from tiny_models import write_tiny_manifest

NARROW = {"width": 360, "height": 740}

# Every element reaching past the phone's width, by tag#id.class (empty when nothing spills).
# (Not innerWidth: a mobile browser widens its layout viewport to fit content that spills.)
SPILLS = """() => [...document.querySelectorAll('body *')]
    .filter((e) => e.getClientRects().length && e.getBoundingClientRect().right > 361
                   && !e.closest('.face-strip, .viewport'))
    .map((e) => `${e.tagName}#${e.id}.${e.className}`)"""


def test_a_360px_phone_never_scrolls_sideways(server: str, browser, tmp_path: Path) -> None:
    """Both tools' settings, the API key, a queue with a long non-ASCII name, the result and the
    history all fit a 360 px wide phone (the face strip and the zoomed picture scroll inside)."""
    long_name = tmp_path / "Ölfoto 写真 de la grand-mère, été 1962 (scan 600 dpi).jpg"
    long_name.write_bytes(shared_path("testdata", "photos", "01.jpg").read_bytes())
    with Page(browser, server, viewport=NARROW, is_mobile=True, has_touch=True) as page:
        page.goto(server + "/")
        page.click(".apikey summary")
        for tool in ("enhance-faces", "restore-photo"):
            page.check(f'input[name="tool"][value="{tool}"]')
            assert page.evaluate(SPILLS) == [], tool
            assert page.evaluate("document.documentElement.scrollWidth") <= 361
        page.check('input[name="tool"][value="enhance-faces"]')
        page.set_input_files("#file", str(long_name))
        page.click("#submit")
        wait_done(page)
        page.wait_for_selector("#result-panel:not([hidden])")
        page.wait_for_function("document.querySelectorAll('#history li').length >= 1")
        assert page.evaluate(SPILLS) == []
        assert page.evaluate("document.documentElement.scrollWidth") <= 361
        shot(page, "narrow-360")


def test_the_server_going_away_mid_job_is_said_and_the_page_recovers(browser,
                                                                    tmp_path: Path) -> None:
    """The server stops while the batch runs: the rows say the connection is lost (not a frozen
    percentage), and when it is back on the same address they pick up where they were: the
    waiting jobs, queued again by the restarted server, run to the end, except the one
    cancelled meanwhile, whose cancel is sent again once the server answers."""
    from test_web_page import _free_port

    photo = shared_path("testdata", "photos", "00.jpg")  # a group photo: the longest job
    home = tmp_path / "home"
    home.mkdir()
    manifest = write_tiny_manifest(tmp_path)
    port = _free_port()
    with Page(browser, "") as page:
        with run_server(home, manifest, port=port, crash=True) as base:
            page.goto(base + "/")
            # x2: jobs long enough that the page is back before the restarted server reaches
            # the last one (its cancel must get there first).
            page.select_option('#params-enhance-faces [name="upscale"]', "2")
            page.set_input_files("#file", [str(photo)] * 3)
            page.click("#submit")
            page.wait_for_function("state.entries.every((e) => e.jobId)", timeout=JOB_TIMEOUT_MS)
            # Killed while the server (one worker) has the last two jobs still waiting.
            waiting = "state.entries.slice(1).map((e) => e.jobId)"
            page.wait_for_function(f"""Promise.all({waiting}.map((id) => fetch('/api/v1/jobs/' + id)
                .then((r) => r.json()))).then((jobs) => jobs.every((j) => j.status == 'queued'))""")
        last = page.locator("#queue li").last
        page.wait_for_function(
            "document.querySelector('#queue li:last-child .status').textContent"
            ".includes('connection to the server lost')", timeout=30_000)
        page.wait_for_function("document.getElementById('announce').textContent"
                               ".includes('Lost the connection')")
        shot(page, "server-gone")
        # Cancelled while the server is away: the server must still hear of it.
        last.get_by_role("button", name="Cancel").click()
        assert last.get_attribute("data-status") == "cancelling"
        with run_server(home, manifest, port=port):
            wait_done(page, n=3)
            assert last.get_attribute("data-status") == "canceled", page.evaluate("state.entries.map((e) => [e.status, e.error])")
            # The others end as the server says: done, or (the one running when it was killed)
            # 'interrupted by restart'.
            for entry in page.evaluate("state.entries.slice(0, 2)"):
                assert entry["status"] == "succeeded" or (
                    entry["status"] == "failed" and "interrupted" in entry["error"]), entry
            assert "connection" not in page.locator("#queue").inner_text()


def test_a_busy_server_holds_the_batch_instead_of_failing_it(browser, tmp_path: Path) -> None:
    """The server refuses uploads for a while (429 ``too_many_bytes``: this client's byte budget
    on it, ``MAX_CLIENT_BYTES``, fits one photo; ``queue_full`` takes the same path): the refused
    files wait their turn and say why instead of failing, the page holds its uploads until
    Retry-After or until one of its jobs ends (no hammering), and the whole batch ends done."""
    photo = shared_path("testdata", "photos", "01.jpg")  # 9.1 KB
    home = tmp_path / "home"
    home.mkdir()
    with run_server(home, write_tiny_manifest(tmp_path), RESTORA_MAX_CLIENT_BYTES="16000") as base, \
            Page(browser, base) as page:
        page.goto(base + "/")
        answers: list[int] = []
        page.on("response", lambda r: answers.append(r.status)
                if r.request.method == "POST" and "/api/v1/tools/" in r.url else None)
        page.evaluate("""() => { window.seen = new Set(); new MutationObserver(() =>
            document.querySelectorAll('#queue .status').forEach((s) => window.seen.add(s.textContent)))
            .observe(document.getElementById('queue'), {subtree: true, childList: true,
                                                         characterData: true}); }""")
        page.set_input_files("#file", [str(photo)] * 4)
        page.click("#submit")  # three uploads at once: more bytes than the budget
        wait_done(page, n=4)
        statuses = page.evaluate("state.entries.map((e) => e.status)")
        assert statuses == ["succeeded"] * 4, page.locator("#queue").inner_text()
        assert 429 in answers, answers  # the situation under test happened
        assert answers.count(202) == 4 and answers.count(429) < 20, answers
        assert "waiting: the server is busy, trying again shortly" in page.evaluate("[...window.seen]")
        assert page.locator("#error-panel").is_hidden()


def test_a_reload_mid_batch_finds_the_queue_again_and_follows_it(server: str, browser) -> None:
    """Reloading while a batch runs: leaving asks first while files are still only in the page;
    after the reload the rows of the jobs the server has come back (finished as they ended,
    running ones followed live to the end), and Download all still gives the whole batch."""
    photos = [shared_path("testdata", "photos", n) for n in ("00.jpg", "01.jpg", "03.jpg",
                                                             "04.jpg", "05.jpg")]
    with Page(browser, server, viewport=DESKTOP) as page:
        page.goto(server + "/")
        page.set_input_files("#file", [str(p) for p in photos])
        page.click("#submit")  # three go up at once, two wait in the page
        page.wait_for_function("state.entries.filter((e) => e.jobId).length == 3")
        sent = page.evaluate("state.entries.filter((e) => e.jobId).map((e) => [e.jobId, e.name])")
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.type), d.accept()))
        page.reload()
        assert dialogs == ["beforeunload"]  # the two files not yet sent would be lost
        page.wait_for_function("state.entries.length == 3")
        assert page.evaluate("state.entries.map((e) => [e.jobId, e.name])") == sent
        assert page.locator("#progress-panel").is_visible()
        wait_done(page, n=3)
        assert page.evaluate("state.entries.map((e) => e.status)") == ["succeeded"] * 3
        page.wait_for_selector("#result-panel:not([hidden])")  # the first result opened
        with page.expect_download() as dl:
            page.click("#download-all")
        names = zipfile.ZipFile(dl.value.path()).namelist()
        assert sorted(names) == sorted(f"{Path(n).stem}_enhanced.png" for _, n in sent), names
        shot(page, "reload-mid-batch")
        # Nothing waits in the page any more: leaving does not ask.
        page.reload()
        assert dialogs == ["beforeunload"]
        page.wait_for_function("state.entries.length == 3")
        assert page.locator('#queue li[data-status="succeeded"]').count() == 3
        # Cleared rows stay cleared.
        page.click("#clear-finished")
        page.reload()
        page.wait_for_function("document.querySelectorAll('#history li').length >= 3")
        assert page.evaluate("state.entries.length") == 0
        assert page.locator("#progress-panel").is_hidden()


# Counts the page's live object URLs (made and not yet revoked) in window.liveUrls.
COUNT_OBJECT_URLS = """(() => {
    const live = new Set(); window.liveUrls = live;
    const make = URL.createObjectURL.bind(URL), revoke = URL.revokeObjectURL.bind(URL);
    URL.createObjectURL = (o) => { const u = make(o); live.add(u); return u; };
    URL.revokeObjectURL = (u) => { live.delete(u); revoke(u); };
})();"""


def test_object_urls_of_the_files_are_let_go_when_their_rows_go(server: str, browser,
                                                                tmp_path: Path) -> None:
    """Each local preview pins its file in the browser's memory: once its queue row is cleared
    and its result no longer shown, the page revokes it; a TIFF (shown from the server's
    preview) never gets one."""
    import tifffile

    tif = tmp_path / "scan.tif"
    tifffile.imwrite(tif, np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    photos = [shared_path("testdata", "photos", n) for n in ("01.jpg", "03.jpg")]
    with Page(browser, server, viewport=DESKTOP) as page:
        page.add_init_script(COUNT_OBJECT_URLS)
        page.goto(server + "/")
        page.set_input_files("#file", [str(p) for p in photos] + [str(tif)])
        page.click("#submit")
        assert page.evaluate("window.liveUrls.size") == 2  # not for the TIFF
        wait_done(page, n=3)
        # (Whichever ended first opened by itself: show a JPEG's, compared with the file itself.)
        page.locator("#queue li").first.get_by_role("button", name="View").click()
        page.wait_for_function("document.getElementById('before').src.startsWith('blob:') && "
                               "document.getElementById('before').naturalWidth > 0")
        shown = page.evaluate("document.getElementById('before').src")
        page.click("#clear-finished")
        # Only the result on show keeps its file, and its picture stays.
        assert page.evaluate("[...window.liveUrls]") == [shown]
        assert page.evaluate("document.getElementById('before').naturalWidth") > 0
        # A new choice closes that result: nothing is pinned any more.
        page.set_input_files("#file", str(photos[0]))
        assert page.evaluate("window.liveUrls.size") == 0
        # Deleting a job from the history lets its file go too.
        page.click("#submit")
        wait_done(page)
        job = page.evaluate("state.entries[0].jobId")
        assert page.evaluate("window.liveUrls.size") == 1
        page.wait_for_selector(f'#history li[data-job="{job}"]')
        page.locator(f'#history li[data-job="{job}"]').get_by_role("button", name="Delete").click()
        page.wait_for_function("window.liveUrls.size == 0")
        assert page.evaluate("state.entries.length") == 0 and page.locator("#queue li").count() == 0


def test_an_invalid_seed_is_said_at_its_field_and_nothing_is_sent(server: str, browser) -> None:
    """A seed the server would refuse (negative, a fraction) or that the browser cannot read
    ("e") stops the submission at the field, with a message screen readers get, instead of
    uploading every file to fail (or silently running with a random seed)."""
    from playwright.sync_api import expect

    photo = shared_path("testdata", "photos", "01.jpg")
    seed = '#params-enhance-faces [name="seed"]'
    with Page(browser, server, viewport=DESKTOP) as page:
        page.goto(server + "/")
        posts: list[str] = []
        page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
        page.set_input_files("#file", [str(photo), str(photo)])
        for typed in ("-5", "1.5", "e"):
            page.fill(seed, "")
            page.locator(seed).press_sequentially(typed)
            page.click("#submit")
            assert page.evaluate("document.activeElement.name") == "seed", typed
            assert page.get_attribute(seed, "aria-invalid") == "true", typed
            expect(page.locator(seed)).to_have_accessible_description(
                "The seed is a whole number, 0 or more (at most 9007199254740991), or empty for "
                "a random one.")
            assert page.locator("#seed-error").is_visible()
        assert posts == [] and page.locator("#queue li").count() == 0
        shot(page, "invalid-seed")
        # Corrected: the message goes, and the batch is sent with that seed.
        page.fill(seed, "7")
        assert page.get_attribute(seed, "aria-invalid") is None
        assert page.locator("#seed-error").is_hidden()
        page.click("#submit")
        assert page.evaluate("state.entries.map((e) => e.settings.seed)") == [7, 7]
        wait_done(page, n=2)
        assert page.evaluate("state.entries.map((e) => e.status)") == ["succeeded"] * 2


def test_every_setting_has_its_own_name_for_screen_readers(server: str, browser) -> None:
    """A label holding an ``<output>`` labelled the output (the first labelable element in it),
    so the sliders had no name at all; fields with a hint inside their label took the hint into
    their name. Each control's accessible name is its label alone (hints are descriptions)."""
    from playwright.sync_api import expect

    names = {
        "#strength": "Strength", "#fidelity-e": "Fidelity (CodeFormer)",
        "#sensitivity": "Sensitivity", "#denoiseStrength": "Denoise strength",
        "#fidelity": "Face fidelity", "#colorizeStrength": "Colorize strength",
        "#brush-size": "Brush size", "#reference": "Reference photos of the people (optional)",
        '#params-enhance-faces [name="orientation"]': "Faces the wrong way up",
        '#params-restore-photo [name="orientation"]': "Faces the wrong way up",
        "#model": "Model", '#params-enhance-faces [name="seed"]': "Seed (optional)",
        "#slider": "Before / after split", "#zoom": "Zoom", "#mask-mode": "Use as",
    }
    with Page(browser, server, viewport=DESKTOP) as page:
        page.goto(server + "/")
        # Hidden controls have no name: show the other tool's settings and the result panel.
        page.evaluate("""() => { for (const id of ['params-restore-photo', 'result-panel',
            'mask-section']) document.getElementById(id).hidden = false; }""")
        for selector, name in names.items():
            expect(page.locator(selector)).to_have_accessible_name(name)
        page.reload()
        expect(page.locator('#params-enhance-faces [name="orientation"]')).to_have_accessible_description(
            "Faces in a photo lying on its side are found and restored the right way up.")
        # The visible slider is reachable by its name; its value is still shown beside it.
        page.get_by_role("slider", name="Strength").focus()
        page.keyboard.press("ArrowLeft")
        assert page.locator('output[for="strength"]').inner_text() == "0.75"
        assert page.evaluate("collectSettings('enhance-faces').strength") == 0.75


def test_a_slow_upload_shows_how_far_it_got_and_cancel_stops_it(server: str, browser,
                                                                 tmp_path: Path) -> None:
    """Over a slow link (Chromium's network emulation: 400 KB/s up) a 2 MB photo's row counts
    its upload up ("uploading 37%") instead of a bare "uploading…", and Cancel stops the upload
    itself: no job is made from it."""
    from PIL import Image as PILImage

    noisy = tmp_path / "scan.png"
    PILImage.fromarray(np.random.default_rng(1).integers(0, 255, (820, 820, 3), np.uint8)).save(noisy)
    with Page(browser, server, viewport=DESKTOP) as page:
        page.goto(server + "/")
        before = page.evaluate("fetch('/api/v1/jobs?limit=100').then((r) => r.json())"
                               ".then((b) => b.jobs.map((j) => j.jobId))")
        cdp = page.context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.emulateNetworkConditions", {
            "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 400_000})
        page.set_input_files("#file", str(noisy))
        page.click("#submit")
        row = page.locator("#queue li").first
        page.wait_for_function(
            "/^uploading [1-9][0-9]?%$/.test(document.querySelector('#queue li .status').textContent)")
        shot(page, "uploading")
        row.get_by_role("button", name="Cancel").click()
        page.wait_for_function("document.querySelector('#queue li').dataset.status == 'canceled'")
        assert page.evaluate("state.entries[0].jobId") is None
        cdp.send("Network.emulateNetworkConditions", {
            "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        after = page.evaluate("fetch('/api/v1/jobs?limit=100').then((r) => r.json())"
                              ".then((b) => b.jobs.map((j) => j.jobId))")
        assert after == before  # the server made no job of the stopped upload


def test_download_all_past_the_servers_zip_limit_gives_several_zips(browser,
                                                                     tmp_path: Path) -> None:
    """A batch larger than one archive may bundle (archive_max_jobs, 2 here; 100 by default)
    comes down as several zips holding every result once, not as an error; each zip is
    downloaded by the browser from its URL, never held whole in the page's memory."""
    photos = [shared_path("testdata", "photos", n) for n in ("01.jpg", "03.jpg", "04.jpg")]
    home = tmp_path / "home"
    home.mkdir()
    with run_server(home, write_tiny_manifest(tmp_path), RESTORA_ARCHIVE_MAX_JOBS="2") as base, \
            Page(browser, base, viewport=DESKTOP) as page:
        page.goto(base + "/")
        page.set_input_files("#file", [str(p) for p in photos])
        page.click("#submit")
        wait_done(page, n=3)
        assert page.evaluate("state.entries.map((e) => e.status)") == ["succeeded"] * 3
        downloads = []
        page.on("download", lambda d: downloads.append(d))
        page.click("#download-all")
        deadline = 60_000
        while len(downloads) < 2 and deadline > 0:
            page.wait_for_timeout(200)
            deadline -= 200
        assert sorted(d.suggested_filename for d in downloads) == [
            "restora-results-1-of-2.zip", "restora-results-2-of-2.zip"]
        # fetched by the browser itself (streamed to disk), not built as a blob in the page
        assert all(d.url.startswith(base + "/api/v1/archive.zip?") for d in downloads)
        names = [n for d in downloads for n in zipfile.ZipFile(d.path()).namelist()]
        assert sorted(names) == ["01_enhanced.png", "03_enhanced.png", "04_enhanced.png"]
        assert page.locator("#error-panel").is_hidden()
