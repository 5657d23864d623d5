"""The service in its own process for the restart test: ``python run_server.py HOME PORT STEP_S``.

Settings come from the environment like ``restora serve``; only the face enhancer is the small
real stand-in from service_helpers, so the test does not depend on model weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import uvicorn  # noqa: E402

from restora.service.app import create_app  # noqa: E402
from restora.service.settings import ServiceSettings  # noqa: E402
from service_helpers import service_tools  # noqa: E402


def main() -> None:
    home, port, step_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    settings = ServiceSettings(home=Path(home), port=port, workers=1)
    app = create_app(settings, tools=service_tools(step_s=step_s, steps=20), runtime=None)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
