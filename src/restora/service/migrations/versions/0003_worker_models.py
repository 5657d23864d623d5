"""worker_models: the models each cluster worker has installed (``restora.service.catalog``).

Workers write their row when they start and then every advert interval; an API node's preflight
reads the fresh rows to answer 503 ``model_not_installed`` at submission.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "worker_models",
        sa.Column("worker_id", sa.String(128), primary_key=True),
        sa.Column("models", sa.Text),
        sa.Column("seen_at", sa.Float, nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("worker_models")
