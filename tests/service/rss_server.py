"""The real service (real tools, tiny models) in its own process, for peak-RSS measurements:
``python rss_server.py HOME PORT MANIFEST [AS_LIMIT_BYTES]``.

An address-space limit (optional) keeps a regression from taking the whole machine down: the
server then fails the job (out of memory) instead of growing without bound.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import uvicorn  # noqa: E402

from restora.service.app import RUNTIME_FROM_SETTINGS, create_app  # noqa: E402
from restora.service.protocol import uvicorn_config  # noqa: E402
from restora.service.settings import ServiceSettings  # noqa: E402


def main() -> None:
    home, port, manifest = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if len(sys.argv) > 4:
        limit = int(sys.argv[4])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    settings = ServiceSettings(home=Path(home), port=port, workers=1, models=Path(manifest),
                               device="cpu", threads=2, max_upload_bytes=60_000_000)
    app = create_app(settings, runtime=RUNTIME_FROM_SETTINGS)
    uvicorn.Server(uvicorn_config(app, settings, log_level="warning")).run()


if __name__ == "__main__":
    main()
