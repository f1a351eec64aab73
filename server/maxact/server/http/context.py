"""What the HTTP face needs of the running server, in one frozen record."""

from __future__ import annotations

from dataclasses import dataclass

from maxact.server.core.validate import ServerState
from maxact.server.jobs.scan_jobs import ScanJobs
from maxact.server.ops.slots import Slots
from maxact.server.settings import ServeSettings


@dataclass(frozen=True)
class HttpContext:
    """The shared state (models, datasets), the persisted scans, the settings and the bearer
    token every request must carry (None: no authentication) — the same as the gRPC face's;
    `admission` the call slots shared with gRPC (None: the HTTP face's own)."""

    state: ServerState
    jobs: ScanJobs
    settings: ServeSettings
    auth_token: str | None = None
    admission: Slots | None = None
