"""Store fixtures shared by service test modules (import them: ``from store_fixtures import pg,
store``): one real PostgreSQL per test module, and a ``store`` parametrised over SQLite and
that PostgreSQL. Not a conftest.py: tests import ``conftest`` (the top one) by name."""

from __future__ import annotations

import pytest

from real_servers import postgres_server
from restora.service.store import JobStore


@pytest.fixture(scope="module")
def pg():
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = (f"sqlite:///{tmp_path / 'jobs.db'}" if request.param == "sqlite"
           else request.getfixturevalue("pg").create_db())
    s = JobStore(url)
    yield s
    s.close()
