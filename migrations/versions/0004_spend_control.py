"""budget caps and spend (issue: spend control)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 06:30:00.000000

Reserved in the chain so the features built side by side each own one revision; filled by the
feature's own change.
"""
from collections.abc import Sequence

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
