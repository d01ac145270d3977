"""owners: each owner service's share of the fleet, and an index the fair claim walks

A row per owner service that has been given a weight (its share of the claims against the
others with work), a fleet-wide cap on its running jobs, or a priority ceiling; an owner
without a row gets the defaults (weight 1, no cap, ceiling 100: ai_service/store/owners.py).

The fair claim (ai_service/sql/claim.sql) reads each owner's best claimable jobs: the index
over pending jobs by owner, then priority and age, serves that as one short probe per owner
and lets it step from one owner to the next without reading another owner's jobs.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "owners",
        sa.Column("owner_service", sa.String(64), nullable=False),
        sa.Column("weight", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("max_running", sa.Integer(), nullable=True),
        sa.Column("max_priority", sa.Integer(), server_default=sa.text("100"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.CheckConstraint("weight > 0", name=op.f("ck_owners_weight")),
        sa.CheckConstraint("max_running IS NULL OR max_running > 0",
                           name=op.f("ck_owners_max_running")),
        sa.PrimaryKeyConstraint("owner_service", name=op.f("pk_owners")),
    )
    op.create_index(
        "ix_jobs_owner_claimable", "jobs",
        ["owner_service", sa.text("priority DESC"), "created_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_owner_claimable", table_name="jobs")
    op.drop_table("owners")
