"""The image folders under the data root: their names, and a summary of one."""

from __future__ import annotations

from maxact.common.records import DatasetSummary
from maxact.server.data.datasets import DatasetCatalog


class Datasets:
    """Blocking functions: listing a folder costs a directory walk; a face runs them in a
    worker thread."""

    def __init__(self, catalog: DatasetCatalog) -> None:
        self.catalog = catalog

    def names(self) -> list[str]:
        return sorted(self.catalog.names())

    def summary(self, name: str) -> DatasetSummary:
        """The dataset's summary; one whose files cannot be read is listed with the reason
        (and no images) so that it cannot hide the others."""
        dataset = self.catalog.describe(name)
        return DatasetSummary(
            dataset.name,
            dataset.readable_count,
            tuple(dataset.classes),
            dataset.size_bytes,
            dataset.unreadable,
        )
