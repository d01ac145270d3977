"""usage_ledger: what finished attempts used, by owner service × model profile × hour

Every finished attempt (completed, failed, or given back by a deferral) adds its tokens, audio
seconds, provider time and a count to one row, in the statement that records the attempt, so
the ledger cannot count an attempt that was rolled back nor miss one that committed. Prune
deletes jobs, never this table: it is the history that outlives them.

`slot` shards each hour's row by the writing worker (a hash of its id): an upsert locks its
row until commit, and without slots every worker completing the same owner's jobs on the same
profile would queue on that one row. Reads sum over the slots.

owners.daily_tokens: an owner's optional budget of prompt plus completion tokens per UTC day;
over it, the claim leaves the owner's jobs pending until the next day or a higher budget.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "usage_ledger",
        sa.Column("owner_service", sa.String(64), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_profile", sa.Text(), nullable=False),
        sa.Column("slot", sa.SmallInteger(), nullable=False),
        sa.Column("attempts", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), server_default=sa.text("0"),
                  nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), server_default=sa.text("0"),
                  nullable=False),
        sa.Column("audio_seconds", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("provider_seconds", sa.Float(), server_default=sa.text("0"), nullable=False),
        # Led by owner and hour: the claim's budget check reads one owner's rows of today.
        sa.PrimaryKeyConstraint("owner_service", "hour", "model_profile", "slot",
                                name=op.f("pk_usage_ledger")),
    )
    # /usage and the page read a time range across owners.
    op.create_index("ix_usage_ledger_hour", "usage_ledger", ["hour"])
    op.add_column("owners", sa.Column("daily_tokens", sa.BigInteger(), nullable=True))
    op.create_check_constraint(op.f("ck_owners_daily_tokens"), "owners",
                               "daily_tokens IS NULL OR daily_tokens >= 0")


def downgrade() -> None:
    op.drop_constraint(op.f("ck_owners_daily_tokens"), "owners", type_="check")
    op.drop_column("owners", "daily_tokens")
    op.drop_index("ix_usage_ledger_hour", table_name="usage_ledger")
    op.drop_table("usage_ledger")
