"""backfill_batches: the Message Batches submitted for batch-mode jobs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 03:15:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('backfill_batches',
    sa.Column('id', sa.String(length=128), nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('state', sa.String(length=16), server_default='in_progress', nullable=False),
    sa.Column('request_count', sa.Integer(), nullable=False),
    sa.Column('submitted_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['backfill_jobs.id'], name=op.f('fk_backfill_batches_job_id_backfill_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_backfill_batches'))
    )
    op.create_index('ix_backfill_batches_job', 'backfill_batches', ['job_id'], unique=False)
    op.create_index('ix_backfill_batches_open', 'backfill_batches', ['state'], unique=False, postgresql_where=sa.text("state = 'in_progress'"))


def downgrade() -> None:
    op.drop_index('ix_backfill_batches_open', table_name='backfill_batches', postgresql_where=sa.text("state = 'in_progress'"))
    op.drop_index('ix_backfill_batches_job', table_name='backfill_batches')
    op.drop_table('backfill_batches')
