"""Face detection with the real detectors on the real photos, and the selection rules."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from conftest import shared_path
from restora.config import Settings
from restora.models import nets
from restora.models.runtime import Runtime
from restora.pipeline import detect as det
from tiny_models import write_tiny_manifest

RETINA, YUNET = "retinaface-mobilenet0.25-facelibcfg", "yunet-2026may"
PHOTOS = ["00.jpg", "01.jpg", "02.png", "03.jpg", "04.jpg", "05.jpg", "06.png"]


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    tmp = tmp_path_factory.mktemp("detect")
    manifest = write_tiny_manifest(tmp, include={"retinaface-mobilenet0.25-facelibcfg",
                                                 "yunet-2026may"})
    return Runtime(Settings(models=manifest, home=tmp / "home"), device="cpu")


def photo(name: str) -> np.ndarray:
    bgr = cv2.imread(str(shared_path("testdata", "photos", name)), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(bgr[:, :, ::-1])


def assert_plausible(dets: list[det.Detection], rgb: np.ndarray) -> None:
    h, w = rgb.shape[:2]
    for d in dets:
        x1, y1, x2, y2 = d.box
        assert -2 <= x1 < x2 <= w + 2 and -2 <= y1 < y2 <= h + 2, d.box
        lm = d.landmarks
        assert lm.shape == (5, 2) and lm.dtype == np.float32
        # every landmark inside the (slightly grown) box
        gx, gy = 0.15 * (x2 - x1), 0.15 * (y2 - y1)
        assert ((lm[:, 0] > x1 - gx) & (lm[:, 0] < x2 + gx)).all()
        assert ((lm[:, 1] > y1 - gy) & (lm[:, 1] < y2 + gy)).all()
        # image-left eye left of image-right eye, mouth corners likewise, mouth below the eyes
        assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
        assert min(lm[3, 1], lm[4, 1]) > max(lm[0, 1], lm[1, 1])
        assert 0.15 * (x2 - x1) < d.eye_distance < 0.9 * (x2 - x1)


def test_yunet_counts_on_every_photo(runtime: Runtime) -> None:
    net = runtime.load("yunet-2026may")
    counts = []
    for name in PHOTOS:
        rgb = photo(name)
        dets = det.detect_faces(net, rgb, conf_threshold=det.sensitivity_to_threshold(0.5, net))
        assert_plausible(dets, rgb)
        counts.append(len(dets))
    assert counts == [4, 4, 4, 1, 1, 1, 2]


def test_retinaface_counts_and_geometry(runtime: Runtime) -> None:
    net = runtime.load("retinaface-mobilenet0.25-facelibcfg")
    thr = det.sensitivity_to_threshold(0.5, net)
    assert thr == pytest.approx(0.8)
    for name, expected in (("02.png", 4), ("00.jpg", 4), ("03.jpg", 1)):
        rgb = photo(name)
        dets = det.detect_faces(net, rgb, conf_threshold=thr)
        assert len(dets) == expected, name
        assert_plausible(dets, rgb)


def test_working_size_mapping_matches_the_reference(runtime: Runtime) -> None:
    """At the photo's own size nothing is resized: rows equal the reference detections. At 640 the
    working image is the reference's (truncated size), so the detector's raw output is the same;
    only the mapping back differs, where the reference's single factor is off."""
    net = runtime.load("retinaface-mobilenet0.25-facelibcfg")
    rgb = cv2.imread(str(shared_path("conformance", "retinaface_photo_02.png")), cv2.IMREAD_COLOR)[:, :, ::-1]
    rgb = np.ascontiguousarray(rgb)
    native = det.detect_faces(net, rgb, conf_threshold=0.8, working_size=None)
    golden = json.loads(shared_path("conformance", "face_align_ffhq512.json").read_text())
    ref = np.array([f["landmarks_xy"] for f in golden["faces"]])
    got = np.array([d.landmarks for d in native])
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-3)

    at640 = det.detect_faces(net, rgb, conf_threshold=0.8)
    cf = golden["codeformer_inference_landmarks"]["results"]["retinaface_photo_02.png"]
    cf_lm = np.array(cf["landmarks_xy"])
    h, w = rgb.shape[:2]
    scale = 640 / min(h, w)  # the reference's factor
    _, sx, sy = det.resize_for_detection(rgb)
    assert (round(w * sx), round(h * sy)) == (int(w * scale), int(h * scale)) == (1194, 640)
    got640 = np.array([d.landmarks for d in at640])
    # back in working pixels both are the same detector output
    work = got640 * np.array([sx, sy], np.float32)
    gaps = []
    for lm in cf_lm:
        i = np.argmin(np.abs(work - lm * scale).sum(axis=(1, 2)))
        assert np.abs(work[i] - lm * scale).max() < 2e-3
        gaps.append(np.abs(got640[i] - lm).max())
    # in input pixels the reference's x is off by x * (1 - sx / scale): up to half a pixel here
    assert 0.2 < max(gaps) < 0.6
    # and scores are not divided by the scale (the reference's quirk): they stay in [0, 1]
    assert all(0.0 < d.score <= 1.0 for d in at640)


def test_per_axis_mapping_is_exact_and_the_single_factor_is_not() -> None:
    """A bright dot at a known input position, resized as for the detector: its centroid in the
    working image divided by the per-axis factors lands on the dot; divided by the references'
    single factor it misses by up to a pixel along the long side."""
    h, w = 310, 491
    img = np.zeros((h, w, 3), np.uint8)
    cx, cy = 430.0, 150.0
    cv2.circle(img, (int(cx * 16), int(cy * 16)), 6 * 16, (255, 255, 255), -1, cv2.LINE_AA, shift=4)
    small, sx, sy = det.resize_for_detection(img)
    gray = small[..., 0].astype(np.float64)
    ys, xs = np.mgrid[0:gray.shape[0], 0:gray.shape[1]]
    # pixel centres are at index + 0.5 in continuous coordinates
    wx, wy = (gray * (xs + 0.5)).sum() / gray.sum(), (gray * (ys + 0.5)).sum() / gray.sum()
    ours = (wx / sx - 0.5, wy / sy - 0.5)
    scale = 640 / min(h, w)
    theirs = (wx / scale - 0.5, wy / scale - 0.5)
    assert abs(ours[0] - cx) < 0.05 and abs(ours[1] - cy) < 0.05
    assert abs(theirs[0] - cx) > 0.25


THIN = [(1, 4000), (1, 400), (300, 1), (3, 4000), (20000, 30)]


@pytest.mark.parametrize("shape", THIN)
@pytest.mark.parametrize("working_size", [640, None])
def test_working_image_is_bounded(shape: tuple[int, int], working_size: int | None) -> None:
    """Thin images: the short-side rule would enlarge a 4000 x 1 image to 2.56 M x 640 px."""
    import tracemalloc

    h, w = shape
    fake = _FullFrame()
    tracemalloc.start()
    try:
        found = det.detect_faces(fake, np.zeros((h, w, 3), np.uint8), conf_threshold=0.5,
                                 working_size=working_size)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20
    for sw, sh in fake.seen:
        assert max(sw, sh) <= det.MAX_WORKING_SIDE and sw * sh <= det.MAX_WORKING_PIXELS
        assert min(sw, sh) >= det.MIN_DETECT_SIDE
    scale = det.working_scale(h, w, working_size)
    if min(h, w) * scale < det.MIN_DETECT_SIDE:  # too thin to hold a face: not run at all
        assert fake.seen == [] and found == []
    else:  # mapped back exactly
        np.testing.assert_allclose(found[0].box, (0, 0, w, h), rtol=1e-5)


def test_rules_per_model(runtime: Runtime) -> None:
    """CodeFormer's rule: 640 px, RetinaFace 0.8. GFPGAN's: own resolution, RetinaFace 0.97."""
    assert det.RULES["codeformer"].working_size == 640 and det.RULES["codeformer"].enlarge_only
    assert det.RULES["gfpgan"].working_size is None
    # CodeFormer's: small photos enlarged to 640, larger ones keep their size
    assert det.working_scale(189, 248, 640, enlarge_only=True) == pytest.approx(640 / 189)
    assert det.working_scale(645, 1204, 640, enlarge_only=True) == 1.0
    gfp = det.GFPGAN_RULE
    retina, yunet = runtime.load(RETINA), runtime.load(YUNET)
    assert det.sensitivity_to_threshold(0.5, retina, gfp) == pytest.approx(0.97)
    assert det.sensitivity_to_threshold(0.5, yunet, gfp) == pytest.approx(0.6)
    values = [det.sensitivity_to_threshold(s, retina, gfp) for s in np.linspace(0, 1, 41)]
    assert all(a > b for a, b in zip(values, values[1:]))
    # within the bounds the image keeps its resolution; a 6000 x 4000 photo is shrunk to 4 MP
    assert det.working_scale(645, 1204, None) == 1.0
    assert det.working_scale(4000, 6000, None) == pytest.approx((4 * 2**20 / 24e6) ** 0.5)


class _FullFrame:
    """A stand-in detector (an external model's interface) that reports one face filling its input."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def detect(self, image_rgb: np.ndarray, conf_threshold: float = 0.5) -> np.ndarray:
        h, w = image_rgb.shape[:2]
        self.seen.append((w, h))
        pts = [0.25 * w, 0.25 * h, 0.75 * w, 0.25 * h, 0.5 * w, 0.5 * h, 0.3 * w, 0.8 * h, 0.7 * w, 0.8 * h]
        return np.array([[0, 0, w, h, 0.9, *pts]], np.float32)


@pytest.mark.parametrize("shape", [(310, 491), (1001, 777), (645, 1204), (640, 640)])
def test_mapping_back_is_exact(shape: tuple[int, int]) -> None:
    h, w = shape
    fake = _FullFrame()
    (d,) = det.detect_faces(fake, np.zeros((h, w, 3), np.uint8), conf_threshold=0.5)
    scale = det.WORKING_SIZE / min(h, w)
    assert fake.seen[0] == (int(w * scale), int(h * scale))  # truncated, as the references
    np.testing.assert_allclose(d.box, (0, 0, w, h), rtol=1e-6)
    np.testing.assert_allclose(d.landmarks[2], (0.5 * w, 0.5 * h), rtol=1e-5)
    assert d.score == pytest.approx(0.9)


def test_16bit_input_is_detected_like_8bit(runtime: Runtime) -> None:
    net = runtime.load("yunet-2026may")
    rgb = photo("03.jpg")
    a = det.detect_faces(net, rgb, conf_threshold=0.6)
    b = det.detect_faces(net, rgb.astype(np.uint16) * 257, conf_threshold=0.6)
    np.testing.assert_allclose(a[0].landmarks, b[0].landmarks, atol=1e-4)


def test_sensitivity_rule_is_monotonic(runtime: Runtime) -> None:
    # the two shipped detectors and one with the generic detector facts
    for net in (runtime.load(RETINA), runtime.load(YUNET), nets.FaceDetector):
        values = [det.sensitivity_to_threshold(s, net) for s in np.linspace(0, 1, 41)]
        assert all(a > b for a, b in zip(values, values[1:]))
        assert values[0] == pytest.approx(det.STRICT_THRESHOLD)
        assert values[-1] == pytest.approx(det.LOOSE_THRESHOLD)
    from restora.errors import InvalidParameter

    with pytest.raises(InvalidParameter):
        det.sensitivity_to_threshold(1.5, runtime.load(YUNET))


def test_threshold_follows_the_loaded_descriptor(runtime: Runtime) -> None:
    """At sensitivity 0.5 each detector gets its descriptor's own usual threshold; only the
    reference restorers' detector (RetinaFace) takes the restorer rule's threshold instead."""
    retina, yunet = runtime.load(RETINA), runtime.load(YUNET)
    assert (retina.mid_threshold, yunet.mid_threshold) == (0.8, 0.6)
    assert det.sensitivity_to_threshold(0.5, yunet) == pytest.approx(yunet.mid_threshold)
    assert det.sensitivity_to_threshold(0.5, retina) == pytest.approx(retina.mid_threshold)
    for rule in (det.CODEFORMER_RULE, det.GFPGAN_RULE):
        assert det.sensitivity_to_threshold(0.5, retina, rule) == pytest.approx(rule.reference_threshold)
        assert det.sensitivity_to_threshold(0.5, yunet, rule) == pytest.approx(yunet.mid_threshold)

    class StricterYuNet(nets.YuNetDetector):  # same family name, another usual threshold
        mid_threshold = 0.7

    assert det.sensitivity_to_threshold(0.5, StricterYuNet, det.GFPGAN_RULE) == pytest.approx(0.7)


def test_higher_sensitivity_never_finds_fewer_faces(runtime: Runtime) -> None:
    net = runtime.load(RETINA)
    rgb = photo("01.jpg")
    counts = [len(det.detect_faces(net, rgb, conf_threshold=det.sensitivity_to_threshold(s, net)))
              for s in (0.0, 0.5, 1.0)]
    assert counts == sorted(counts) and counts[0] >= 1


def _det(eyes: tuple[tuple[float, float], tuple[float, float]], nose=(50.0, 60.0), box=(0, 0, 100, 100)):
    lm = np.array([eyes[0], eyes[1], nose, (40, 80), (60, 80)], np.float32)
    return det.Detection(box=box, score=0.9, landmarks=lm)


def test_small_faces_use_the_true_eye_distance() -> None:
    # eyes 3 px apart but far from the nose: facelib's index mix-up would keep it
    tiny = _det(((50.0, 40.0), (53.0, 40.0)), nose=(90.0, 90.0))
    normal = _det(((30.0, 40.0), (70.0, 40.0)))
    kept, dropped = det.drop_small([tiny, normal])
    assert kept == [normal] and dropped == 1


def test_only_center_face_and_face_limit() -> None:
    a = _det(((10, 10), (20, 10)), box=(0, 0, 30, 30))
    b = _det(((110, 110), (130, 110)), box=(95, 95, 145, 145))
    c = _det(((200, 10), (240, 10)), box=(190, 0, 260, 60))
    assert det.center_face([a, b, c], 240, 240) == [b]
    assert det.center_face([], 10, 10) == []
    kept, dropped = det.largest_first([a, b, c], 2)
    assert kept == [c, b] and dropped == 1


def test_client_boxes_get_detector_landmarks_or_a_fallback(runtime: Runtime) -> None:
    net = runtime.load("retinaface-mobilenet0.25-facelibcfg")
    rgb = photo("02.png")
    full = det.detect_faces(net, rgb, conf_threshold=0.8)
    boxes = [{"x": d.box[0], "y": d.box[1], "w": d.box[2] - d.box[0], "h": d.box[3] - d.box[1]}
             for d in full]
    boxes.append({"x": 0, "y": 560, "w": 80, "h": 80, "score": 0.5})  # no face there
    parsed = det.parse_boxes(boxes, rgb.shape[1], rgb.shape[0])
    dets, sources = det.detections_for_boxes(net, rgb, parsed)
    assert sources == ["detector"] * 4 + ["box"]
    for d, ref in zip(dets, full):
        # detected again on a margin crop at another scale: within a few % of the face width
        assert np.abs(d.landmarks - ref.landmarks).max() < 0.05 * (ref.box[2] - ref.box[0])
    fallback = dets[-1]
    assert fallback.score == 0.5
    assert_plausible([fallback], rgb)
    # no detector at all: every box falls back to proportions
    _, only_boxes = det.detections_for_boxes(None, rgb, parsed[:1])
    assert only_boxes == ["box"]


def test_bad_client_boxes_are_rejected() -> None:
    from restora.errors import InvalidParameter

    for bad in ([{"x": 1, "y": 2, "w": 0, "h": 5}], [{"x": 1, "y": 2}], [{"x": 500, "y": 500, "w": 5, "h": 5}],
                ["nope"]):
        with pytest.raises(InvalidParameter) as info:
            det.parse_boxes(bad, 100, 100)
        assert info.value.field == "faces"


def test_box_proportions_fit_the_detector(runtime: Runtime) -> None:
    """The fallback landmarks land near the real ones on real faces (YuNet boxes)."""
    net = runtime.load("yunet-2026may")
    errs = []
    for name in ("02.png", "03.jpg", "06.png"):
        for d in det.detect_faces(net, photo(name), conf_threshold=0.6):
            guess = det.landmarks_from_box(d.box)
            errs.append(np.abs(guess - d.landmarks).max() / (d.box[2] - d.box[0]))
    assert float(np.median(errs)) < 0.12
