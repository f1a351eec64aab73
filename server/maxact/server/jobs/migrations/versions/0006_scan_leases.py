"""Scan leases: the replica running a scan (`owner`), how often the scan was claimed
(`lease_generation`, the fencing token of every write of a running scan) and until when the
owner counts as alive (`lease_expires`, the database's clock in seconds since the epoch).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("scans", sa.Column("owner", sa.Text, nullable=False, server_default=""))
    op.add_column(
        "scans",
        sa.Column("lease_generation", sa.Integer, nullable=False, server_default=sa.text("0")),
    )
    op.add_column(
        "scans", sa.Column("lease_expires", sa.Double, nullable=False, server_default="0")
    )
    op.create_index("scans_state", "scans", ["state"])
