"""Alembic migrations of the job store (SQLite and PostgreSQL run the same scripts).

:func:`upgrade` runs at every start of an API node or worker; on PostgreSQL an advisory lock
makes concurrent starts (two API nodes, three workers) migrate one at a time. Databases created
before migrations existed (by ``create_all``) are adopted by the baseline revision, which only
adds what is missing.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

HERE = Path(__file__).resolve().parent
_LOCK_KEY = 0x5E5701A  # arbitrary, constant: "restora migrations"


def config():  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    cfg = config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
