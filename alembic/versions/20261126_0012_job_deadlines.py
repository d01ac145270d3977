"""jobs.deadline, the expired status, and the index the sweeper finds overdue jobs by

A caller may give a job a deadline (or a longest wait, stored as a deadline): a job still
pending when it passes is never claimed and becomes `expired`, a final status the CHECK
constraint must now allow. The sweeper finds those jobs through a partial index over pending
jobs that have a deadline: jobs without one (most) are not in it and cost it no write.

Adding a nullable column without a default changes only the catalog. The new CHECK is added
NOT VALID and validated apart: validating takes a lock that lets claims and completions go on
while it reads the table. The index is built CONCURRENTLY, outside the migration's
transaction, for the same reason.

Downgrading turns expired jobs into cancelled ones (the old statuses have no better word for
"never ran, no longer wanted") before the old constraint comes back.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = "status IN ('pending', 'running', 'completed', 'failed', 'cancelled')"
NEW_STATUSES = "status IN ('pending', 'running', 'completed', 'failed', 'cancelled', 'expired')"


def _status_check(condition: str) -> None:
    """Swap the CHECK in the migration's transaction (catalog only, a moment's lock); the
    caller validates it after that transaction commits."""
    op.drop_constraint(op.f("ck_jobs_status"), "jobs", type_="check")
    op.execute(f"ALTER TABLE jobs ADD CONSTRAINT ck_jobs_status CHECK ({condition}) NOT VALID")


def upgrade() -> None:
    op.add_column("jobs", sa.Column("deadline", sa.DateTime(timezone=True), nullable=True))
    _status_check(NEW_STATUSES)
    with op.get_context().autocommit_block():
        op.execute("ALTER TABLE jobs VALIDATE CONSTRAINT ck_jobs_status")
        # An earlier build that failed half-way leaves an invalid index of the same name.
        op.drop_index("ix_jobs_pending_deadline", "jobs", postgresql_concurrently=True,
                      if_exists=True)
        op.create_index("ix_jobs_pending_deadline", "jobs", ["deadline"],
                        postgresql_where=sa.text("status = 'pending' AND deadline IS NOT NULL"),
                        postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_jobs_pending_deadline", "jobs", postgresql_concurrently=True,
                      if_exists=True)
    op.execute("UPDATE jobs SET status = 'cancelled' WHERE status = 'expired'")
    _status_check(OLD_STATUSES)
    op.drop_column("jobs", "deadline")
    with op.get_context().autocommit_block():
        op.execute("ALTER TABLE jobs VALIDATE CONSTRAINT ck_jobs_status")
