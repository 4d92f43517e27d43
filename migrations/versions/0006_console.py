"""admin keys for the operator console (issue: operator console)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 06:30:00.000000

Reserved in the chain so the features built side by side each own one revision; filled by the
feature's own change.
"""
from collections.abc import Sequence

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
