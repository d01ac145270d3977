"""provider endpoints: the circuit breaker shared by the fleet

A row per (model profile, endpoint URL without credentials): its breaker state, consecutive
failures, until when it is out and why, its last error and latency. Every worker reads the
table every few seconds, so an endpoint one worker found dead is skipped by all of them.
provider_endpoint_load holds each worker's calls in flight per endpoint, for the status page.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "provider_endpoints",
        sa.Column("profile", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), server_default="closed", nullable=False),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("opened_until", TZ, nullable=True),
        sa.Column("cooldown_reason", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_latency_ms", sa.Float(), nullable=True),
        sa.Column("version", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("state IN ('closed', 'open', 'half_open')",
                           name=op.f("ck_provider_endpoints_state")),
        sa.CheckConstraint("cooldown_reason IN ('failure', 'retry_after')",
                           name=op.f("ck_provider_endpoints_cooldown_reason")),
        sa.PrimaryKeyConstraint("profile", "url", name=op.f("pk_provider_endpoints")),
    )
    op.create_table(
        "provider_endpoint_load",
        sa.Column("profile", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("worker_id", sa.Text(), nullable=False),
        sa.Column("in_flight", sa.Integer(), nullable=False),
        sa.Column("reported_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("profile", "url", "worker_id",
                                name=op.f("pk_provider_endpoint_load")),
    )


def downgrade() -> None:
    op.drop_table("provider_endpoint_load")
    op.drop_table("provider_endpoints")
