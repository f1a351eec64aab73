"""Persisted scans: create, get, list, watch, cancel, delete, over `jobs.ScanJobs`.

Blocking functions (a face runs them in a worker thread) except `watch`, an async iterator
of the scan each time its progress changed.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass

from maxact.common.defaults import DEFAULT_K
from maxact.common.kinds import ResponsesMode, TopKMode
from maxact.server.core.streaming import poll_changes
from maxact.server.data.preprocess import Preprocessing
from maxact.server.jobs.scan_jobs import ScanJobs, scan_id_from
from maxact.server.jobs.store import ScanRecord

WATCH_INTERVAL = 0.2


@dataclass(frozen=True)
class NewScanRequest:
    """A scan to create; `k` 0 means the default, `request_id` "" a fresh one, `deadline`
    (time.monotonic()) None no deadline."""

    model: str
    layers: list[str]
    dataset: str
    k: int
    mode: TopKMode
    preprocessing: Preprocessing
    request_id: str = ""
    deadline: float | None = None
    responses: ResponsesMode = ResponsesMode.AUTO


@dataclass(frozen=True)
class CreatedScan:
    record: ScanRecord
    preprocessing_warning: str  # "" unless the model's defaults were guessed


@dataclass(frozen=True)
class ScanPage:
    """Scans newest first; `next_before` is the seq to continue before (None: the last page)."""

    records: list[ScanRecord]
    next_before: int | None


def _progress(record: ScanRecord) -> tuple[str, int, int]:
    return (record.state.value, record.images_done, record.images_failed)


class Scans:
    def __init__(self, jobs: ScanJobs) -> None:
        self.jobs = jobs

    def create(self, request: NewScanRequest) -> CreatedScan:
        record = self.jobs.create(
            request.model,
            list(request.layers),
            request.dataset,
            request.k or DEFAULT_K,
            request.mode,
            request.preprocessing,
            request_id=request.request_id,
            deadline=request.deadline,
            responses=request.responses,
        )
        model = self.jobs.models.get(record.model)
        return CreatedScan(record, model.preprocessing_warning(request.preprocessing))

    def get(self, name: str) -> ScanRecord:
        return self.jobs.get(scan_id_from(name))

    def page(self, size: int, before_seq: int) -> ScanPage:
        """At most `size` scans older than `before_seq` (0: from the newest)."""
        records = self.jobs.store.list_scans(size + 1, before_seq)
        page, more = records[:size], len(records) > size
        return ScanPage(
            [self.jobs.with_unrecorded(record) for record in page],
            page[-1].seq if more and page else None,
        )

    async def watch(self, name: str) -> AsyncGenerator[ScanRecord, None]:
        """The scan now, then each time its state or counts change, until it finished."""
        scan_id = scan_id_from(name)
        async for record in poll_changes(
            lambda: self.jobs.get(scan_id),
            key=_progress,
            finished=lambda record: record.finished,
            interval=WATCH_INTERVAL,
            changed=lambda: self.jobs.store.changes.wait(scan_id),
        ):
            yield record

    def cancel(self, name: str) -> ScanRecord:
        return self.jobs.cancel(scan_id_from(name))

    def delete(self, name: str) -> None:
        self.jobs.delete(scan_id_from(name))
