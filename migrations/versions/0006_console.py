"""admin keys for the operator console (issue: operator console)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 06:30:00.000000

An admin key opens the console and sees every workspace, so it belongs to none: its
`workspace_id` is NULL, and the check constraint keeps "admin" and "no workspace" the same
fact. Creating or revoking an admin key is audited like any key, under no workspace.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('api_keys', sa.Column('admin', sa.Boolean(), server_default=sa.text('false'), nullable=False))
    op.alter_column('api_keys', 'workspace_id', existing_type=sa.String(length=128), nullable=True)
    op.create_check_constraint(op.f('ck_api_keys_admin_has_no_workspace'), 'api_keys',
                               'admin = (workspace_id IS NULL)')
    op.alter_column('audit_events', 'workspace_id', existing_type=sa.String(length=128), nullable=True)


def downgrade() -> None:
    # The older schema has no place for a key or an event without a workspace.
    op.execute("DELETE FROM audit_events WHERE workspace_id IS NULL")
    op.alter_column('audit_events', 'workspace_id', existing_type=sa.String(length=128), nullable=False)
    op.execute("DELETE FROM api_keys WHERE admin")
    op.drop_constraint(op.f('ck_api_keys_admin_has_no_workspace'), 'api_keys', type_='check')
    op.alter_column('api_keys', 'workspace_id', existing_type=sa.String(length=128), nullable=False)
    op.drop_column('api_keys', 'admin')
