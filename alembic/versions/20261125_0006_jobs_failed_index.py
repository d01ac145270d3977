"""an index over the jobs that failed for good

The operations page lists the last failures every 10 seconds. Picked out of every finished job
of the day, that read the whole table (90 ms with 1M finished jobs); failed jobs are few, and an
index of only them is written only when a job fails for good.

Built CONCURRENTLY, outside the migration's transaction: a plain CREATE INDEX would hold off
every claim and completion for as long as it reads the table.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        # An earlier build that failed half-way leaves an invalid index of the same name.
        op.drop_index("ix_jobs_failed", "jobs", postgresql_concurrently=True, if_exists=True)
        op.create_index("ix_jobs_failed", "jobs", ["finished_at"],
                        postgresql_where=sa.text("status = 'failed'"),
                        postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_jobs_failed", "jobs", postgresql_concurrently=True, if_exists=True)
