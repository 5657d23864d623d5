"""HTTP service: FastAPI app, durable job store, in-process workers, SSE, webhooks.

Entry point: :func:`restora.service.app.create_app` (``restora serve`` runs it under uvicorn).
See ``docs/service.md``.
"""
