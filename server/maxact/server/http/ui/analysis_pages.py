"""The class questions and the comparison of two scans, as pages: classes of a layer, one
class's strongest channels with their patches, and how two scans of one dataset differ."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from maxact.common.kinds import ScanState
from maxact.server.core.analysis import ClassAnswerReport, answer_of
from maxact.server.core.neurons import finished_scan, stored_rankings
from maxact.server.errors import ServiceError, invalid_argument
from maxact.server.http.ui.guard import guarded
from maxact.server.http.ui.patches import THUMBNAIL
from maxact.server.http.ui.render import here, page
from maxact.server.http.ui.services import UiServices
from maxact.server.http.ui.views import scan_view

SCANS_OFFERED = 100


class AnalysisPages:
    def __init__(self, ui: UiServices) -> None:
        self.ui = ui

    def class_report(self, scan_id: str, layer: str) -> tuple[ClassAnswerReport | None, bool]:
        """(the class answer, partial): a finished scan's, or a running one's from its last
        checkpoint; None while it has none yet."""
        record = self.ui.scans.get(scan_id)
        if record.finished:  # failed or cancelled: the class question says why not
            return self.ui.analysis.class_answer(record.id, layer, None, 0), False
        so_far = self.ui.jobs.checkpoint_statistics(record)
        if layer not in so_far:
            return None, True
        try:
            return answer_of(record, layer, so_far[layer]), True
        except ServiceError as error:
            if error.reason == "TOO_FEW_CLASSES":  # one class so far: wait for the next
                return None, True
            raise

    def classes(self, scan_id: str, layer: str, here: str) -> Response:
        report, partial = self.class_report(scan_id, layer)
        if report is None:
            return self.pending(scan_id, f"classes of {layer}", here)
        return page(
            "classes.html",
            scan=scan_view(report.scan),
            layer=layer,
            images=report.images_scanned,
            answer=report.answer,
            partial=partial,
            here=here,
        )

    def one_class(self, scan_id: str, layer: str, name: str, here: str) -> Response:
        report, partial = self.class_report(scan_id, layer)
        if report is None:
            return self.pending(scan_id, name, here)
        found = next((c for c in report.answer.classes if c.name == name), None)
        if found is None:
            raise invalid_argument(
                "CLASS_NOT_FOUND",
                f"scan '{report.scan.name}' has no class {name[:200]!r}",
                class_name=name[:200],
            )
        channels = [] if partial else [t.channel for t in found.top_channels]
        return page(
            "class.html",
            scan=scan_view(report.scan),
            layer=layer,
            images=report.images_scanned,
            found=found,
            hits=stored_rankings(self.ui.jobs, report.scan, layer, channels),
            tile=THUMBNAIL,
            partial=partial,
            here=here,
        )

    def pending(self, scan_id: str, what: str, here: str) -> Response:
        record = self.ui.scans.get(scan_id)
        return page("pending.html", scan=scan_view(record), what=what, here=here)

    def compare(self, a: str, b: str, layer: str) -> Response:
        records = self.ui.scans.page(SCANS_OFFERED, 0).records
        finished = [scan_view(r) for r in records if r.state is ScanState.SUCCEEDED]
        comparison, error = None, ""
        if a and b and layer:
            try:
                finished_scan(self.ui.jobs, a)
                comparison = self.ui.analysis.compare(a, b, layer)
            except ServiceError as exc:
                error = f"{exc.reason}: {exc.message}"
        return page(
            "compare.html",
            finished=finished,
            a=a,
            b=b,
            layer=layer,
            comparison=comparison,
            error=error,
            status=400 if error else 200,
        )


def analysis_routes(router: APIRouter, ui: UiServices) -> None:
    pages = AnalysisPages(ui)
    guard = guarded(ui.token)

    @router.get("/scans/{scan_id}/classes", include_in_schema=False)
    @guard
    async def classes_page(request: Request, scan_id: str, layer: str = "") -> Response:
        return await asyncio.to_thread(pages.classes, scan_id, layer, here(request))

    @router.get("/scans/{scan_id}/classes/{name:path}", include_in_schema=False)
    @guard
    async def class_page(request: Request, scan_id: str, name: str, layer: str = "") -> Response:
        return await asyncio.to_thread(pages.one_class, scan_id, layer, name, here(request))

    @router.get("/compare", include_in_schema=False)
    @guard
    async def compare_page(request: Request, a: str = "", b: str = "", layer: str = "") -> Response:
        return await asyncio.to_thread(pages.compare, a, b, layer)
