"""webhook registrations and their delivery outbox

A registration (webhook_endpoints) names where an owner service's job outcomes go and the
secret they are signed with. The secret is stored as issued, not hashed as API tokens are: the
dispatcher computes HMACs with it, so the database alone must be able to sign. Whoever reads
this table can therefore sign as the service: it is protected as the database and its backups
are, the API shows a secret only when it issues it (create, rotate), and no listing, log line
or repr carries one. During a rotation the previous secret signs too until
`previous_secret_expires_at`.

A delivery (webhook_deliveries) is written in the statement or transaction that moves its job
to a final state (see ai_service/sql/jobs.sql), so "job finished" and "delivery queued" commit
together. Its id is the `webhook-id` every attempt sends. Dispatchers lease pending rows as
workers lease jobs: a lease token with an expiry, taken with SKIP LOCKED.

A statement-level trigger NOTIFYs the dispatchers once per statement that queued deliveries:
the worker's completion statement is a single autocommit statement with no room for a
separate NOTIFY, and a statement that queued nothing sends nothing (a NOTIFY takes a
cluster-wide lock at commit).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("owner_service", sa.String(64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("events", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("previous_secret", sa.Text(), nullable=True),
        sa.Column("previous_secret_expires_at", TZ, nullable=True),
        sa.Column("state", sa.String(16), server_default=sa.text("'active'"), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("failing_since", TZ, nullable=True),
        sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("state IN ('active', 'disabled')",
                           name=op.f("ck_webhook_endpoints_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    op.create_index("ix_webhook_endpoints_owner_service", "webhook_endpoints",
                    ["owner_service"], postgresql_where=sa.text("state = 'active'"))
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("endpoint_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("job_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("payload", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("lease_token", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("lease_expires_at", TZ, nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("finished_at", TZ, nullable=True),
        sa.CheckConstraint("state IN ('pending', 'delivered', 'failed')",
                           name=op.f("ck_webhook_deliveries_state")),
        sa.ForeignKeyConstraint(
            ["endpoint_id"], ["webhook_endpoints.id"],
            name=op.f("fk_webhook_deliveries_endpoint_id_webhook_endpoints"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["next_attempt_at"],
                    postgresql_where=sa.text("state = 'pending'"))
    op.create_index("ix_webhook_deliveries_job_id", "webhook_deliveries", ["job_id"])
    op.create_index("ix_webhook_deliveries_endpoint_id", "webhook_deliveries", ["endpoint_id"])
    op.create_table(
        "job_callbacks",
        sa.Column("job_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("endpoint_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["endpoint_id"], ["webhook_endpoints.id"],
            name=op.f("fk_job_callbacks_endpoint_id_webhook_endpoints"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_job_callbacks")),
    )
    op.create_index("ix_job_callbacks_endpoint_id", "job_callbacks", ["endpoint_id"])
    op.execute("""
        CREATE FUNCTION webhook_deliveries_queued() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM queued) THEN
                PERFORM pg_notify('ai_service_webhooks', '');
            END IF;
            RETURN NULL;
        END $$""")
    op.execute("""
        CREATE TRIGGER webhook_deliveries_queued AFTER INSERT ON webhook_deliveries
        REFERENCING NEW TABLE AS queued FOR EACH STATEMENT
        EXECUTE FUNCTION webhook_deliveries_queued()""")


def downgrade() -> None:
    op.drop_table("job_callbacks")
    op.drop_table("webhook_deliveries")
    op.execute("DROP FUNCTION webhook_deliveries_queued()")
    op.drop_table("webhook_endpoints")
