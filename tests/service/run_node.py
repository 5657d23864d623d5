"""One cluster node in its own process: ``python run_node.py api|worker|model-worker PORT STEP_S``.

``model-worker`` runs the real tools on a real Runtime (models from ``RESTORA_MODELS``, e.g. the
tiny test manifest), exactly as ``restora worker``.

Settings come from the environment (RESTORA_DATABASE_URL, RESTORA_QUEUE_URL, RESTORA_HOME,
RESTORA_STORAGE_DIR, ...) exactly like ``restora serve`` / ``restora worker``; only the face
enhancer is the small real stand-in from service_helpers (no model weights needed).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from restora.service import logs  # noqa: E402
from restora.service.settings import ServiceSettings  # noqa: E402
from service_helpers import service_tools  # noqa: E402


def main() -> None:
    role, port, step_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    settings = ServiceSettings(port=port)
    tools = service_tools(step_s=step_s, steps=20)
    if role == "api":
        import uvicorn

        from restora.service.app import create_app

        logs.configure(settings.log_format, node=f"api:{port}")
        app = create_app(settings, tools=tools, runtime=None)
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
    elif role == "model-worker":
        from restora.service.worker import run_worker

        run_worker(settings, threads=1, health_port=port)
    else:
        from restora.service.worker import run_worker

        run_worker(settings, threads=1, tools=tools, runtime=None, health_port=port)


if __name__ == "__main__":
    main()
