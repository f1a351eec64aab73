"""Models and datasets: `maxact models --json`, `layers --json` and `datasets --json`."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from maxact.server.core.datasets import Datasets
from maxact.server.core.models import Models
from maxact.server.http.context import HttpContext


def add_routes(api: APIRouter, context: HttpContext) -> None:
    models = Models(context.state, context.settings.max_upload_bytes)
    datasets = Datasets(context.state.datasets)

    @api.get("/models", tags=["models"])
    async def list_models() -> dict[str, Any]:
        """Every model under the model root (`maxact models --json`)."""
        summaries = await asyncio.to_thread(models.summaries)
        return {
            "models": [
                {"name": m.name, "size_bytes": m.size_bytes, "loaded": m.loaded} for m in summaries
            ]
        }

    @api.get("/datasets", tags=["datasets"])
    async def list_datasets() -> dict[str, Any]:
        """Every dataset under the data root (`maxact datasets --json`)."""

        def summaries() -> list[Any]:
            return [datasets.summary(name) for name in datasets.names()]

        return {
            "datasets": [
                {
                    "name": d.name,
                    "image_count": d.image_count,
                    "labels": list(d.labels),
                    "size_bytes": d.size_bytes,
                    "unreadable": d.unreadable,
                }
                for d in await asyncio.to_thread(summaries)
            ]
        }
