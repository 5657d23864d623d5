"""job_owners: which API key (hashed) submitted each job, for the per-key job history.

A table of its own next to ``jobs`` (see ``restora.service.history``); a database where an earlier
build created it with ``create_all`` is adopted as it is.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "job_owners" in set(sa.inspect(op.get_bind()).get_table_names()):
        return
    op.create_table(
        "job_owners",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False, index=True),
        sa.Column("created_at", sa.Float, nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("job_owners")
