"""Baseline: jobs (options, lease), job_events, webhook_deliveries (claims).

Creates the tables on an empty database; on a database made by the pre-migration
``create_all`` it adds only the missing columns (options, worker_id, lease_until, claimed_by,
claim_until), so existing jobs survive.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ADDED = {
    "jobs": [sa.Column("options", sa.Text, nullable=False, server_default="{}"),
             sa.Column("worker_id", sa.String(128)), sa.Column("lease_until", sa.Float)],
    "webhook_deliveries": [sa.Column("claimed_by", sa.String(128)),
                           sa.Column("claim_until", sa.Float)],
}


def upgrade() -> None:
    bind = op.get_bind()
    existing = set(sa.inspect(bind).get_table_names())
    if "jobs" not in existing:
        op.create_table(
            "jobs",
            sa.Column("id", sa.String(64), primary_key=True),
            sa.Column("tool", sa.String(64), nullable=False),
            sa.Column("api", sa.String(32), nullable=False),
            sa.Column("status", sa.String(16), nullable=False, index=True),
            sa.Column("params", sa.Text, nullable=False),
            sa.Column("options", sa.Text, nullable=False, server_default="{}"),
            sa.Column("input_name", sa.String(255), nullable=False),
            sa.Column("result", sa.Text),
            sa.Column("error", sa.Text),
            sa.Column("webhook_url", sa.Text),
            sa.Column("stage", sa.String(64)),
            sa.Column("percent", sa.Float, nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("cancel_requested", sa.Integer, nullable=False),
            sa.Column("worker_id", sa.String(128)),
            sa.Column("lease_until", sa.Float),
            sa.Column("created_at", sa.Float, nullable=False, index=True),
            sa.Column("started_at", sa.Float),
            sa.Column("finished_at", sa.Float, index=True),
        )
    if "job_events" not in existing:
        op.create_table(
            "job_events",
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("job_id", sa.String(64), nullable=False, index=True),
            sa.Column("kind", sa.String(16), nullable=False),
            sa.Column("data", sa.Text, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
        )
    if "webhook_deliveries" not in existing:
        op.create_table(
            "webhook_deliveries",
            sa.Column("id", sa.String(64), primary_key=True),
            sa.Column("job_id", sa.String(64), nullable=False, index=True),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("url", sa.Text, nullable=False),
            sa.Column("payload", sa.Text, nullable=False),
            sa.Column("state", sa.String(16), nullable=False, index=True),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("next_attempt_at", sa.Float, nullable=False),
            sa.Column("last_error", sa.Text),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("claimed_by", sa.String(128)),
            sa.Column("claim_until", sa.Float),
            sa.UniqueConstraint("job_id", "status", name="uq_delivery_job_status"),
        )
    inspector = sa.inspect(bind)
    for table, columns in _ADDED.items():
        have = {c["name"] for c in inspector.get_columns(table)}
        for column in columns:
            if column.name not in have:
                op.add_column(table, column)


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("job_events")
    op.drop_table("jobs")
