"""Which restorer (and CodeFormer fidelity) each face gets, checked against its identity.

Every face has a short ladder of candidates (model, fidelity). The first rung runs for every
face, batched with the other faces on the same rung. With a face-recognition model installed the
restored face is compared with the input face: ``auto`` climbs the ladder (at most
:data:`AUTO_MAX_EXTRA` extra forwards per face) until the verdict is ``same`` and otherwise keeps
the closest candidate. A face matched to a reference photo tries every rung and keeps the one
closest to the reference. Each face reports what it chose and why.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from restora.pipeline.align import AlignedFace, align_face
from restora.pipeline.identity import (NOT_INSTALLED, Identity, IdentityChecker, crop_sharpness,
                                       unjudgeable)
from restora.models.nets import FaceRestorer
from restora.pipeline.restore import restore_faces

if TYPE_CHECKING:
    from restora.pipeline.detect import Detection

#: Extra forwards ``auto`` may spend on one face after its first restoration.
AUTO_MAX_EXTRA = 2
#: CodeFormer fidelity ``auto`` raises to when the first result is not the same person.
AUTO_RAISED_FIDELITY = 1.0


@dataclass(frozen=True)
class Candidate:
    """One way to restore a face: a loaded restorer and CodeFormer's fidelity."""

    restorer: FaceRestorer
    fidelity: float

    @property
    def key(self) -> tuple[int, float | None]:
        return id(self.restorer), (self.fidelity if self.restorer.kind == "codeformer" else None)

    def describe(self) -> dict[str, Any]:
        return {"model": self.restorer.model_id, "kind": self.restorer.kind,
                "fidelity": (round(self.fidelity, 3) if self.restorer.kind == "codeformer"
                             else None)}


@dataclass
class Plan:
    """Per face: its candidates in order, why the first, and whether to climb the ladder."""

    ladders: list[list[Candidate]]
    reasons: list[str]
    climb: bool  # auto: try further rungs when identity does not hold
    restore: list[bool]  # False: leave the face as it is (onlyReferenceFaces)


@dataclass
class FaceOutcome:
    """What happened to one face."""

    restored: bool
    candidate: Candidate | None = None
    aligned: AlignedFace | None = None
    face: np.ndarray | None = None  # restored crop, float32 [0, 1]
    identity: Identity | None = None
    reason: str | None = None
    tried: list[dict[str, Any]] = field(default_factory=list)
    reference: dict[str, Any] | None = None

    def restoration(self) -> dict[str, Any] | None:
        if self.candidate is None:
            return None
        return {**self.candidate.describe(), "reason": self.reason, "tried": self.tried}


def dedupe(ladder: Sequence[Candidate]) -> list[Candidate]:
    seen: set[tuple[int, float | None]] = set()
    out = []
    for c in ladder:
        if c.key not in seen:
            seen.add(c.key)
            out.append(c)
    return out


def auto_ladder(first: str, kinds: dict[str, FaceRestorer], fidelity: float) -> list[Candidate]:
    """``auto``'s candidates for a face that starts with ``first`` (``gfpgan``/``codeformer``).

    CodeFormer first: the requested w, then w raised to 1 (more of the input face), then GFPGAN.
    GFPGAN first: then CodeFormer at max(w, 0.7), then at 1. At most 1 + AUTO_MAX_EXTRA rungs.
    """
    cf, gf = kinds.get("codeformer"), kinds.get("gfpgan")
    ladder: list[Candidate] = []
    if first == "codeformer" and cf is not None:
        ladder = [Candidate(cf, fidelity), Candidate(cf, AUTO_RAISED_FIDELITY)]
        if gf is not None:
            ladder.append(Candidate(gf, fidelity))
    elif gf is not None:
        ladder = [Candidate(gf, fidelity)]
        if cf is not None:
            ladder += [Candidate(cf, max(fidelity, 0.7)), Candidate(cf, AUTO_RAISED_FIDELITY)]
    return dedupe(ladder)[:1 + AUTO_MAX_EXTRA]


def reference_ladder(candidate: Candidate) -> list[Candidate]:
    """An explicitly chosen CodeFormer tries its w, then 1 and 0, for a reference face."""
    if candidate.restorer.kind != "codeformer":
        return [candidate]
    r = candidate.restorer
    return dedupe([candidate, Candidate(r, 1.0), Candidate(r, 0.0)])[:1 + AUTO_MAX_EXTRA]


def run_plan(pixels: np.ndarray, dets: Sequence[Detection], plan: Plan, *,
             checker: IdentityChecker | None, references: np.ndarray | None,
             matches: dict[int, tuple[int, float]],
             strength: float, seed: int | None, cancel: threading.Event | None,
             on_progress: Callable[[float], None] | None = None,
             tone: Callable[[np.ndarray], np.ndarray] | None = None) -> list[FaceOutcome]:
    """Restore every face along its ladder; returns one outcome per face.

    ``tone`` (:class:`~restora.pipeline.paste.PhotoTone`'s ``apply``) recolours each restored
    face of a black-and-white photo before anything judges or pastes it. The identity distance
    compares the pasted face (restored, toned, blended by ``strength``) with the input crop at
    the same size. ``matches``: face -> (reference index, distance to the input
    face). Rungs run level by level, all faces on one rung together.
    """
    n = len(dets)
    outcomes = [FaceOutcome(restored=plan.restore[i]) for i in range(n)]
    judge = [None] * n if checker is None else _judgeability(pixels, dets)
    # results[i]: list of (candidate, aligned, crop, distance to input, distance to reference)
    results: list[list[tuple[Candidate, AlignedFace, np.ndarray, float | None, float | None]]] = [
        [] for _ in range(n)]
    aligned_cache: dict[tuple[int, int], AlignedFace] = {}
    desc_cache: dict[tuple[int, int], np.ndarray] = {}
    planned = sum(len(plan.ladders[i]) if plan.restore[i] else 0 for i in range(n))
    done = 0
    level = 0
    while True:
        todo = [i for i in range(n) if plan.restore[i] and level < len(plan.ladders[i])
                and _wants_more(i, level, plan, results, checker, judge, matches)]
        if not todo:
            break
        groups: dict[tuple[int, float | None], list[int]] = {}
        for i in todo:
            groups.setdefault(plan.ladders[i][level].key, []).append(i)
        for members in groups.values():
            cand = plan.ladders[members[0]][level]
            size = cand.restorer.input_size or 512
            for i in members:
                if (i, size) not in aligned_cache:
                    aligned_cache[(i, size)] = align_face(pixels, dets[i].landmarks, size)
            crops = [_as_float(aligned_cache[(i, size)].crop) for i in members]
            faces = restore_faces(crops, cand.restorer, fidelity=cand.fidelity, seed=seed,
                                  cancel=cancel)
            if tone is not None:
                faces = [tone(f) for f in faces]
            d_in: list[float | None] = [None] * len(members)
            d_ref: list[float | None] = [None] * len(members)
            if checker is not None:
                seen = [c + strength * (f - c) for c, f in zip(crops, faces)]
                desc = checker.describe(seen)
                # the input face at the same size, so resampling alone never counts as a change
                missing = [(i, c) for i, c in zip(members, crops) if (i, size) not in desc_cache]
                if missing:
                    new = checker.describe([c for _, c in missing])
                    desc_cache.update({(i, size): new[k] for k, (i, _) in enumerate(missing)})
                before = np.stack([desc_cache[(i, size)] for i in members])
                d_in = [float(v) for v in checker.distance(desc, before)]
                if references is not None:
                    for k, i in enumerate(members):
                        if i in matches:
                            d_ref[k] = float(checker.distance(desc[k],
                                                              references[matches[i][0]]))
            for k, i in enumerate(members):
                results[i].append((cand, aligned_cache[(i, size)], faces[k], d_in[k], d_ref[k]))
            done += len(members)
            if on_progress is not None and planned:
                on_progress(min(1.0, done / planned))
        level += 1
    for i in range(n):
        if plan.restore[i]:
            _settle(outcomes[i], i, plan, results[i], checker, judge[i], matches)
    return outcomes


def _wants_more(i: int, level: int, plan: Plan, results: list[list[Any]],
                checker: IdentityChecker | None, judge: list[str | None],
                matches: dict[int, tuple[int, float]]) -> bool:
    if level == 0:
        return True
    if checker is None:
        return False
    if i in matches:
        return True  # a reference face tries every rung
    if not plan.climb or judge[i] is not None:
        return False  # not auto, or a face too small to judge: no extra forwards
    last_distance = results[i][-1][3]
    return checker.verdict(last_distance) != "same"


def _settle(out: FaceOutcome, i: int, plan: Plan, tried: list[Any],
            checker: IdentityChecker | None, judge: str | None,
            matches: dict[int, tuple[int, float]]) -> None:
    reason = plan.reasons[i]
    if checker is None:
        pick = 0
    elif i in matches:
        pick = min(range(len(tried)), key=lambda k: tried[k][4])
        reason = (f"closest to reference {matches[i][0] + 1} of {len(tried)} candidate(s) "
                  f"(distance {tried[pick][4]:.3f})")
    elif len(tried) == 1:
        pick = 0
    else:
        same = [k for k, t in enumerate(tried) if checker.verdict(t[3]) == "same"]
        if same:
            pick = same[0]
            reason += (f"; {_label(tried[0][0])} did not keep the identity (distance "
                       f"{tried[0][3]:.3f}), {_label(tried[pick][0])} did ({tried[pick][3]:.3f})")
        else:
            pick = min(range(len(tried)), key=lambda k: tried[k][3])
            reason += (f"; no candidate kept the identity in {len(tried)} tries: kept the "
                       f"closest, {_label(tried[pick][0])} ({tried[pick][3]:.3f})")
    cand, aligned, face, d_in, d_ref = tried[pick]
    out.candidate, out.aligned, out.face, out.reason = cand, aligned, face, reason
    out.tried = [{**t[0].describe(),
                  "distance": None if t[3] is None else round(t[3], 4),
                  **({"referenceDistance": round(t[4], 4)} if t[4] is not None else {})}
                 for t in tried]
    if checker is None:
        out.identity = Identity("unknown", None, None, NOT_INSTALLED)
    else:
        assert d_in is not None
        out.identity = checker.identity(d_in, judge)
    if i in matches:
        out.reference = {"index": matches[i][0], "distance": round(matches[i][1], 4),
                         "restoredDistance": None if d_ref is None else round(d_ref, 4)}


def _label(c: Candidate) -> str:
    return (f"{c.restorer.model_id} w={c.fidelity:g}" if c.restorer.kind == "codeformer"
            else str(c.restorer.model_id))


def _judgeability(pixels: np.ndarray, dets: Sequence[Detection]) -> list[str | None]:
    from restora.pipeline.detect import to_uint8

    img = to_uint8(pixels)
    return [unjudgeable(d.eye_distance, crop_sharpness(align_face(img, d.landmarks, 512).crop))
            for d in dets]


def input_crops(pixels: np.ndarray, dets: Sequence[Detection]) -> list[np.ndarray]:
    """512 px aligned uint8 crops of the input faces (what their descriptors are taken from)."""
    from restora.pipeline.detect import to_uint8

    img = to_uint8(pixels)
    return [align_face(img, d.landmarks, 512).crop for d in dets]


def _as_float(crop: np.ndarray) -> np.ndarray:
    top = 65535.0 if crop.dtype == np.uint16 else 255.0
    return crop.astype(np.float32) * np.float32(1.0 / top)
