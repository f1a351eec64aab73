"""The home page (scans with live progress, models, datasets, the start-a-scan form) and the
model page (its layers with op, shape, receptive field and class names)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from maxact.common.records import DatasetSummary
from maxact.server.http.ui.guard import guarded
from maxact.server.http.ui.render import page
from maxact.server.http.ui.scan_form import scan_form, scan_request
from maxact.server.http.ui.services import UiServices
from maxact.server.http.ui.views import LayerView, ScanView, layer_view, scan_view

SCANS_LISTED = 50
# Unfinished scans whose bars follow their events live: each holds one of the browser's six
# connections to the server (HTTP/1.1), and the page's images need the others.
LIVE_BARS = 3


def _live(views: list[ScanView]) -> set[str]:
    """The ids of the newest LIVE_BARS unfinished scans."""
    return {v.id for v in [v for v in views if not v.finished][:LIVE_BARS]}


def _datasets(ui: UiServices) -> list[DatasetSummary]:
    return [ui.datasets.summary(name) for name in ui.datasets.names()]


def home_routes(router: APIRouter, ui: UiServices) -> None:
    guard = guarded(ui.token)

    @router.get("/", include_in_schema=False)
    @guard
    async def home(request: Request) -> Response:
        scans = await asyncio.to_thread(ui.scans.page, SCANS_LISTED, 0)
        models = await asyncio.to_thread(ui.models.summaries)
        datasets = await asyncio.to_thread(_datasets, ui)
        chosen = request.query_params.get("model") or (models[0].name if models else "")
        views = [scan_view(r) for r in scans.records]
        return page(
            "home.html",
            scans=views,
            live=_live(views),
            models=models,
            datasets=datasets,
            form=await scan_form(ui, chosen),
        )

    @router.get("/ui/scan-form", include_in_schema=False)
    @guard
    async def scan_form_fragment(request: Request, model: str = "") -> Response:
        """The model-dependent fields of the form when the user picks another model."""
        return page("_scan_form_model.html", form=await scan_form(ui, model))

    @router.post("/ui/scans", include_in_schema=False)
    @guard
    async def start_scan(request: Request) -> Response:
        form = await request.form()
        values: dict[str, Any] = {key: form.get(key) for key in form}
        layers = [str(v) for v in form.getlist("layers")]
        created = await asyncio.to_thread(ui.scans.create, scan_request(values, layers))
        return RedirectResponse(f"/scans/{created.record.id}", status_code=303)

    @router.get("/models/{model:path}", include_in_schema=False)
    @guard
    async def model_page(request: Request, model: str) -> Response:
        described = await ui.models.describe(model, [])
        named, labels = await asyncio.to_thread(ui.analysis.class_names, described.name)
        layers: list[LayerView] = [
            layer_view(e, len(labels) if e.name == named else 0) for e in described.layers
        ]
        scans = await asyncio.to_thread(ui.scans.page, SCANS_LISTED, 0)
        image_input = described.inputs[0].name if described.inputs else ""
        return page(
            "model.html",
            model={
                "name": described.name,
                "input_name": image_input,
                "input_size": described.input_size,
                "layers": layers,
                "labels": labels,
                "labels_layer": named,
                "preprocessing": _preprocessing_text(described.default_preprocessing.to_dict()),
            },
            scans=[scan_view(r) for r in scans.records if r.model == described.name],
        )


def _preprocessing_text(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in values.items()) or "built-in defaults"
