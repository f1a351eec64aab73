"""The image folders under the data root: their names, and a summary of one."""

from __future__ import annotations

from maxact.client.types import DatasetSummary
from maxact.server.data.datasets import DatasetCatalog


class Datasets:
    """Blocking functions: listing a folder costs a directory walk; a face runs them in a
    worker thread."""

    def __init__(self, catalog: DatasetCatalog) -> None:
        self.catalog = catalog

    def names(self) -> list[str]:
        return sorted(self.catalog.names())

    def summary(self, name: str) -> DatasetSummary:
        dataset = self.catalog.open(name)
        return DatasetSummary(
            dataset.name, len(dataset.ids), tuple(dataset.classes), dataset.size_bytes
        )
