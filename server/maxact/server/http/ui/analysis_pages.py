"""The class questions and the comparison of two scans, as pages: classes of a layer, one
class's strongest channels with their patches, and how two scans of one dataset differ."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from maxact.common.kinds import ScanState
from maxact.server.core.neurons import finished_scan, stored_rankings
from maxact.server.errors import ServiceError, invalid_argument
from maxact.server.http.ui.guard import guarded
from maxact.server.http.ui.patches import THUMBNAIL
from maxact.server.http.ui.render import page
from maxact.server.http.ui.services import UiServices
from maxact.server.http.ui.views import scan_view

SCANS_OFFERED = 100


class AnalysisPages:
    def __init__(self, ui: UiServices) -> None:
        self.ui = ui

    def classes(self, scan_id: str, layer: str) -> Response:
        report = self.ui.analysis.class_answer(scan_id, layer, None, 0)
        return page(
            "classes.html",
            scan=scan_view(report.scan),
            layer=layer,
            images=report.images_scanned,
            answer=report.answer,
        )

    def one_class(self, scan_id: str, layer: str, name: str) -> Response:
        report = self.ui.analysis.class_answer(scan_id, layer, None, 0)
        found = next((c for c in report.answer.classes if c.name == name), None)
        if found is None:
            raise invalid_argument(
                "CLASS_NOT_FOUND",
                f"scan '{report.scan.name}' has no class {name[:200]!r}",
                class_name=name[:200],
            )
        channels = [t.channel for t in found.top_channels]
        return page(
            "class.html",
            scan=scan_view(report.scan),
            layer=layer,
            found=found,
            hits=stored_rankings(self.ui.jobs, report.scan, layer, channels),
            tile=THUMBNAIL,
        )

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
        return await asyncio.to_thread(pages.classes, scan_id, layer)

    @router.get("/scans/{scan_id}/classes/{name:path}", include_in_schema=False)
    @guard
    async def class_page(request: Request, scan_id: str, name: str, layer: str = "") -> Response:
        return await asyncio.to_thread(pages.one_class, scan_id, layer, name)

    @router.get("/compare", include_in_schema=False)
    @guard
    async def compare_page(request: Request, a: str = "", b: str = "", layer: str = "") -> Response:
        return await asyncio.to_thread(pages.compare, a, b, layer)
