"""Unicode file names against a real server: an upload named in any script keeps its name
through the stored input, the result (``<stem>_enhanced.png``), its percent-encoded URLs, the
download's ``Content-Disposition`` and the zip of results; what could hide, reorder or escape
(bidi overrides, zero-width characters, path parts) still never reaches a name."""

from __future__ import annotations

import io
import unicodedata
import zipfile
from pathlib import Path
from urllib.parse import quote, unquote

import httpx
import pytest

from restora.service.jobs import NAME_MAX_BYTES, is_valid_download_name, safe_filename
from service_helpers import (http_fixture_server, live_server, make_settings, png_bytes,
                             serve_files, service_tools, wait_for)
from store_fixtures import pg, store  # noqa: F401 - fixtures

NFD_OLFOTO = unicodedata.normalize("NFD", "Ölfoto.jpg")
LONG = "写真" * 50 + ".jpg"  # 304 bytes of UTF-8

#: upload name -> the stem its result is named after
CASES = {
    "写真.jpg": "写真",
    "Фото 1.jpg": "Фото_1",
    "φωτογραφία.jpg": "φωτογραφία",
    NFD_OLFOTO: "Ölfoto",  # NFC: one code point for Ö, as every other OS writes it
    "ab\u202egpj.exe.jpg": "ab_gpj.exe",  # a bidi override would show "abgpj.exe" as "abexe.jpg"
    "a\u200db.jpg": "a_b",  # zero-width joiner
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("home"), api_keys=["k"],
                             allow_loopback_fetch=True)
    with live_server(settings, tools=service_tools()) as srv:
        yield srv


@pytest.fixture
def c(server):
    with httpx.Client(base_url=server.url, timeout=30,
                      headers={"Authorization": "Bearer k"}) as client:
        yield client


def _finished(c: httpx.Client, job_id: str) -> dict:
    snap = wait_for(lambda: (s := c.get(f"/api/v1/jobs/{job_id}").json())["status"]
                    in ("succeeded", "failed", "canceled") and s)
    assert snap["status"] == "succeeded", snap
    return snap


def _submit(c: httpx.Client, name: str, seed: int = 0) -> dict:
    r = c.post("/api/v1/tools/enhance-faces",
               files={"file": (name, png_bytes(48, 32, seed=seed), "image/png")})
    assert r.status_code == 202, r.text
    return _finished(c, r.json()["jobId"])


def _disposition_name(header: str) -> str:
    """The name an RFC 6266 header gives: its UTF-8 ``filename*``, checking the ASCII fallback
    beside it, or the plain ``filename`` of an ASCII name."""
    parts = dict(p.strip().split("=", 1) for p in header.split(";")[1:])
    fallback = parts["filename"]
    assert fallback.startswith('"') and fallback.endswith('"') and fallback.isascii(), header
    assert fallback.strip('"') and not fallback.strip('"').startswith("."), header
    if "filename*" not in parts:
        assert fallback.strip('"').isascii(), header
        return fallback.strip('"')
    charset, _, encoded = parts["filename*"].partition("''")
    assert charset.upper() == "UTF-8", header
    return unquote(encoded, errors="strict")


@pytest.fixture(scope="module")
def jobs(server):
    """Every case (and the long name) submitted once: name -> finished snapshot."""
    with httpx.Client(base_url=server.url, timeout=30,
                      headers={"Authorization": "Bearer k"}) as c:
        return {name: _submit(c, name, seed=i) for i, name in enumerate([*CASES, LONG])}


@pytest.mark.parametrize("name", list(CASES))
def test_the_users_name_survives_into_the_result_and_its_download(c, server, jobs, name):
    snap = jobs[name]
    result = snap["result"]
    expected = f"{CASES[name]}_enhanced.png"
    assert result["filename"] == expected
    assert result["downloadUrl"] == f"/api/v1/download/{snap['jobId']}/{quote(expected)}"
    assert result["downloadUrl"].isascii()
    # stored under that name (NFC bytes), and nothing but it in output/
    out = server.manager.job_dir(snap["jobId"]) / "output"
    assert expected in {p.name for p in out.iterdir()}

    got = c.get(result["downloadUrl"])
    assert got.status_code == 200 and got.content[:8] == b"\x89PNG\r\n\x1a\n"
    disposition = got.headers["content-disposition"]
    assert disposition.startswith("inline;")
    assert _disposition_name(disposition) == expected
    head = c.head(result["downloadUrl"])
    assert head.status_code == 200 and head.headers["content-disposition"] == disposition


def test_the_ascii_fallback_drops_accents_and_names_a_bare_extension(c, jobs):
    olfoto, cjk = (c.get(jobs[n]["result"]["downloadUrl"]).headers["content-disposition"]
                   for n in (NFD_OLFOTO, "写真.jpg"))
    assert olfoto == ("inline; filename=\"Olfoto_enhanced.png\"; "
                      "filename*=UTF-8''%C3%96lfoto_enhanced.png")
    assert cjk == ("inline; filename=\"enhanced.png\"; "
                   "filename*=UTF-8''%E5%86%99%E7%9C%9F_enhanced.png")


def test_history_lists_the_unicode_input_name(c, jobs):
    listed = {j["jobId"]: j for j in c.get("/api/v1/jobs", params={"limit": 100}).json()["jobs"]}
    snap = jobs["Фото 1.jpg"]
    entry = listed[snap["jobId"]]
    assert entry["inputName"] == "Фото_1.jpg"
    assert c.get(entry["thumbnailUrl"]).status_code == 200
    assert c.get(f"/api/v1/jobs/{snap['jobId']}/input.webp").status_code == 200


def test_a_long_name_is_cut_in_bytes_between_characters_and_keeps_its_extension(c, jobs):
    snap = jobs[LONG]
    name = snap["result"]["filename"]
    stem = name.removesuffix("_enhanced.png")
    assert set(stem) == {"写", "真"} and LONG.startswith(stem)
    assert len(stem.encode()) <= NAME_MAX_BYTES - len(".jpg")
    assert len(name.encode()) < 160  # derived names (and their .tmp siblings) far under 255
    got = c.get(snap["result"]["downloadUrl"])
    assert got.status_code == 200 and _disposition_name(got.headers["content-disposition"]) == name
    listed = {j["jobId"]: j for j in c.get("/api/v1/jobs", params={"limit": 100}).json()["jobs"]}
    assert listed[snap["jobId"]]["inputName"] == f"{stem}.jpg"


def test_an_ascii_name_keeps_its_plain_header_and_url(c):
    snap = _submit(c, "plain photo.png")
    result = snap["result"]
    assert result["filename"] == "plain_photo_enhanced.png"
    assert result["downloadUrl"].endswith("/plain_photo_enhanced.png")
    got = c.get(result["downloadUrl"])
    assert got.headers["content-disposition"] == 'inline; filename="plain_photo_enhanced.png"'


def test_the_zip_keeps_unicode_member_names_flagged_utf8_and_never_one_name_twice(c, jobs):
    twin = _submit(c, "写真.png", seed=9)  # same stem as "写真.jpg": one result name
    ids = [jobs["写真.jpg"]["jobId"], twin["jobId"], jobs["Фото 1.jpg"]["jobId"],
           jobs[NFD_OLFOTO]["jobId"]]
    z = c.get("/api/v1/archive.zip", params={"jobs": ",".join(ids)})
    assert z.status_code == 200, z.text
    archive = zipfile.ZipFile(io.BytesIO(z.content))
    names = archive.namelist()
    assert names == ["写真_enhanced.png", "写真_enhanced-1.png", "Фото_1_enhanced.png",
                     "Ölfoto_enhanced.png"]
    for info in archive.infolist():
        assert info.flag_bits & 0x800, info.filename  # UTF-8 names, for every unzip tool
    first = c.get(jobs["写真.jpg"]["result"]["downloadUrl"]).content
    assert archive.read("写真_enhanced.png") == first


def test_names_differing_only_in_case_get_separate_zip_members(c):
    a, b = _submit(c, "Foto.png", seed=1), _submit(c, "foto.png", seed=2)
    z = c.get("/api/v1/archive.zip", params={"jobs": f"{a['jobId']},{b['jobId']}"})
    names = zipfile.ZipFile(io.BytesIO(z.content)).namelist()
    assert names == ["Foto_enhanced.png", "foto_enhanced-1.png"]


@pytest.mark.parametrize("path", [
    "..%2F..%2Fetc%2Fpasswd", "%2E%2E", "input%2F写真.jpg", "%E5%86%99%E7%9C%9F.jpg",
    "%E2%80%AEgnp.png", "%00x_enhanced.png", quote(unicodedata.normalize("NFD", "Ö")) + ".png",
])
def test_the_download_route_still_refuses_what_the_service_never_names(c, jobs, path):
    job_id = jobs["写真.jpg"]["jobId"]
    r = c.get(f"/api/v1/download/{job_id}/{path}")
    assert r.status_code == 404, (path, r.status_code)
    assert r.headers["content-type"] == "application/json"


def test_an_nfd_url_of_an_nfc_result_is_refused_and_the_nfc_one_answers(c, jobs):
    snap = jobs[NFD_OLFOTO]
    nfd = quote(unicodedata.normalize("NFD", snap["result"]["filename"]))
    assert c.get(f"/api/v1/download/{snap['jobId']}/{nfd}").status_code == 404
    assert c.get(snap["result"]["downloadUrl"]).status_code == 200


def test_codeformer_image_url_is_percent_encoded_and_resolves(c):
    r = c.post("/api/process", files=[("image", ("Фото.png", png_bytes(40, 30), "image/png"))])
    assert r.status_code == 200, r.text
    item = r.json()["results"][0]
    assert item["filename"] == "Фото_codeformer.png"
    assert item["image_url"].isascii() and quote(item["filename"]) in item["image_url"]
    assert c.get(item["image_url"]).status_code == 200


def test_tengrai_names_the_result_after_the_decoded_url_name(c):
    served = {"/%E5%86%99%E7%9C%9F.png": png_bytes(40, 30, seed=3)}
    with http_fixture_server(serve_files(served)) as base:
        r = c.post("/v2/artworks/face-refiner",
                   json={"imageUrl": f"{base}/%E5%86%99%E7%9C%9F.png", "seed": 1})
        assert r.status_code == 202, r.text
        art_id = r.json()["id"]
        done = wait_for(lambda: (a := c.get(f"/v2/artworks/{art_id}").json())["status"]
                        in ("succeeded", "failed") and a)
    assert done["status"] == "succeeded", done
    url = done["results"][0]
    assert url.isascii() and unquote(url.rsplit("/", 1)[1]).startswith("写真_")
    assert c.get(url).status_code == 200


@pytest.mark.parametrize("raw,stored", [
    ("写真.jpg", "写真.jpg"), (NFD_OLFOTO, "Ölfoto.jpg"), ("../../写真.jpg", "写真.jpg"),
    ("C:\\Users\\Анна\\фото.png", "фото.png"), ("x\u202egpj.exe", "x_gpj.exe"),
    ("a\u200bb\ufeff.png", "a_b_.png"), ("😀 smile.png", "smile.png"),
    (".hidden.png", "hidden.png"),
    (unicodedata.normalize("NFD", "사진.jpg"), "사진.jpg"), ("-rf.png", "rf.png"), ("😀.jpg", "image.jpg"), ("写真", "写真"), (".png", "image.png"),
    ("..jpg", "image.jpg"), ("a.b.jpg", "a.b.jpg"), ("a..b.png", "a.b.png"), ("..", "image"), ("\u0301x.png", "x.png"),
    ("ab\x00\x1b[31m.png", "ab_31m.png"), ("Ölfoto 写真.jpg", "Ölfoto_写真.jpg"),
])
def test_safe_filename_keeps_letters_digits_and_marks_of_any_script(raw, stored):
    assert safe_filename(raw) == stored
    assert is_valid_download_name(stored)


def test_every_name_the_service_derives_is_a_valid_download_name():
    for raw in [*CASES, LONG, "é" * 200 + ".jpeg", "x" * 500, "😀" * 80 + ".png"]:
        stem = Path(safe_filename(raw)).stem
        assert len(safe_filename(raw).encode()) <= NAME_MAX_BYTES
        for derived in (f"{stem}_enhanced.png", f"{stem}_mask.png", f"{stem}_codeformer.webp"):
            assert is_valid_download_name(derived), derived


@pytest.mark.parametrize("name", [
    "", ".", "..", "a/../b.png", "a/b.png", "a\\b.png", ".hidden.png", "-x.png", "_x.png",
    "a b.png", "a\u202eb.png", "a\u200db.png", "a\x00.png", unicodedata.normalize("NFD", "Ö.png"),
    "a%2Fb.png", "😀.png", "x" * 201,
])
def test_download_names_outside_what_the_service_writes_are_refused(name):
    assert not is_valid_download_name(name)


def test_the_longest_stored_names_round_trip_in_sqlite_and_postgresql(store):
    """``input_name`` is ``String(255)``: characters in PostgreSQL, unbounded in SQLite; a
    120-byte name is at most 120 characters, so nothing is cut on the way in or out."""
    names = [safe_filename(LONG), safe_filename("𝔉" * 60 + ".png"), safe_filename("a" * 400)]
    for i, name in enumerate(names):
        assert len(name.encode()) <= NAME_MAX_BYTES
        store.create(f"job-{i}", tool="enhance-faces", api="snapotter", params={},
                     input_name=name)
        assert store.get(f"job-{i}").input_name == name
