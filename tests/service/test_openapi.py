"""The OpenAPI document describes the real bodies and answers: no phantom 422."""

from __future__ import annotations

import httpx
import pytest

from service_helpers import live_server, make_settings


@pytest.fixture(scope="module")
def doc(tmp_path_factory):
    with live_server(make_settings(tmp_path_factory.mktemp("home"))) as srv:
        yield httpx.get(srv.url + "/openapi.json").json()


def test_no_phantom_422(doc):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if path == "/api/process":
                continue  # a corrupt image really is 422 corrupt_image there
            assert "422" not in op["responses"], (path, method)
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_real_request_bodies(doc):
    paths = doc["paths"]
    tengrai = paths["/v2/artworks/face-refiner"]["post"]["requestBody"]["content"]
    ref = tengrai["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    schema = doc["components"]["schemas"][ref]
    assert schema["required"] == ["imageUrl"]
    assert {"imageUrl", "model", "denoising", "seed", "webhook", "outputFormat"} <= set(
        schema["properties"])
    topaz = paths["/api/v1/tools/face-recovery"]["post"]["requestBody"]["content"]
    props = topaz["multipart/form-data"]["schema"]["properties"]
    assert props["image"]["format"] == "binary"
    assert {"strength", "grain_model", "iai_packed_metadata", "reference_uri", "input_width",
            "output_width"} <= set(props)
    assert props["strength"]["default"] == 1.0
    cf = paths["/api/process"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in cf and "image_base64" in cf["application/json"]["schema"][
        "properties"]
    snap = paths["/api/v1/tools/enhance-faces"]["post"]["requestBody"]["content"]
    assert "file" in snap["multipart/form-data"]["schema"].get("properties", {}) or \
        "$ref" in snap["multipart/form-data"]["schema"]


def test_real_status_codes_with_each_style_error_body(doc):
    paths = doc["paths"]
    for path, style in (("/api/v1/tools/enhance-faces", "SnapOtterError"),
                        ("/api/v1/tools/restore-photo", "SnapOtterError"),
                        ("/api/v1/tools/face-recovery", "TopazError"),
                        ("/api/process", "CodeFormerError")):
        responses = paths[path]["post"]["responses"]
        for code in ("400", "401", "413", "415", "429"):
            assert code in responses, (path, code)
            assert responses[code]["content"]["application/json"]["schema"]["$ref"].endswith(
                style)
    assert "202" in paths["/api/v1/tools/enhance-faces"]["post"]["responses"]
    assert "200" not in paths["/api/v1/tools/enhance-faces"]["post"]["responses"]
    art = paths["/v2/artworks/face-refiner"]["post"]["responses"]
    assert "202" in art and "400" in art and art["400"]["content"]["application/json"][
        "schema"]["$ref"].endswith("TengraiError")
    assert "404" in paths["/api/v1/jobs/{job_id}"]["get"]["responses"]
    results = doc["components"]["schemas"]["Artwork"]["properties"]["results"]
    assert results["items"]["type"] == "string"


def test_file_routes_and_faults_are_described(doc):
    paths = doc["paths"]
    for path in ("/api/v1/download/{job_id}/{filename}", "/api/v1/jobs/{job_id}/input.webp"):
        responses = paths[path]["get"]["responses"]
        assert {"200", "206", "304", "400", "404", "416", "500"} <= set(responses), path
        assert "content" not in responses["304"]  # no body
    assert {"409", "504"} <= set(paths["/api/process"]["post"]["responses"])
    assert "409" in paths["/api/v1/jobs/{job_id}/retry"]["post"]["responses"]
    for path, item in paths.items():  # every API route may meet a fault of the server
        for method, op in item.items():
            if path.startswith(("/api/v1/", "/v2/")) or path == "/api/process":
                assert "500" in op["responses"], (path, method)
