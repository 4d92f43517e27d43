"""trial runs, change reports, promote and revert (issue: safe to apply)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 06:30:00.000000

Runs written before this revision keep `before` null: reports count them as without a before,
reverts skip them.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('analysis_runs', sa.Column('before', postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column('analysis_runs', sa.Column('before_run_id', sa.BigInteger(), nullable=True))
    op.add_column('analysis_runs', sa.Column('field_types', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False))
    op.add_column('analysis_runs', sa.Column('applied', sa.Boolean(), server_default=sa.text('true'), nullable=False))
    op.add_column('analysis_runs', sa.Column('reverted_run_id', sa.BigInteger(), nullable=True))
    op.create_index('ix_analysis_runs_reverted', 'analysis_runs', ['reverted_run_id'], unique=False, postgresql_where=sa.text('reverted_run_id IS NOT NULL'))
    op.add_column('backfill_jobs', sa.Column('promoted_from', sa.String(length=40), nullable=True))
    op.create_index('uq_backfill_jobs_promoted_from', 'backfill_jobs', ['promoted_from'], unique=True, postgresql_where=sa.text('promoted_from IS NOT NULL'))


def downgrade() -> None:
    op.drop_index('uq_backfill_jobs_promoted_from', table_name='backfill_jobs', postgresql_where=sa.text('promoted_from IS NOT NULL'))
    op.drop_column('backfill_jobs', 'promoted_from')
    op.drop_index('ix_analysis_runs_reverted', table_name='analysis_runs', postgresql_where=sa.text('reverted_run_id IS NOT NULL'))
    op.drop_column('analysis_runs', 'reverted_run_id')
    op.drop_column('analysis_runs', 'applied')
    op.drop_column('analysis_runs', 'field_types')
    op.drop_column('analysis_runs', 'before_run_id')
    op.drop_column('analysis_runs', 'before')
