"""an index over the jobs by owner_ref alone

The operations page finds a job by the reference its caller filed it under, in whichever
owner service. ix_jobs_owner_ref leads with owner_service, so without an index led by
owner_ref that search reads the whole of ix_jobs_owner_ref (every job ever kept).

Built CONCURRENTLY, outside the migration's transaction: a plain CREATE INDEX would hold off
every claim and completion for as long as it reads the table.

Revision ID: jobview_owner_ref_index
Revises: 0007
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "jobview_owner_ref_index"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        # An earlier build that failed half-way leaves an invalid index of the same name.
        op.drop_index("ix_jobs_by_owner_ref", "jobs", postgresql_concurrently=True,
                      if_exists=True)
        op.create_index("ix_jobs_by_owner_ref", "jobs",
                        ["owner_ref", sa.text("created_at DESC"), sa.text("id DESC")],
                        postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_jobs_by_owner_ref", "jobs", postgresql_concurrently=True,
                      if_exists=True)
