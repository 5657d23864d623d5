"""YuNet face detector through OpenCV's ``cv2.FaceDetectorYN``, with RetinaFace's output rows.

Not a torch network: OpenCV runs the ONNX file on the CPU. ``to``/``eval`` exist so the runtime
can treat it like the torch networks it caches.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from restora.errors import CheckpointError

__all__ = ["YuNet"]


class YuNet:
    """``detect(rgb uint8) -> (N, 15) float32`` rows ``[x1, y1, x2, y2, score, 5 x (x, y)]``.

    Landmarks are image-left eye, image-right eye, nose, image-left mouth corner, image-right
    mouth corner, the same row layout as :meth:`RetinaFace.detect`.
    """

    def __init__(self, model_path: str | Path, score_threshold: float = 0.6, nms_threshold: float = 0.3,
                 top_k: int = 5000) -> None:
        import cv2

        self.model_path = Path(model_path)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        try:
            # the input size is a placeholder: every detect call sets the image's own size
            self._detector = cv2.FaceDetectorYN.create(
                str(self.model_path), "", (320, 320), self.score_threshold, self.nms_threshold, self.top_k)
        except cv2.error as exc:
            raise CheckpointError(f"YuNet model {self.model_path} could not be loaded by OpenCV: {exc}",
                                  path=str(self.model_path)) from exc
        # FaceDetectorYN keeps per-call state (input size, threshold): one caller at a time
        self._lock = threading.Lock()

    def to(self, *args: Any, **kwargs: Any) -> "YuNet":
        """No-op: OpenCV runs the model on the CPU whatever the runtime's device."""
        return self

    def eval(self) -> "YuNet":
        return self

    def detect(self, image_rgb: np.ndarray, score_threshold: float | None = None) -> np.ndarray:
        """Faces in an RGB uint8 image, best score first; ``score_threshold`` overrides the default."""

        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image_rgb.dtype} {image_rgb.shape}")
        height, width = image_rgb.shape[:2]
        bgr = np.ascontiguousarray(image_rgb[:, :, ::-1])
        threshold = self.score_threshold if score_threshold is None else float(score_threshold)
        with self._lock:
            self._detector.setInputSize((width, height))
            self._detector.setScoreThreshold(threshold)
            _, faces = self._detector.detect(bgr)
        if faces is None or len(faces) == 0:
            return np.zeros((0, 15), dtype=np.float32)
        faces = np.asarray(faces, dtype=np.float32).reshape(-1, 15)
        # YuNet: x, y, w, h, 5 landmarks (subject's right eye first = image-left), score
        rows = np.empty_like(faces)
        rows[:, 0:2] = faces[:, 0:2]
        rows[:, 2:4] = faces[:, 0:2] + faces[:, 2:4]
        rows[:, 4] = faces[:, 14]
        rows[:, 5:15] = faces[:, 4:14]
        return rows[np.argsort(-rows[:, 4], kind="stable")]
