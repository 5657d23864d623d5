"""The web page under a demanding self-hoster's conditions, in Debian's Chromium against the real
server: a 360 px phone, invalid settings typed in, the server going away mid-job, a full queue,
a reload mid-batch and long sessions (object URLs released).

Servers and the browser are started as in ``test_web_page.py`` (tiny models, 127.0.0.1).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import shared_path
from test_web_page import JOB_TIMEOUT_MS, Page, browser, run_server, server, shot, wait_done  # noqa: F401
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
