"""What the UI's pages call: the transport-neutral core, built once from the HTTP app's
context (the pages never go through the JSON API)."""

from __future__ import annotations

from dataclasses import dataclass

from maxact.server.core.analysis import Analysis
from maxact.server.core.datasets import Datasets
from maxact.server.core.models import Models
from maxact.server.core.scans import Scans
from maxact.server.core.validate import ServerState
from maxact.server.http.context import HttpContext
from maxact.server.http.ui.patches import PatchCache
from maxact.server.http.ui.responses_parts import LabelCache, ResponsesCache
from maxact.server.jobs.scan_jobs import ScanJobs


@dataclass(frozen=True)
class UiServices:
    state: ServerState
    jobs: ScanJobs
    models: Models
    datasets: Datasets
    scans: Scans
    analysis: Analysis
    patches: PatchCache
    labels: LabelCache
    responses: ResponsesCache
    token: str | None  # None: no token asked for

    @classmethod
    def of(cls, context: HttpContext) -> UiServices:
        state, jobs = context.state, context.jobs
        return cls(
            state=state,
            jobs=jobs,
            models=Models(state),
            datasets=Datasets(state.datasets),
            scans=Scans(jobs),
            analysis=Analysis(jobs),
            patches=PatchCache(jobs),
            labels=LabelCache(),
            responses=ResponsesCache(),
            token=context.auth_token,
        )
