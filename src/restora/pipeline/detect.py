"""Face detection at a bounded working size, mapped back exactly, plus the face-selection rules.

Detectors (RetinaFace, YuNet) come from the Runtime and expose
``detect(rgb_uint8, conf_threshold, nms_threshold) -> (N, 15)`` rows
``[x1, y1, x2, y2, score, 5 x (x, y)]`` with landmarks image-left eye, image-right eye, nose,
image-left mouth corner, image-right mouth corner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, get_args

import numpy as np

from restora.errors import InvalidParameter
from restora.pipeline.options import Orientation

#: Short side the detector sees under CodeFormer's rule (scaled up or down to it).
WORKING_SIZE = 640
#: Bounds on the detector's working image under every rule: its longest side and its area. The
#: short-side rule alone turns a 4000 x 1 image into a 2.56 M x 640 one (gigabytes).
MAX_WORKING_SIDE = 4096
MAX_WORKING_PIXELS = 4 * 2**20
#: Faces whose eyes are closer than this (input pixels) are too small to restore.
MIN_EYE_DISTANCE = 5.0
#: Client boxes also need the mouth this far from the eyes' midpoint (input pixels): with
#: box-proportion landmarks (``BOX_LANDMARKS``) a box of about 11 x 11 px passes both rules.
MIN_MOUTH_DISTANCE = 3.75
NMS_IOU = 0.4

#: Thresholds at sensitivity 0 (only sure faces) and 1 (everything plausible).
STRICT_THRESHOLD = 0.97
LOOSE_THRESHOLD = 0.3


@dataclass(frozen=True)
class DetectionRule:
    """How a restorer's reference pipeline detects faces (geometry, and the threshold of the
    detector it was written for: a descriptor's ``follows_reference_rule``)."""

    name: str
    working_size: int | None  # short side the detector sees; None: the image's own resolution
    reference_threshold: float  # the reference detector's confidence threshold at sensitivity 0.5
    enlarge_only: bool = False  # images whose short side exceeds working_size keep their size


#: CodeFormer's inference: short side enlarged to 640 when smaller (larger images keep their
#: resolution), RetinaFace at 0.8. GFPGANer (facexlib): the image's own resolution, RetinaFace
#: at 0.97. Both within the working-image bounds above.
CODEFORMER_RULE = DetectionRule("codeformer", WORKING_SIZE, 0.8, enlarge_only=True)
GFPGAN_RULE = DetectionRule("gfpgan", None, 0.97)
RULES = {"codeformer": CODEFORMER_RULE, "gfpgan": GFPGAN_RULE}

#: Landmark positions relative to a detector box (x, y as fractions of w, h), a frontal face.
#: Used when a client supplies a box and no detector finds landmarks inside it: means of the
#: YuNet detections on the 17 faces of the test photos, made left/right symmetric.
BOX_LANDMARKS = np.array([[0.27, 0.39], [0.73, 0.39], [0.50, 0.59], [0.30, 0.74], [0.70, 0.74]],
                         dtype=np.float32)


class FaceDetector(Protocol):
    def detect(self, image_rgb: np.ndarray, conf_threshold: float = ...,
               nms_threshold: float = ...) -> np.ndarray: ...


class ThresholdFacts(Protocol):
    """What the sensitivity rule reads from a detector descriptor (``models.nets.FaceDetector``)."""

    mid_threshold: float  # its usual confidence threshold (sensitivity 0.5)
    follows_reference_rule: bool  # a restorer's DetectionRule threshold replaces mid_threshold


@dataclass(frozen=True)
class Detection:
    """A face in input pixel coordinates (float box corners, score, 5 landmarks)."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # 5 x 2 float32
    #: quarter turns the face stands turned clockwise in the photo: the search that found it
    #: turned the image back by as many (``TURNS``); the landmarks keep the face's own order
    turn: int = 0

    @property
    def roll(self) -> float:
        """Angle of the eye line (image-left eye to image-right eye) in degrees, -180..180:
        about 0 for a face as upright as the search that found it."""
        dx, dy = self.landmarks[1] - self.landmarks[0]
        return float(np.degrees(np.arctan2(dy, dx)))

    @property
    def tilt(self) -> float:
        """The roll as the search that found the face saw it (the image turned back by
        ``turn``), -180..180: near 0 where that search saw the face upright."""
        return float((self.roll - 90.0 * self.turn + 180.0) % 360.0 - 180.0)

    @property
    def rotation(self) -> int:
        """Degrees clockwise the face is turned from upright (0, 90, 180, 270)."""
        return 90 * self.turn

    @property
    def eye_distance(self) -> float:
        return float(np.hypot(*(self.landmarks[0] - self.landmarks[1])))

    @property
    def mouth_distance(self) -> float:
        """From the eyes' midpoint to the mouth corners' midpoint."""
        lm = self.landmarks
        return float(np.hypot(*((lm[0] + lm[1]) / 2 - (lm[3] + lm[4]) / 2)))

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    @property
    def center(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2.0, (y1 + y2) / 2.0


def sensitivity_to_threshold(sensitivity: float, detector: ThresholdFacts,
                             rule: DetectionRule = CODEFORMER_RULE) -> float:
    """Map ``sensitivity`` in [0, 1] to ``detector``'s confidence threshold (strictly decreasing).

    Piecewise linear through three points: 0 -> 0.97, 0.5 -> the detector's usual threshold,
    1 -> 0.3. The usual threshold is the descriptor's ``mid_threshold`` (YuNet 0.6), or for the
    detector the references were written for (RetinaFace) the ``rule``'s: 0.8 for CodeFormer,
    0.97 for GFPGAN. Where it is already 0.97 (GFPGAN), sensitivity 0 asks for 0.99. Higher
    sensitivity finds more (and less sure) faces.
    """
    if not 0.0 <= sensitivity <= 1.0:
        raise InvalidParameter("sensitivity", f"sensitivity must be between 0 and 1, got {sensitivity}")
    mid = rule.reference_threshold if detector.follows_reference_rule else detector.mid_threshold
    strict = max(STRICT_THRESHOLD, mid + 0.02)
    if sensitivity <= 0.5:
        return strict + (mid - strict) * (sensitivity / 0.5)
    return mid + (LOOSE_THRESHOLD - mid) * ((sensitivity - 0.5) / 0.5)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """8-bit view for detectors (16-bit data is rounded, not truncated)."""
    if pixels.dtype == np.uint8:
        return pixels
    return ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def working_scale(height: int, width: int, working_size: int | None = WORKING_SIZE,
                  enlarge_only: bool = False) -> float:
    """The factor the detector's working image is resized by.

    ``working_size`` (the short side; None keeps the image's resolution; with ``enlarge_only``
    larger images keep theirs), then bounded so the
    longest side is at most ``MAX_WORKING_SIDE`` and the area at most ``MAX_WORKING_PIXELS``:
    thin images (4000 x 1, or 300 x 1 rotated by EXIF) would otherwise be enlarged hundreds of
    times. Images already within the bounds are never shrunk by them.
    """
    scale = 1.0 if working_size is None else working_size / min(height, width)
    if enlarge_only:
        scale = max(scale, 1.0)
    return min(scale, MAX_WORKING_SIDE / max(height, width),
               (MAX_WORKING_PIXELS / (float(height) * float(width))) ** 0.5)


def resize_for_detection(rgb: np.ndarray, working_size: int | None = WORKING_SIZE,
                         enlarge_only: bool = False) -> tuple[np.ndarray, float, float]:
    """Resize for the detector (see :func:`working_scale`); returns (image, sx, sy), sx = new_w / w.

    The new size is truncated as the references do (``int(w * scale)``), so the detector sees
    the reference's working image. Shrinking uses INTER_AREA, enlarging INTER_LINEAR (as
    CodeFormer's inference). Mapping back divides by the exact per-axis factors of the sizes
    actually used, not by ``scale`` (the references' single factor is off by up to a working
    pixel along the long side after truncation: 0.2-1.3 input pixels on the test photos).
    """
    import cv2

    h, w = rgb.shape[:2]
    scale = working_scale(h, w, working_size, enlarge_only)
    if abs(scale - 1.0) < 1e-9:
        return rgb, 1.0, 1.0
    nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
    if (nw, nh) == (w, h):
        return rgb, 1.0, 1.0
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(rgb, (nw, nh), interpolation=interp), nw / w, nh / h


def rows_to_detections(rows: np.ndarray, sx: float = 1.0, sy: float = 1.0, turn: int = 0
                       ) -> list[Detection]:
    """Detector rows -> Detections, dividing coordinates (not the score) by the resize factors.

    Detector coordinates are continuous (pixel edges at integers), and resizing by sx maps a
    continuous coordinate x to x * sx, so dividing is the exact inverse. ``turn`` is recorded
    (rows already mapped back by :func:`unturn_rows`).
    """
    out = []
    for r in np.asarray(rows, np.float32).reshape(-1, 15):
        box = (float(r[0]) / sx, float(r[1]) / sy, float(r[2]) / sx, float(r[3]) / sy)
        lm = r[5:15].reshape(5, 2).astype(np.float32) / np.array([sx, sy], np.float32)
        out.append(Detection(box=box, score=float(r[4]), landmarks=lm, turn=turn))
    return out


# --- photos that are not upright --------------------------------------------------------------

#: ``orientation`` (EnhanceOptions): ``auto`` searches the photo's other quarter turns only when
#: the upright search is doubtful (a scan placed sideways, a photo whose EXIF turn was lost),
#: ``search`` always does, ``upright`` never (the references' search).
ORIENTATIONS: tuple[str, ...] = get_args(Orientation)  # the option's own values
#: Quarter turns of the working image (counter-clockwise, as ``np.rot90``) searched after the
#: upright one.
TURNS = (1, 3, 2)
#: Faces whose eye line is steeper than this (degrees, as the search saw them) count for no turn:
#: detectors also find faces a quarter turn off, with landmarks following the turned features.
LEVEL_ROLL = 45.0
#: ``auto`` searches the other turns where an upright face's eye line is steeper than this:
#: the test photos' upright faces lie within 19 degrees, faces a quarter turn off that the
#: upright search finds at 22-76 (and some within it: those are left as they are).
DOUBT_ROLL = 20.0
#: A score an upright face in a photo the right way up reaches (RetinaFace: 0.996-1.0 on the
#: test photos' best face; upside-down faces found upright: 0.89-0.98); a detector descriptor
#: may set its own (``sure_score``). Below it, ``auto`` searches the other turns.
SURE_SCORE = 0.99
#: How much more evidence (:func:`turn_evidence`) a turn needs than the photo as it is. On the
#: 10 test photos turned each way (RetinaFace-MobileNet and YuNet), ``search`` picks the right
#: way up for 57 of 60 turned photos and all 20 upright ones; a close call keeps the photo.
TURN_MARGIN = 0.05
#: A face only another turn's search found joins the chosen turn's faces when that search saw it
#: this level (eye line, degrees) and sure (the detector's ``sure_score``), and it covers none
#: of them: a person lying down beside people standing. On the 10 test photos turned each way
#: (both detectors) no such face was added; beside a photo turned 90 degrees, YuNet finds it.
MIXED_ROLL = DOUBT_ROLL


def turn_points(points: np.ndarray, k: int, width: int, height: int) -> np.ndarray:
    """Continuous (x, y) points of a ``width`` x ``height`` image -> the same points in
    ``np.rot90(image, k)`` (edges at integers, so a turn is exact in both directions)."""
    x, y = points[..., 0], points[..., 1]
    k %= 4
    if k == 0:
        return points.astype(np.float32, copy=True)
    turned = {1: (y, width - x), 2: (width - x, height - y), 3: (height - y, x)}[k]
    return np.stack(turned, axis=-1).astype(np.float32)


def unturn_rows(rows: np.ndarray, k: int, width: int, height: int) -> np.ndarray:
    """Detector rows found in ``np.rot90(image, k)`` -> rows of the ``width`` x ``height``
    image: every point turned back, boxes made upright again from their turned corners."""
    rows = np.asarray(rows, np.float32).reshape(-1, 15).copy()
    if k % 4 == 0 or not len(rows):
        return rows
    tw, th = (height, width) if k % 2 else (width, height)  # the turned image's sides
    back = (4 - k) % 4
    corners = turn_points(rows[:, [0, 1, 2, 3]].reshape(-1, 2, 2), back, tw, th)
    rows[:, 0:2] = corners.min(axis=1)
    rows[:, 2:4] = corners.max(axis=1)
    rows[:, 5:15] = turn_points(rows[:, 5:15].reshape(-1, 5, 2), back, tw, th).reshape(-1, 10)
    return rows


def turn_evidence(dets: Sequence[Detection], conf_threshold: float) -> float:
    """How strongly one search's faces say its turn is the photo's way up: per face, its score's
    share of the way from ``conf_threshold`` to 1, squared, times the cosine of its tilt (faces
    steeper than ``LEVEL_ROLL`` count nothing), summed. Squared, because a wrong turn shows
    more faces at middling scores (YuNet: 0.55-0.9 against 0.93-0.95 the right way up) and
    RetinaFace finds a face a turn off at 0.96-1.0: its landmarks' tilt tells most of those."""
    span = max(1e-6, 1.0 - conf_threshold)
    return float(sum(max(0.0, (d.score - conf_threshold) / span) ** 2
                     * np.cos(np.radians(d.tilt)) for d in dets if abs(d.tilt) <= LEVEL_ROLL))


def doubtful(upright: Sequence[Detection], sure_score: float = SURE_SCORE) -> bool:
    """Whether ``auto`` searches the other turns: no face found upright, one of them steeper
    than ``DOUBT_ROLL``, or none the detector is sure of (upside-down faces are found upright
    at lower scores, their landmarks placed as if upright)."""
    return (not upright or any(abs(d.tilt) > DOUBT_ROLL for d in upright)
            or max(d.score for d in upright) < sure_score)


#: A face needs more than this many working pixels across; thinner images are not run.
MIN_DETECT_SIDE = 8


def detect_faces(detector: FaceDetector, pixels: np.ndarray, *, conf_threshold: float,
                 working_size: int | None = WORKING_SIZE, enlarge_only: bool = False,
                 orientation: str = "upright") -> list[Detection]:
    """All faces above ``conf_threshold``, detected at ``working_size`` (None: the image's own
    resolution), within the working-image bounds, in input coordinates.

    ``orientation`` (see ``ORIENTATIONS``): also search the working image turned by each of
    ``TURNS`` (always, or with ``auto`` when the upright search is :func:`doubtful`) and keep
    the faces of the turn with the most upright evidence (:func:`turn_evidence`), mapped back
    to the input. A turn must beat the photo as it is by ``TURN_MARGIN``. Faces only another
    turn found join them when level, sure and apart (``MIXED_ROLL``). Turning the working
    image, not the input, and searching the turns at most at ``WORKING_SIZE`` (short side:
    where a rule keeps a large photo's own resolution, a turned search would cost up to 6x a
    640 px one), bounds the cost to three detector runs at 640 px."""
    if orientation not in ORIENTATIONS:
        raise InvalidParameter("orientation", "orientation must be one of "
                               f"{', '.join(ORIENTATIONS)}, got {orientation!r}")
    small, sx, sy = resize_for_detection(to_uint8(pixels), working_size, enlarge_only)
    if min(small.shape[:2]) < MIN_DETECT_SIDE:
        return []
    found = _detect_turned(detector, small, 0, conf_threshold, sx, sy)
    sure = float(getattr(detector, "sure_score", SURE_SCORE))
    if orientation == "upright" or (orientation == "auto" and not doubtful(found, sure)):
        return found
    best, best_evidence = found, turn_evidence(found, conf_threshold) + TURN_MARGIN
    if min(small.shape[:2]) > WORKING_SIZE:  # the turned searches at most at WORKING_SIZE
        small, fx, fy = resize_for_detection(small, WORKING_SIZE)
        sx, sy = sx * fx, sy * fy
    searches = [found]
    for k in TURNS:
        turned = _detect_turned(detector, small, k, conf_threshold, sx, sy)
        searches.append(turned)
        evidence = turn_evidence(turned, conf_threshold)
        if evidence > best_evidence:
            best, best_evidence = turned, evidence
    return _with_other_turns(best, [s for s in searches if s is not best], sure)


def _with_other_turns(chosen: list[Detection], others: Sequence[Sequence[Detection]],
                      sure: float) -> list[Detection]:
    """``chosen`` plus the faces of ``others`` that are level (``MIXED_ROLL``) and sure in their
    own search and cover no face kept so far (IoU over 0.2, or their centre inside its box)."""
    kept = list(chosen)
    extra = sorted((d for dets in others for d in dets
                    if abs(d.tilt) <= MIXED_ROLL and d.score >= sure), key=lambda d: -d.score)
    for d in extra:
        cx, cy = d.center
        if not any(box_iou(d.box, o.box) > 0.2 or (o.box[0] <= cx <= o.box[2]
                                                  and o.box[1] <= cy <= o.box[3])
                   for o in kept):
            kept.append(d)
    return kept


def _detect_turned(detector: FaceDetector, small: np.ndarray, k: int, conf_threshold: float,
                   sx: float, sy: float) -> list[Detection]:
    h, w = small.shape[:2]
    # threshold positional: RetinaFace calls it conf_threshold, YuNet score_threshold
    rows = detector.detect(np.ascontiguousarray(np.rot90(small, k)), conf_threshold)
    return rows_to_detections(unturn_rows(rows, k, w, h), sx, sy, turn=k)


def drop_small(dets: Sequence[Detection], min_eye_distance: float = MIN_EYE_DISTANCE
               ) -> tuple[list[Detection], int]:
    """Drop faces whose eyes (landmarks 0 and 1) are closer than ``min_eye_distance`` pixels."""
    kept = [d for d in dets if d.eye_distance >= min_eye_distance]
    return kept, len(dets) - len(kept)


def too_small(d: Detection) -> str | None:
    """Why a client box's face is too small to restore, or None.

    The detector's rule (eyes at least :data:`MIN_EYE_DISTANCE` px apart) plus the mouth at
    least :data:`MIN_MOUTH_DISTANCE` px from the eyes: the box-proportion landmarks of a box a
    few pixels high have wide eyes but no face between them and the mouth."""
    if d.eye_distance < MIN_EYE_DISTANCE:
        return (f"face too small: eyes {d.eye_distance:.1f} px apart "
                f"(at least {MIN_EYE_DISTANCE:g})")
    if d.mouth_distance < MIN_MOUTH_DISTANCE:
        return (f"face too small: mouth {d.mouth_distance:.1f} px from the eyes "
                f"(at least {MIN_MOUTH_DISTANCE:g})")
    return None


def center_face(dets: Sequence[Detection], width: int, height: int) -> list[Detection]:
    """The single face whose box centre is nearest the image centre (ties: the larger face)."""
    if not dets:
        return []
    cx, cy = width / 2.0, height / 2.0
    best = min(dets, key=lambda d: (np.hypot(d.center[0] - cx, d.center[1] - cy), -d.area))
    return [best]


def largest_first(dets: Sequence[Detection], limit: int) -> tuple[list[Detection], int]:
    """At most ``limit`` faces, the largest kept; returns (faces, number dropped)."""
    ordered = sorted(dets, key=lambda d: -d.area)
    return ordered[:limit], max(0, len(ordered) - limit)


# --- client-supplied boxes ------------------------------------------------------------------

def parse_boxes(faces: Sequence[Any], width: int, height: int) -> list[tuple[float, float, float, float, float]]:
    """Validate client boxes ``[{x, y, w, h, score?}]`` -> (x1, y1, x2, y2, score), clipped."""
    out = []
    for i, f in enumerate(faces):
        try:
            x, y, w, h = (float(f[k]) for k in ("x", "y", "w", "h"))
            score = float(f.get("score", 1.0) if isinstance(f, dict) else 1.0)
        except (KeyError, TypeError, ValueError):
            raise InvalidParameter("faces", f"face {i} must be an object with numeric x, y, w, h") from None
        if not all(np.isfinite([x, y, w, h])) or w <= 0 or h <= 0:
            raise InvalidParameter("faces", f"face {i} must have a positive finite width and height")
        x1, y1 = max(0.0, x), max(0.0, y)
        x2, y2 = min(float(width), x + w), min(float(height), y + h)
        if x2 - x1 < 1 or y2 - y1 < 1:
            raise InvalidParameter("faces", f"face {i} lies outside the {width}x{height} image")
        out.append((x1, y1, x2, y2, score))
    return out


#: Client boxes overlapping an earlier one this much (IoU) are the same face given twice.
SAME_BOX_IOU = 0.9


def distinct_boxes(boxes: Sequence[tuple[float, float, float, float, float]]
                   ) -> tuple[list[tuple[float, float, float, float, float]], int]:
    """``boxes`` without those that repeat an earlier one (IoU >= :data:`SAME_BOX_IOU`), and
    how many were left out: a face pasted twice is blended twice (strength 0.8 became 0.96)."""
    kept: list[tuple[float, float, float, float, float]] = []
    for b in boxes:
        if all(box_iou(b, k) < SAME_BOX_IOU for k in kept):
            kept.append(b)
    return kept, len(boxes) - len(kept)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def landmarks_from_box(box: Sequence[float]) -> np.ndarray:
    """Frontal-face landmark guess from box proportions (the fallback for client boxes)."""
    x1, y1, x2, y2 = box[:4]
    return (np.array([x1, y1], np.float32)
            + BOX_LANDMARKS * np.array([x2 - x1, y2 - y1], np.float32)).astype(np.float32)


def detections_for_boxes(detector: FaceDetector | None, pixels: np.ndarray,
                         boxes: Sequence[tuple[float, float, float, float, float]], *,
                         conf_threshold: float = LOOSE_THRESHOLD, margin: float = 0.5,
                         working_size: int = 320, orientation: str = "auto"
                         ) -> tuple[list[Detection], list[str]]:
    """Landmarks for client boxes: run the detector on a margin crop around each box.

    The detection in the crop that overlaps the box best (IoU >= 0.3) gives the landmarks; the
    reported box stays the client's. Without one, landmarks come from the box proportions.
    ``orientation`` as in :func:`detect_faces`, per crop (a face box in a photo lying on its
    side gets the turned face's landmarks). Returns the detections and, per box,
    ``"detector"`` or ``"box"``.
    """
    h, w = pixels.shape[:2]
    rgb = to_uint8(pixels)
    dets, sources = [], []
    for x1, y1, x2, y2, score in boxes:
        pad = margin * max(x2 - x1, y2 - y1)
        cx1, cy1 = int(max(0, np.floor(x1 - pad))), int(max(0, np.floor(y1 - pad)))
        cx2, cy2 = int(min(w, np.ceil(x2 + pad))), int(min(h, np.ceil(y2 + pad)))
        best = None
        if detector is not None:
            found = detect_faces(detector, rgb[cy1:cy2, cx1:cx2], conf_threshold=conf_threshold,
                                 working_size=working_size, orientation=orientation)
            scored = []
            for d in found:
                shifted = (d.box[0] + cx1, d.box[1] + cy1, d.box[2] + cx1, d.box[3] + cy1)
                iou = box_iou(shifted, (x1, y1, x2, y2))
                if iou >= 0.3:
                    scored.append((iou, d))
            if scored:
                best = max(scored, key=lambda t: t[0])[1]
        if best is not None:
            lm = best.landmarks + np.array([cx1, cy1], np.float32)
            sources.append("detector")
        else:
            lm = landmarks_from_box((x1, y1, x2, y2))
            sources.append("box")
        dets.append(Detection(box=(x1, y1, x2, y2), score=score, landmarks=lm,
                              turn=best.turn if best is not None else 0))
    return dets, sources
