"""budget caps and spend (issue: spend control)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 06:30:00.000000

A job's cap, spend and reservations (and the per-session estimate its reservations hold);
an item's reservation and its spend not yet settled into the job; the index estimates use to
read a configuration's recorded runs.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNSETTLED = "reserved_usd IS NOT NULL OR unsettled_usd <> 0"


def upgrade() -> None:
    op.add_column('backfill_jobs', sa.Column('max_cost_usd', sa.Numeric(), nullable=True))
    op.add_column('backfill_jobs', sa.Column('spent_usd', sa.Numeric(), server_default='0', nullable=False))
    op.add_column('backfill_jobs', sa.Column('reserved_usd', sa.Numeric(), server_default='0', nullable=False))
    op.add_column('backfill_jobs', sa.Column('pause_reason', sa.String(length=32), nullable=True))
    op.add_column('backfill_jobs', sa.Column('estimate_base_usd', sa.Numeric(), nullable=True))
    op.add_column('backfill_jobs', sa.Column('estimate_usd_per_char', sa.Numeric(), nullable=True))
    op.add_column('backfill_items', sa.Column('reserved_usd', sa.Numeric(), nullable=True))
    op.add_column('backfill_items', sa.Column('unsettled_usd', sa.Numeric(), server_default='0', nullable=False))
    op.create_index('ix_backfill_items_unsettled', 'backfill_items', ['job_id'], unique=False, postgresql_where=sa.text(_UNSETTLED))
    op.create_index('ix_analysis_runs_config_hash', 'analysis_runs', ['config_hash', 'created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_analysis_runs_config_hash', table_name='analysis_runs')
    op.drop_index('ix_backfill_items_unsettled', table_name='backfill_items', postgresql_where=sa.text(_UNSETTLED))
    op.drop_column('backfill_items', 'unsettled_usd')
    op.drop_column('backfill_items', 'reserved_usd')
    op.drop_column('backfill_jobs', 'estimate_usd_per_char')
    op.drop_column('backfill_jobs', 'estimate_base_usd')
    op.drop_column('backfill_jobs', 'pause_reason')
    op.drop_column('backfill_jobs', 'reserved_usd')
    op.drop_column('backfill_jobs', 'spent_usd')
    op.drop_column('backfill_jobs', 'max_cost_usd')
