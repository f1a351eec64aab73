""" "Try an image": upload one picture and see a layer's strongest channels for it, each
with its activation map (core.probe runs the layer once; nothing is stored)."""

from __future__ import annotations

import asyncio
import base64

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from maxact.server import limits
from maxact.server.core.probe import ImageProbe, probe_image
from maxact.server.errors import ServiceError, invalid_argument
from maxact.server.http.ui.guard import guarded
from maxact.server.http.ui.patches import LARGE
from maxact.server.http.ui.render import page
from maxact.server.http.ui.services import UiServices

DEFAULT_TOP = 12


def probe_view(probe: ImageProbe, image: str, labels: list[str]) -> dict[str, object]:
    """The probe as the template shows it: heatmaps inline as data URIs (nothing is stored)."""
    return {
        "image": image,
        "total": probe.channels,
        "channels": [
            {
                "channel": c.channel,
                "score": c.score,
                "label": labels[c.channel] if c.channel < len(labels) else "",
                "png": base64.b64encode(c.png).decode("ascii"),
            }
            for c in probe.strongest
        ],
    }


def try_routes(router: APIRouter, ui: UiServices) -> None:
    guard = guarded(ui.token)

    async def form_page(
        scan: str, model: str, layer: str, top: int, result: object = None, error: str = ""
    ) -> Response:
        models = await asyncio.to_thread(ui.models.summaries)
        if scan and not model:
            model = (await asyncio.to_thread(ui.scans.get, scan)).model
        return page(
            "try.html",
            status=400 if error else 200,
            models=models,
            model=model,
            layer=layer,
            scan=scan,
            top=top,
            result=result,
            error=error,
            tile=LARGE,
        )

    @router.get("/try", include_in_schema=False)
    @guard
    async def try_form(
        request: Request, scan: str = "", model: str = "", layer: str = ""
    ) -> Response:
        return await form_page(scan, model, layer, DEFAULT_TOP)

    @router.post("/try", include_in_schema=False)
    @guard
    async def try_image(request: Request) -> Response:
        form = await request.form()
        model, layer = str(form.get("model", "")), str(form.get("layer", ""))
        scan = str(form.get("scan", ""))
        upload = form.get("image")
        try:
            top = int(str(form.get("top") or DEFAULT_TOP))
            if not isinstance(upload, UploadFile):
                raise invalid_argument("IMAGE_REQUIRED", "choose a picture to upload")
            bound = limits.current().max_image_bytes
            data = await upload.read(bound + 1)
            limits.check_image_bytes(len(data))
            probe = await asyncio.to_thread(probe_image, ui.state, model, layer, data, top, LARGE)
        except ValueError:
            return await form_page(scan, model, layer, DEFAULT_TOP, error="channels: a number")
        except ServiceError as exc:
            return await form_page(scan, model, layer, DEFAULT_TOP, error=exc.message)
        named, labels = await asyncio.to_thread(ui.analysis.class_names, model)
        result = probe_view(
            probe, upload.filename or "upload", labels if named == probe.layer else []
        )
        return await form_page(scan, model, probe.layer, top, result=result)
