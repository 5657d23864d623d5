"""OpenCV's SFace face recognizer (``cv2.FaceRecognizerSF``, ONNX from the OpenCV model zoo).

SFace wants a 112 x 112 crop aligned to the ArcFace 5-point template. The face pipeline has
FFHQ-aligned crops, whose five points are known (the FFHQ template), so the ArcFace crop is one
similarity warp away. Distances are ``1 - cosine similarity``; OpenCV's model card puts
same/different at cosine 0.363.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from restora.errors import CheckpointError

__all__ = ["SFace", "ARCFACE_TEMPLATE_112"]

#: The ArcFace 112 x 112 template (eyes, nose tip, mouth corners), as OpenCV's alignCrop uses.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
     [70.7299, 92.2041]], dtype=np.float32)


class SFace:
    """``describe(crops) -> (N, 128) float32`` (L2-normalised) for RGB uint8 FFHQ-aligned crops."""

    metric = "cosine"
    dims = 128

    def __init__(self, model_path: str | Path) -> None:
        import cv2

        self.model_path = Path(model_path)
        try:
            self._net = cv2.FaceRecognizerSF.create(str(self.model_path), "")
        except cv2.error as exc:
            raise CheckpointError(f"SFace model {self.model_path} could not be loaded by OpenCV: "
                                  f"{exc}", path=str(self.model_path)) from exc
        self._lock = threading.Lock()

    def to(self, *args: Any, **kwargs: Any) -> SFace:
        """No-op: OpenCV runs the model on the CPU whatever the runtime's device."""
        return self

    def eval(self) -> SFace:
        return self

    def describe(self, crops: list[np.ndarray]) -> np.ndarray:
        import cv2

        from restora.pipeline.align import face_template

        out = []
        for crop in crops:
            if crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
                raise ValueError(f"expected an N x N x 3 uint8 RGB crop, got {crop.dtype} "
                                 f"{crop.shape}")
            matrix, _ = cv2.estimateAffinePartial2D(face_template(crop.shape[0]),
                                                    ARCFACE_TEMPLATE_112)
            aligned = cv2.warpAffine(np.ascontiguousarray(crop[:, :, ::-1]), matrix, (112, 112),
                                     flags=cv2.INTER_AREA)
            with self._lock:
                feature = np.asarray(self._net.feature(aligned), np.float32).reshape(-1)
            out.append(feature / max(float(np.linalg.norm(feature)), 1e-12))
        return np.stack(out) if out else np.zeros((0, self.dims), np.float32)

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """1 - cosine similarity of L2-normalised descriptors (broadcasts)."""
        return 1.0 - np.sum(np.asarray(a, np.float32) * np.asarray(b, np.float32), axis=-1)
