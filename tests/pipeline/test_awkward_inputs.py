"""Awkward but valid inputs through both pipelines, with the real tiny networks.

Degenerate sizes (1 x 1, thin strips), flat and noise images, 16-bit and alpha, faces cut by the
border, user masks and client boxes at their limits: each must either work (an image without
faces comes back unchanged, with a reason) or raise a typed :class:`RestoraError`, never a
numpy/OpenCV/torch exception, and never give NaN or out-of-range pixels.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import shared_path
from restora.config import Settings
from restora.errors import ImageTooLarge, InvalidParameter
from restora.io import Image, decode
from restora.models.runtime import Runtime
from restora.pipeline.enhance import enhance_faces
from restora.pipeline.photo import restore_photo
from tiny_models import tiny_photo_repair_entries, write_tiny_manifest


@pytest.fixture(scope="module")
def repair_runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    """The tiny scratch U-Net and LaMa, no face model."""
    tmp = tmp_path_factory.mktemp("repair")
    manifest = write_tiny_manifest(tmp, include=set(), extra=tiny_photo_repair_entries())
    return Runtime(Settings(models=manifest, home=tmp / "home"), device="cpu")


@pytest.fixture(scope="module")
def face_runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    """The tiny face networks and both real detectors."""
    tmp = tmp_path_factory.mktemp("faces")
    return Runtime(Settings(models=write_tiny_manifest(tmp), home=tmp / "home"), device="cpu")


@pytest.fixture
def bare(tmp_path: Path) -> Runtime:
    """No model at all (the checks come first)."""
    return Runtime(Settings(models=write_tiny_manifest(tmp_path, include=set()),
                            home=tmp_path / "home"), device="cpu")


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --- restore-photo: the learned repair networks on degenerate sizes ---------------------------

@pytest.mark.parametrize("shape", [(8, 2000), (2000, 8)])
def test_scratch_unet_runs_on_strips_thinner_than_its_depth(repair_runtime: Runtime,
                                                            shape: tuple[int, int]) -> None:
    """A strip over 128:1 was bounded to a 16 px network side; the U-Net halves it four times
    and its reflect padding then failed on one row (a torch RuntimeError)."""
    px = noise(*shape)
    result = restore_photo(Image(px), runtime=repair_runtime, face_enhancement=False,
                           denoise=False)
    report = result.reports["scratch-removal"]
    assert report["detector"] == "learned" and min(report["networkSize"]) >= 32
    assert result.image.pixels.shape == px.shape and result.mask.shape == shape


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (2, 2), (7, 7), (8, 3000)])
def test_lama_fills_images_smaller_than_its_downsampling(repair_runtime: Runtime,
                                                         shape: tuple[int, int]) -> None:
    """A whole-image user mask on an image under 16 px on a side: LaMa's three stride-2 steps
    left one row, which its reflect padding refused (a torch RuntimeError)."""
    px = noise(*shape, seed=1)
    result = restore_photo(Image(px), runtime=repair_runtime, face_enhancement=False,
                           denoise=False, mask=np.ones(shape, bool))
    fill = result.reports["scratch-removal"]["fill"]
    assert fill["wideFill"] == "lama" or fill["thinPixels"] > 0
    assert result.image.pixels.shape == px.shape and result.mask.all()


# --- an Image handed in directly meets the decoder's contract ---------------------------------

BAD_IMAGES = {
    "grey 2-D": Image(np.zeros((10, 10), np.uint8)),
    "one channel": Image(np.zeros((10, 10, 1), np.uint8)),
    "four channels": Image(np.zeros((10, 10, 4), np.uint8)),
    "float": Image(np.zeros((10, 10, 3), np.float32)),
    "int32": Image(np.zeros((10, 10, 3), np.int32)),
    "empty": Image(np.zeros((0, 0, 3), np.uint8)),
    "alpha of another size": Image(np.zeros((10, 10, 3), np.uint8), np.zeros((5, 5), np.uint8)),
    "alpha of another depth": Image(np.zeros((10, 10, 3), np.uint8),
                                    np.zeros((10, 10), np.uint16)),
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
@pytest.mark.parametrize("pipeline", ["enhance", "photo"])
def test_an_image_outside_the_contract_is_invalid_parameter(bare: Runtime, name: str,
                                                            pipeline: str) -> None:
    """These failed inside OpenCV/numpy (ValueError, cv2.error, ZeroDivisionError) or came
    back as float or int32 pixels that no encoder takes."""
    run = enhance_faces if pipeline == "enhance" else restore_photo
    with pytest.raises(InvalidParameter) as err:
        run(BAD_IMAGES[name], runtime=bare)
    assert err.value.field == "image"


@pytest.mark.parametrize("pipeline", ["enhance", "photo"])
def test_an_image_handed_in_obeys_the_pixel_limit(tmp_path: Path, pipeline: str) -> None:
    """Exactly at ``max_pixels`` works; one pixel over is ImageTooLarge, as for a file (an
    Image skipped the limit)."""
    manifest = write_tiny_manifest(tmp_path, include={"yunet-2026may"})
    rt = Runtime(Settings(models=manifest, home=tmp_path / "home", max_pixels=1000),
                 device="cpu")
    run = enhance_faces if pipeline == "enhance" else restore_photo
    at = Image(np.full((10, 100, 3), 90, np.uint8))
    assert np.array_equal(run(at, runtime=rt).image.pixels, at.pixels)
    with pytest.raises(ImageTooLarge):
        run(Image(np.full((1, 1001, 3), 90, np.uint8)), runtime=rt)


# --- user masks ------------------------------------------------------------------------------

def _with_nan() -> np.ndarray:
    mask = np.zeros((30, 40), np.float32)
    mask[5:9, 5:30] = 1.0
    mask[20, 20] = np.nan
    return mask


@pytest.mark.parametrize("mask", [np.zeros((0, 0), bool), np.zeros((0, 40), np.uint8),
                                  np.full((30, 40), None, object),
                                  Image(np.zeros((30, 40, 4), np.uint8)),
                                  np.full((30, 40), np.nan), _with_nan(),
                                  np.full((30, 40, 3), np.inf, np.float32),
                                  np.full((15, 20), -np.inf)],
                         ids=["0x0", "0 rows", "object", "4-channel Image", "all NaN",
                              "one NaN", "inf 3-channel", "-inf preview size"])
def test_an_unusable_mask_is_invalid_parameter(bare: Runtime, mask: object) -> None:
    """An empty array divided by zero in the aspect check, an object array and an Image of four
    channels failed in numpy; a float array with NaN read as "no damage" there (NaN >= 0.5 is
    False) and infinity as damage; each is now an InvalidParameter on ``mask``."""
    with pytest.raises(InvalidParameter) as err:
        restore_photo(Image(noise(30, 40)), runtime=bare, mask=mask, face_enhancement=False)
    assert err.value.field == "mask"


@pytest.mark.parametrize("kind", ["all white", "all black", "preview size"])
@pytest.mark.parametrize("mode", ["replace", "add"])
def test_whole_and_empty_masks_just_work(bare: Runtime, kind: str, mode: str) -> None:
    px = noise(60, 80, seed=2)
    mask = {"all white": np.ones((60, 80), bool), "all black": np.zeros((60, 80), np.uint8),
            "preview size": np.full((15, 20), 255, np.uint8)}[kind]
    result = restore_photo(Image(px), runtime=bare, mask=mask, mask_mode=mode,
                           face_enhancement=False, denoise=False)
    out = result.image.pixels
    assert out.shape == px.shape and out.dtype == np.uint8
    if kind in ("all white", "preview size"):
        assert result.mask.all() and "scratch-removal" in result.steps
    elif mode == "replace":
        assert not result.mask.any() and np.array_equal(out, px)


# --- colour left under fully transparent pixels ----------------------------------------------

def grey_with_hidden_colour(name: str = "faces/0342.png") -> Image:
    """A grey photo whose right third is fully transparent over saturated colour noise (what an
    editor leaves under erased pixels)."""
    src = decode(shared_path("testdata", *name.split("/")))
    grey = np.repeat(cv2.cvtColor(src.pixels, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    alpha = np.full(grey.shape[:2], 255, np.uint8)
    x = 2 * grey.shape[1] // 3
    alpha[:, x:] = 0
    grey[:, x:] = noise(grey.shape[0], grey.shape[1] - x, seed=5)
    return Image(grey, alpha)


def test_colour_under_transparency_does_not_make_a_grey_photo_colour(bare: Runtime) -> None:
    """The monochrome test counted the invisible pixels: a grey photo with colour left under
    its transparent part was a colour photo (colorize would skip it, faces kept their colour)."""
    result = restore_photo(grey_with_hidden_colour(), runtime=bare, face_enhancement=False)
    assert result.is_grayscale


def test_faces_of_a_grey_photo_stay_grey_whatever_lies_under_transparency(
        face_runtime: Runtime) -> None:
    img = grey_with_hidden_colour()
    result = enhance_faces(img, runtime=face_runtime, model="gfpgan", seed=0)
    assert result.faces_detected >= 1 and result.tone == "gray"
    out, shown = result.image.pixels, img.alpha > 0
    assert np.array_equal(out[shown][:, 0], out[shown][:, 1])
    assert np.array_equal(out[shown][:, 1], out[shown][:, 2])
    # the face step of restore_photo keeps them grey too
    photo = restore_photo(img, runtime=face_runtime)
    assert "face-enhancement" in photo.steps
    px = photo.image.pixels[shown]
    assert np.array_equal(px[:, 0], px[:, 1]) and np.array_equal(px[:, 1], px[:, 2])


# --- what already worked, kept cheaply ------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (7, 7), (8, 3000)])
@pytest.mark.parametrize("upscale,extra", [(1, {}), (2, {"bg_upscale": True,
                                                          "face_upsample": True})])
def test_degenerate_sizes_come_back_without_faces(face_runtime: Runtime, shape: tuple[int, int],
                                                  upscale: int, extra: dict) -> None:
    px = noise(*shape, seed=3)
    result = enhance_faces(Image(px), runtime=face_runtime, upscale=upscale,
                           orientation="search", **extra)
    out = result.image.pixels
    assert result.faces_detected == 0 and result.reason == "no faces detected"
    assert out.shape == (shape[0] * upscale, shape[1] * upscale, 3) and out.dtype == np.uint8
    if upscale == 1 and not extra:
        assert np.array_equal(out, px)


@pytest.mark.parametrize("cut", ["left", "top", "corner", "inside"])
def test_faces_cut_by_the_border_are_restored_within_the_image(face_runtime: Runtime,
                                                               cut: str) -> None:
    face = cv2.resize(decode(shared_path("testdata", "faces", "0143.png")).pixels, (128, 128),
                      interpolation=cv2.INTER_AREA)
    px = {"left": face[:, 40:], "top": face[40:], "corner": face[50:, 50:],
          "inside": face[150 // 4:350 // 4, 150 // 4:350 // 4]}[cut]
    px = np.ascontiguousarray(px)
    result = enhance_faces(Image(px), runtime=face_runtime, model="codeformer", upscale=2,
                           face_upsample=True)
    out = result.image.pixels
    assert out.shape == (px.shape[0] * 2, px.shape[1] * 2, 3)
    for f in result.faces:
        assert 0 <= f.x and 0 <= f.y and f.x + f.w <= px.shape[1] and f.y + f.h <= px.shape[0]


@pytest.mark.parametrize("box,ok", [
    ({"x": 10_000, "y": 0, "w": 50, "h": 50}, False),  # outside
    ({"x": 10, "y": 10, "w": 0.5, "h": 0.5}, False),  # under a pixel
    ({"x": 0, "y": 0, "w": float("inf"), "h": 5}, False),
    ({"x": 0, "y": 0, "w": 1e300, "h": 1e300}, True),  # the whole image
    ({"x": 399, "y": 224, "w": 1, "h": 1}, True),  # the last pixel: too small, reported
    ({"x": 0, "y": 100, "w": 400, "h": 1}, True),  # one row: too small, reported
])
def test_client_boxes_at_their_limits(face_runtime: Runtime, box: dict, ok: bool) -> None:
    img = decode(shared_path("testdata", "photos", "03.jpg"))  # 400 x 225
    if not ok:
        with pytest.raises(InvalidParameter):
            enhance_faces(img, runtime=face_runtime, model="gfpgan", faces=[box])
        return
    result = enhance_faces(img, runtime=face_runtime, model="gfpgan", faces=[box], upscale=2)
    assert result.faces_detected == 1
    assert result.image.pixels.shape == (450, 800, 3)
    assert result.faces[0].restored == (box["w"] > 1 and box["h"] > 1)


def test_a_client_box_of_11_px_is_restored(face_runtime: Runtime) -> None:
    img = decode(shared_path("testdata", "photos", "03.jpg"))
    result = enhance_faces(img, runtime=face_runtime, model="gfpgan",
                           faces=[{"x": 300, "y": 150, "w": 11, "h": 11}])
    assert result.faces[0].restored and not any("too small" in w for w in result.warnings)


TINY_BOXES = {"1 x 1": {"x": 10, "y": 10, "w": 1, "h": 1},
              "10 x 10": {"x": 300, "y": 150, "w": 10, "h": 10},  # eyes 4.6 px apart
              "one row": {"x": 0, "y": 200, "w": 400, "h": 1},  # wide eyes, no face under them
              "4 rows": {"x": 0, "y": 200, "w": 400, "h": 4}}


@pytest.mark.parametrize("name", list(TINY_BOXES))
def test_a_client_box_too_small_is_reported_not_restored(face_runtime: Runtime,
                                                         name: str) -> None:
    """A 1 x 1 client box was "restored": its crop enlarged to 512 px from nothing and pasted
    back. Client boxes now meet the detector's minimum (eyes 5 px apart, and the mouth 3.75 px
    from them: a box of about 11 x 11 px): such a box stays in ``faces``, not restored, with
    its reason and a warning; the other boxes are restored and the tiny box's pixels are left
    exactly as they were."""
    img = decode(shared_path("testdata", "photos", "03.jpg"))  # 400 x 225, one face
    face = enhance_faces(img, runtime=face_runtime, model="gfpgan", seed=0).faces[0]
    real = {"x": face.x, "y": face.y, "w": face.w, "h": face.h}
    tiny = TINY_BOXES[name]
    result = enhance_faces(img, runtime=face_runtime, model="gfpgan", seed=0,
                           faces=[tiny, real])
    assert result.faces_detected == 2
    restored = [f for f in result.faces if f.restored]
    skipped = [f for f in result.faces if not f.restored]
    assert len(restored) == 1 and len(skipped) == 1
    assert (skipped[0].x, skipped[0].y) == (tiny["x"], tiny["y"])
    assert "face too small" in skipped[0].identity.reason
    assert skipped[0].to_dict()["restoration"] is None
    assert any("1 supplied face box(es) not restored: too small" in w for w in result.warnings)
    out = result.image.pixels
    assert not np.array_equal(out, img.pixels)  # the real face was restored
    # the tiny box lies away from the real face: its pixels are untouched
    ys, xs = slice(tiny["y"], tiny["y"] + tiny["h"]), slice(tiny["x"], tiny["x"] + tiny["w"])
    assert np.array_equal(out[ys, xs], img.pixels[ys, xs])


def test_only_tiny_client_boxes_leave_the_image_as_it_was(face_runtime: Runtime) -> None:
    img = decode(shared_path("testdata", "photos", "03.jpg"))
    result = enhance_faces(img, runtime=face_runtime, model="gfpgan",
                           faces=[TINY_BOXES["1 x 1"], TINY_BOXES["one row"]])
    assert result.faces_detected == 2 and not any(f.restored for f in result.faces)
    assert "every supplied face box is too small" in result.reason
    assert result.model is None and np.array_equal(result.image.pixels, img.pixels)
    assert result.to_dict()["faces"][0]["identity"]["reason"].startswith("not restored: face")


@pytest.mark.parametrize("stage", ["decode", "detect", "align", "load", "restore", "upscale",
                                   "paste"])
def test_cancel_from_a_progress_callback_at_each_stage(face_runtime: Runtime,
                                                       stage: str) -> None:
    import threading

    from restora.errors import Cancelled

    stop = threading.Event()

    def progress(name: str, _pct: float) -> None:
        if name == stage:
            stop.set()

    with pytest.raises(Cancelled):
        enhance_faces(decode(shared_path("testdata", "photos", "03.jpg")), runtime=face_runtime,
                      model="gfpgan", upscale=2, progress=progress, cancel=stop)


# --- restore-photo's analyses and networks do not see what transparency hides ----------------

def einstein_with_hidden(colour: bool) -> Image:
    """The grey Einstein scan, fully transparent on its right two thirds, on every 40th row and
    on two columns; under them random colour and a white line (``colour``), or the scan's own
    grey. Only what lies under alpha 0 differs between the two."""
    src = decode(shared_path("testdata", "gray", "Einstein01.png"))
    px = np.repeat(cv2.cvtColor(src.pixels, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    h, w = px.shape[:2]
    alpha = np.full((h, w), 255, np.uint8)
    alpha[:, w // 3:] = 0
    alpha[10:h - 10:40] = 0
    alpha[:, 20:22] = 0
    if colour:
        px[alpha == 0] = noise(1, int((alpha == 0).sum()), seed=7)[0]
        px[:, 20:22] = 255  # a "scratch" nobody sees
    return Image(px, alpha)


def test_the_noise_estimate_ignores_colour_under_transparency() -> None:
    """Colour noise under the transparent part read as 47 levels of luma noise (0.25 without
    it), so a clean scan was denoised; now only the shown pixels are measured."""
    from restora.pipeline.paste import fill_hidden, hidden
    from restora.pipeline.photo.denoise import estimate_noise

    est = []
    for colour in (True, False):
        img = einstein_with_hidden(colour)
        unseen = hidden(img.alpha)
        est.append(estimate_noise(fill_hidden(img.pixels, unseen), exclude=unseen))
    assert est[0] == est[1] and est[0].is_clean
    whole = estimate_noise(decode(shared_path("testdata", "gray", "Einstein01.png")).pixels)
    assert abs(est[0].luma - whole.luma) < 0.5


@pytest.mark.parametrize("detector", ["classical", "learned"])
def test_damage_found_does_not_depend_on_what_transparency_hides(
        bare: Runtime, repair_runtime: Runtime, detector: str) -> None:
    """The classical detector took the hidden white line for a scratch reaching into the shown
    rows (22 shown pixels repaired; none with grey under it); the U-Net's verdicts on shown
    pixels moved too. Now both see a fill from the shown pixels: same verdicts, same report,
    same result, and the hidden pixels come back as they were (nothing there is repaired)."""
    runtime = bare if detector == "classical" else repair_runtime
    runs = []
    for colour in (True, False):
        img = einstein_with_hidden(colour)
        runs.append((img, restore_photo(img, runtime=runtime, face_enhancement=False)))
    (img, a), (_, b) = runs
    assert a.reports["scratch-removal"].get("detector", detector) == detector
    assert np.array_equal(a.mask, b.mask) and not a.mask[img.alpha == 0].any()
    assert a.reports["analysis"] == b.reports["analysis"]
    assert a.reports["denoise"] == b.reports["denoise"] and "denoise" not in a.steps
    assert a.scratch_coverage == b.scratch_coverage and a.steps == b.steps
    shown = img.alpha > 0
    assert np.array_equal(a.image.pixels[shown], b.image.pixels[shown])
    assert np.array_equal(a.image.pixels[~shown], img.pixels[~shown])
    assert np.array_equal(a.image.alpha, img.alpha)


def test_colorization_does_not_see_colour_under_transparency(tmp_path: Path) -> None:
    """DDColor's S x S input blended the hidden colour into the shown pixels' neighbourhoods
    (and so into the colours they were given)."""
    from tiny_models import tiny_ddcolor_entry

    manifest = write_tiny_manifest(tmp_path, include=set(),
                                   extra=[tiny_ddcolor_entry(input_size=64)])
    rt = Runtime(Settings(models=manifest, home=tmp_path / "home"), device="cpu")
    out = []
    for colour in (True, False):
        img = einstein_with_hidden(colour)
        result = restore_photo(img, runtime=rt, face_enhancement=False, colorize=True,
                               scratch_removal=False)
        assert result.colorized and result.is_grayscale
        out.append(result.image.pixels[img.alpha > 0])
    assert np.array_equal(out[0], out[1])
    # the colorize step on its own too
    from restora.pipeline.colorize import colorize

    direct = [colorize(einstein_with_hidden(c), runtime=rt)[0].pixels for c in (True, False)]
    shown = einstein_with_hidden(False).alpha > 0
    assert np.array_equal(direct[0][shown], direct[1][shown])


# --- the library API given the wrong kind of argument ------------------------------------------

@pytest.mark.parametrize("stage", ["decode", "analyse", "load", "scratch-removal", "denoise",
                                   "face-enhancement", "colorize"])
def test_cancel_from_a_progress_callback_at_each_photo_stage(tmp_path: Path,
                                                            stage: str) -> None:
    """Cancelling as the colorize step began (a colour photo: it only says why it skips) still
    returned a result; every stage now checks again as it ends."""
    import threading

    from restora.errors import Cancelled
    from tiny_models import tiny_ddcolor_entry

    manifest = write_tiny_manifest(tmp_path, include=set(),
                                   extra=[tiny_ddcolor_entry(input_size=64)])
    rt = Runtime(Settings(models=manifest, home=tmp_path / "home"), device="cpu")

    stop = threading.Event()

    def progress(name: str, _pct: float) -> None:
        if name == stage:
            stop.set()

    with pytest.raises(Cancelled):
        restore_photo(Image(noise(40, 60, seed=4)), runtime=rt, progress=progress,
                      cancel=stop, mask=np.ones((40, 60), bool), colorize=True)


@pytest.mark.parametrize("pipeline", ["enhance", "photo"])
def test_options_as_a_dict(face_runtime: Runtime, pipeline: str) -> None:
    """``options`` given as a plain dict (what a job stores) failed with AttributeError; it is
    now taken as the options (either spelling), keyword arguments still override it, and
    another type is InvalidParameter on ``options``."""
    px = Image(np.full((20, 30, 3), 90, np.uint8))
    if pipeline == "enhance":
        result = enhance_faces(px, {"onlyCenterFace": True, "strength": 0.3},
                               runtime=face_runtime, strength=0.0)
        assert result.reason == "no faces detected"
        with pytest.raises(InvalidParameter) as err:
            enhance_faces(px, {"strength": 2}, runtime=face_runtime)
        assert err.value.field == "strength"
    else:
        result = restore_photo(px, {"faceEnhancement": False, "denoise": True},
                               runtime=face_runtime, denoise=False, scratch_removal=False)
        assert result.reports["denoise"]["reason"] == "turned off"
        assert result.reports["face-enhancement"]["reason"] == "turned off"
    run = enhance_faces if pipeline == "enhance" else restore_photo
    with pytest.raises(InvalidParameter) as err:
        run(px, ["strength", 1], runtime=face_runtime)
    assert err.value.field == "options"


def test_a_reference_of_the_wrong_type_is_invalid_parameter(face_runtime: Runtime) -> None:
    """``reference=123`` failed with "TypeError: 'int' object is not iterable"."""
    with pytest.raises(InvalidParameter) as err:
        enhance_faces(Image(np.full((20, 30, 3), 90, np.uint8)), runtime=face_runtime,
                      reference=123)
    assert err.value.field == "reference"


def test_an_empty_restorer_ladder_is_invalid_parameter(face_runtime: Runtime) -> None:
    """``restorer=[]`` reached the ladder's choice with no candidate: "ValueError: min() arg
    is an empty sequence" once a face was found."""
    with pytest.raises(InvalidParameter) as err:
        enhance_faces(decode(shared_path("testdata", "photos", "03.jpg")),
                      runtime=face_runtime, restorer=[])
    assert err.value.field == "restorer"


# --- enhance-faces and what transparency hides -------------------------------------------------

def photo_half_hidden(seed: int | None) -> Image:
    """Photo 03 (one face, x 102-204) fully transparent from x = 160 on, through the face:
    under it the photo itself (``seed`` None) or colour noise."""
    img = decode(shared_path("testdata", "photos", "03.jpg"))
    px = img.pixels.copy()
    alpha = np.full(px.shape[:2], 255, np.uint8)
    alpha[:, 160:] = 0
    if seed is not None:
        px[:, 160:] = noise(px.shape[0], px.shape[1] - 160, seed=seed)
    return Image(px, alpha)


@pytest.mark.parametrize("upscale", [1, 2])
def test_a_face_at_the_alpha_edge_does_not_depend_on_what_transparency_hides(
        face_runtime: Runtime, upscale: int) -> None:
    """The detector, the restorer's crop and the upscaler read the colour under alpha 0: the
    face's landmarks and the shown half of the restored face changed with it. Now they read a
    fill from the shown pixels; at scale 1 the hidden pixels come back as they were."""
    runs = [(img, enhance_faces(img, runtime=face_runtime, model="gfpgan", seed=0,
                                upscale=upscale))
            for img in (photo_half_hidden(None), photo_half_hidden(3))]
    (a_in, a), (b_in, b) = runs
    assert a.faces_detected == b.faces_detected == 1 and a.faces[0].restored
    assert a.faces[0].landmarks == b.faces[0].landmarks
    shown = cv2.resize(a_in.alpha, None, fx=upscale, fy=upscale,
                       interpolation=cv2.INTER_NEAREST) > 0
    shown[:, 160 * upscale - 4 * upscale:] = False  # Lanczos alpha's edge: both are partly hidden
    assert np.array_equal(a.image.pixels[shown], b.image.pixels[shown])
    assert not np.array_equal(a.image.pixels[shown], cv2.resize(
        a_in.pixels, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_LANCZOS4)[shown])
    if upscale == 1:
        for img, result in runs:
            assert np.array_equal(result.image.pixels[:, 160:], img.pixels[:, 160:])
            assert np.array_equal(result.image.alpha, img.alpha)


def test_a_face_wholly_under_transparency_is_not_found(face_runtime: Runtime) -> None:
    """An erased person (alpha 0, the pixels left in the file) was detected, reported and
    restored, invisibly; an image whose pixels are all hidden now has no face."""
    img = decode(shared_path("testdata", "photos", "03.jpg"))
    hidden_all = Image(img.pixels, np.zeros(img.pixels.shape[:2], np.uint8))
    result = enhance_faces(hidden_all, runtime=face_runtime, model="gfpgan", upscale=1)
    assert result.faces_detected == 0 and result.reason == "no faces detected"
    assert np.array_equal(result.image.pixels, img.pixels)


def test_a_reference_face_under_transparency_does_not_count(face_runtime: Runtime) -> None:
    """A reference photo whose only face is erased (alpha 0) has no face, as the image would."""
    ref = decode(shared_path("testdata", "photos", "03.jpg"))
    erased = Image(ref.pixels, np.zeros(ref.pixels.shape[:2], np.uint8))
    with pytest.raises(InvalidParameter) as err:
        enhance_faces(ref, runtime=face_runtime, model="gfpgan", reference=erased)
    assert err.value.field == "reference" and "no face" in err.value.message


def test_a_user_mask_over_transparent_pixels_only_repairs_nothing(bare: Runtime) -> None:
    """The fill ran on the hidden pixels (then put back), so the step reported a repair that
    changed nothing; a mask over alpha 0 alone is now an empty mask."""
    img = einstein_with_hidden(True)
    mask = img.alpha == 0
    result = restore_photo(img, runtime=bare, face_enhancement=False, denoise=False,
                           mask=mask)
    assert np.array_equal(mask, img.alpha == 0)  # the caller's array is not written
    report = result.reports["scratch-removal"]
    assert report["skipped"] and report["reason"] == "the given mask is empty"
    assert "scratch-removal" not in result.steps and not result.mask.any()
    assert np.array_equal(result.image.pixels, img.pixels)


def test_a_client_box_given_twice_is_restored_once(face_runtime: Runtime) -> None:
    """The same box three times was restored three times and pasted over itself (strength 0.8
    three times over is 0.99), with three faces reported; now once, with a warning."""
    img = decode(shared_path("testdata", "photos", "03.jpg"))
    face = enhance_faces(img, runtime=face_runtime, model="gfpgan", seed=0).faces[0]
    box = {"x": face.x, "y": face.y, "w": face.w, "h": face.h}
    near = {**box, "x": face.x + 1}
    once = enhance_faces(img, runtime=face_runtime, model="gfpgan", seed=0, faces=[box])
    thrice = enhance_faces(img, runtime=face_runtime, model="gfpgan", seed=0,
                           faces=[box, box, near])
    assert thrice.faces_detected == 1
    assert any("2 supplied face box(es) repeat an earlier one" in w for w in thrice.warnings)
    assert np.array_equal(thrice.image.pixels, once.image.pixels)


def test_a_painted_mask_array_counts_like_a_mask_image(bare: Runtime) -> None:
    """An H x W x 3/4 mask array was read by its first (red) channel alone: green strokes were
    no damage, and strokes erased to alpha 0 were. It now counts as a mask image does: luma
    from 128, and alpha from 128; other channel counts are InvalidParameter."""
    px = Image(noise(40, 60, seed=9))
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[5:10, :, 1] = 255  # a green stroke, opaque
    rgba[5:10, :, 3] = 255
    rgba[20:25] = 255  # a white stroke...
    rgba[20:25, 30:, 3] = 0  # ...half erased
    expected = np.zeros((40, 60), bool)
    expected[5:10] = True
    expected[20:25, :30] = True
    for mask in (rgba, rgba[..., :3].copy()):
        result = restore_photo(px, runtime=bare, mask=mask, face_enhancement=False,
                               denoise=False)
        assert result.reports["scratch-removal"]["userMask"]["pixels"] == (
            expected.sum() if mask.shape[2] == 4 else expected.sum() + 5 * 30)
    with pytest.raises(InvalidParameter) as err:
        restore_photo(px, runtime=bare, mask=np.zeros((40, 60, 2), np.uint8))
    assert err.value.field == "mask"
