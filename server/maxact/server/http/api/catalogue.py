"""Models and datasets: `maxact models --json`, `layers MODEL --json` and `datasets --json`."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query

from maxact.common import convert, documents
from maxact.common.results import ClassNames
from maxact.server.core.analysis import Analysis
from maxact.server.core.datasets import Datasets
from maxact.server.core.models import Models
from maxact.server.http.context import HttpContext
from maxact.server.service import messages


def add_routes(api: APIRouter, context: HttpContext) -> None:
    models = Models(context.state, context.settings.max_upload_bytes)
    datasets = Datasets(context.state.datasets)
    analysis = Analysis(context.jobs)

    @api.get("/models", tags=["models"])
    async def list_models() -> dict[str, Any]:
        """Every model under the model root (`maxact models --json`)."""
        return documents.models_json(await asyncio.to_thread(models.summaries))

    @api.get("/models/{model:path}", tags=["models"])
    async def get_model(
        model: str,
        size: Annotated[list[int] | None, Query(description="H W for dynamic inputs")] = None,
    ) -> dict[str, Any]:
        """A model's layers with op, shape and receptive field (`maxact layers MODEL --json`);
        the model's name is its path under the model root, `/` included."""
        description = await models.describe(model, list(size or []))
        info = convert.model_info(messages.model_response(description))
        layer, names = await asyncio.to_thread(analysis.class_names, description.name)
        labels = ClassNames(layer=layer, names=tuple(names))
        return documents.add_layer_labels(documents.layers_json(info), labels)

    @api.get("/datasets", tags=["datasets"])
    async def list_datasets() -> dict[str, Any]:
        """Every dataset under the data root (`maxact datasets --json`)."""

        def summaries() -> list[Any]:
            return [datasets.summary(name) for name in datasets.names()]

        return documents.datasets_json(await asyncio.to_thread(summaries))
