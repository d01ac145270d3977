"""jobs.waited_until: until when a long poll waits on the job

A change to a final state tells the long polls (GET /api/v1/jobs/{id}?wait=) of the jobs some
request waits on, and of no other: every NOTIFYing commit takes a cluster-wide lock held
through its WAL flush, and a NOTIFY on every completion cut the completions per second of
eight concurrent connections by about a third where nobody was waiting at all. A waiting
request sets this to its deadline; the statements that finish jobs read it from the row they
change, so a request that starts waiting while a job finishes is never missed (one of the two
waits for the other's row lock).

Adding a nullable column without a default changes only the catalog: no rewrite, no scan.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("waited_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "waited_until")
