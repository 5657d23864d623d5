"""Damage masks are visible and editable: ``result.mask``, ``--mask``/``--save-mask``, the API's
multipart ``mask`` + ``maskMode`` and ``maskUrl``. Real photos, a real server on 127.0.0.1."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image as PILImage

from conftest import shared_path
from restora.cli import main
from restora.config import Settings
from restora.errors import InvalidParameter
from restora.io import decode
from restora.models.runtime import Runtime
from restora.pipeline.photo import restore_photo
from restora.pipeline.photo.masks import load_user_mask, mask_png
from test_photo_stages import draw_scratches


def _photo(rel: str = "photos/06.png"):
    return decode(shared_path("testdata", *rel.split("/")))


def _blob_mask(h: int, w: int) -> np.ndarray:
    """A 30 x 40 px rectangle and a 5 px line: what a user paints over a stain."""
    m = np.zeros((h, w), bool)
    m[40:70, 60:100] = True
    cv2.line(m.view(np.uint8), (10, h - 20), (w - 10, h - 40), 1, 5)
    return m


def _near(user: np.ndarray) -> np.ndarray:
    """The user's mask plus its 1 px rim and the fill's feathered seam: all a repair may touch."""
    from restora.pipeline.photo.fill import FEATHER

    d = 2 * (1 + FEATHER) + 1
    return cv2.dilate(user.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE,
                                                                       (d, d))) > 0


def _png(arr: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(arr, mode).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def bare_runtime(restora_home: Path) -> Runtime:
    return Runtime(Settings(), device="cpu")


def test_replace_mask_repairs_exactly_it_and_result_mask_shows_it(bare_runtime: Runtime) -> None:
    img = _photo()
    user = _blob_mask(img.height, img.width)
    damaged = img.pixels.copy()
    damaged[user] = (250, 20, 250)  # paint the "damage" so a repair is visible
    result = restore_photo(img.with_pixels(damaged, img.alpha), runtime=bare_runtime,
                           face_enhancement=False, denoise=False, mask=user,
                           mask_mode="replace")
    m = result.mask
    assert m is not None and m.shape == user.shape and m.dtype == bool
    assert m[user].all()  # every pixel the user marked was repaired ...
    # ... and only a thin rim and the feathered seam around it (no detection in replace mode)
    assert not (m & ~_near(user)).any()
    assert result.reports["scratch-removal"]["detector"] == "user"
    out = result.image.pixels
    assert np.array_equal(out[~m], damaged[~m])  # everything outside the mask is untouched
    assert np.abs(out[user].astype(int) - (250, 20, 250)).max(axis=1).min() > 30  # magenta gone
    assert result.steps == ["scratch-removal"]


def test_add_mode_keeps_detection_and_adds_the_users_region(bare_runtime: Runtime) -> None:
    img = _photo("photos/02.png")
    damaged, truth = draw_scratches(img.pixels, 0)
    user = np.zeros(truth.shape, bool)
    user[100:130, 200:260] = True
    common = dict(runtime=bare_runtime, face_enhancement=False, denoise=False)
    added = restore_photo(img.with_pixels(damaged, img.alpha), mask=user, mask_mode="add",
                          **common)
    replaced = restore_photo(img.with_pixels(damaged, img.alpha), mask=user,
                             mask_mode="replace", **common)
    assert added.mask[user].all() and replaced.mask[user].all()
    found = (added.mask & truth & ~user).sum() / max(1, (truth & ~user).sum())
    print(f"add mode: detected share of the scratches {found:.2f}")
    assert found > 0.7  # detection still ran
    assert (replaced.mask & truth & ~user).sum() < 0.05 * truth.sum()  # replace: only the user's
    assert added.reports["scratch-removal"]["detector"] == "classical"
    assert added.reports["scratch-removal"]["userMask"]["mode"] == "add"


def test_user_mask_from_png_with_alpha_and_scaled_preview_mask() -> None:
    h, w = 60, 80
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[10:20, 10:30] = (255, 255, 255, 255)  # a painted stroke
    rgba[30:40, 10:30] = (255, 255, 255, 0)  # an erased stroke: white but transparent
    m = load_user_mask(_png(rgba, "RGBA"), h, w)
    assert m[10:20, 10:30].all() and not m[30:40].any() and m.sum() == 200
    # a mask painted on a half-size preview is scaled up to the photo
    small = np.zeros((h // 2, w // 2), np.uint8)
    small[5:10, 5:15] = 255
    big = load_user_mask(_png(small, "L"), h, w)
    assert big.shape == (h, w) and big[10:20, 10:30].all() and big.sum() == 200
    with pytest.raises(InvalidParameter) as err:
        load_user_mask(_png(np.zeros((60, 60), np.uint8), "L"), h, w)
    assert err.value.field == "mask" and "60 x 60" in err.value.message
    with pytest.raises(InvalidParameter) as err:
        load_user_mask(b"not an image", h, w)
    assert err.value.field == "mask"


def test_mask_png_is_white_where_repaired() -> None:
    m = np.zeros((5, 7), bool)
    m[1:3, 2:5] = True
    back = np.asarray(PILImage.open(io.BytesIO(mask_png(m))))
    assert back.dtype == np.uint8 and back.shape == (5, 7)
    assert set(np.unique(back)) == {0, 255} and np.array_equal(back == 255, m)


def test_clean_photo_result_still_has_a_mask(bare_runtime: Runtime) -> None:
    img = _photo("faces/0240.png")
    result = restore_photo(img, runtime=bare_runtime, face_enhancement=False)
    assert result.mask is not None and result.mask.shape == (img.height, img.width)
    assert result.mask.mean() < 0.003


# --- CLI ----------------------------------------------------------------------------------------

def test_cli_mask_and_save_mask(restora_home: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    img = _photo()
    src = tmp_path / "photo.png"
    src.write_bytes(shared_path("testdata", "photos", "06.png").read_bytes())
    user = _blob_mask(img.height, img.width)
    mask_file = tmp_path / "damage.png"
    mask_file.write_bytes(_png(np.where(user, 255, 0).astype(np.uint8), "L"))
    out = tmp_path / "out"
    rc = main(["restore-photo", str(src), "-o", str(out), "--mask", str(mask_file),
               "--mask-mode", "replace", "--save-mask", "--no-face-enhancement", "--json"])
    assert rc == 0
    record = json.loads(capsys.readouterr().out.splitlines()[-1])
    saved = out / "photo.mask.png"  # <stem>.mask.png beside photo_restored.png
    assert record["mask"] == str(saved) and saved.is_file()
    written = np.asarray(PILImage.open(saved)) == 255
    assert written[user].all() and not (written & ~_near(user)).any()
    # a bad mask mode or a mask for several inputs: one line, exit code != 0
    assert main(["restore-photo", str(src), "-o", str(out), "--mask", str(mask_file),
                 "--mask-mode", "subtract"]) != 0
    assert "--mask-mode" in capsys.readouterr().err  # the flag typed, not the API field
    other = tmp_path / "other.png"  # a second photo (the same file twice is one input)
    other.write_bytes(src.read_bytes())
    assert main(["restore-photo", str(src), str(other), "-o", str(out), "--mask",
                 str(mask_file)]) != 0
    assert "exactly one input" in capsys.readouterr().err
