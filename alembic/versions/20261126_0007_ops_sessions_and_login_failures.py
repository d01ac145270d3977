"""operations page sessions and failed sign-ins

The page kept the admin API token itself in its cookie: a copied cookie was API access and
signing out did not end it. A session now stands between them: the cookie holds a random id,
stored here only as its SHA-256, with the token it was opened with, its CSRF token, and when it
expires or was ended (by signing out, or by revoking its token).

Failed sign-ins are counted per client address here rather than in a process, so every gunicorn
process slows the same guesser down.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ops_sessions",
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("token_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
        sa.Column("ended_at", TZ, nullable=True),
        sa.ForeignKeyConstraint(
            ["token_id"], ["api_tokens.id"], name=op.f("fk_ops_sessions_token_id_api_tokens"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_ops_sessions")),
    )
    op.create_index("ix_ops_sessions_token_id", "ops_sessions", ["token_id"])
    op.create_index("ix_ops_sessions_expires_at", "ops_sessions", ["expires_at"])
    op.create_table(
        "ops_login_failures",
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failed_at", TZ, nullable=False),
        sa.Column("blocked_until", TZ, nullable=True),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_ops_login_failures")),
    )


def downgrade() -> None:
    op.drop_table("ops_login_failures")
    op.drop_table("ops_sessions")
