"""What a face-parsing map means for the paste: which classes are the face, and the soft mask
the paste blends with. Here (not in the pipeline) because the runtime's accuracy bound for
parsers is stated on this mask (``engines.paste_mask_check``)."""

from __future__ import annotations

import numpy as np

#: facelib's ParseNet class -> face-mask table: 0 background, 14 neck, 16 cloth, 17 hair and
#: 18 hat are outside the face; every other class (skin, brows, eyes, ears, nose, mouth, ...) is in.
PARSE_FACE_CLASSES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15)


def parse_to_mask(classes: np.ndarray, size: int) -> np.ndarray:
    """Soft face mask from a ParseNet argmax map (blurred twice, border cleared), at ``size``.

    Blur and border widths follow facelib at 512 (101 px kernel, sigma 11, 10 px border) and scale
    with the parsing resolution.
    """
    import cv2

    res = classes.shape[0]
    k = res / 512.0
    mask = np.isin(classes, PARSE_FACE_CLASSES).astype(np.float32)
    ksize = max(3, int(round(101 * k)) | 1)
    sigma = 11.0 * k
    mask = cv2.GaussianBlur(mask, (ksize, ksize), sigma)
    mask = cv2.GaussianBlur(mask, (ksize, ksize), sigma)
    border = max(1, int(round(10 * k)))
    mask[:border] = 0.0
    mask[-border:] = 0.0
    mask[:, :border] = 0.0
    mask[:, -border:] = 0.0
    if res != size:
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_LINEAR)
    return mask
