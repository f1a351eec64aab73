"""A finished scan's answers as plain data, so two scans (local and Ray, loose files and
shards) can be compared for equality."""

from __future__ import annotations

import uuid

from maxact.client import Client
from maxact.server.jobs.store import NewScan, Store


def sample_key(image_id: str) -> str:
    """The sample behind an id: `img_0001.png`, `shard-000.tar/img_0001` and
    `part-000.parquet/img_0001` are all `img_0001`."""
    return image_id.rsplit("/", 1)[-1].removesuffix(".png")


def finish(client: Client, scan_id: str) -> None:
    states = [info.state for info in client.scans.watch(scan_id)]
    assert states[-1] == "succeeded", client.scans.get(scan_id)


def scan_answers(
    client: Client,
    scan_id: str,
    layers: dict[str, int],
    patches: bool = False,
) -> dict:
    """Per layer: every channel's top-k and bottom-k (sample, score, unit; the PNG bytes when
    `patches`) and the layer statistics."""
    answers: dict = {}
    for layer, channels in layers.items():
        for channel in range(channels):
            for bottom in (False, True):
                _, found, scanned = client.scans.neuron(
                    scan_id, layer, channel, bottom=bottom, patches=patches
                )
                answers[layer, channel, bottom] = (
                    scanned,
                    [
                        (sample_key(p.hit.image), p.hit.score, p.hit.unit, p.hit.box)
                        + ((p.png,) if patches else ())
                        for p in found
                    ],
                )
        stats = client.scans.statistics(scan_id, layer)
        answers[layer, "statistics"] = (
            stats.images_scanned,
            [
                (
                    c.channel,
                    c.mean_max,
                    c.max_max,
                    c.firing_rate,
                    c.dead,
                    c.selectivity,
                    c.preferred_class,
                    c.class_mean,
                    c.top_class_histogram,
                )
                for c in stats.channels
            ],
        )
    return answers


def run_scan(
    client: Client, model: str, layers: dict[str, int], dataset: str, k: int, patches: bool
) -> dict:
    scan = client.scans.create(model, list(layers), dataset, k=k)
    finish(client, scan.id)
    return scan_answers(client, scan.id, layers, patches)


def unfinished_copy(store: Store, scan_id: str) -> str:
    """A new queued scan in `store` made from the same request as `scan_id` (as if a server
    had stopped before running it); its id. A server started on the store runs it."""
    record = store.get(scan_id)
    assert record is not None
    copy = uuid.uuid4().hex[:16]
    new = NewScan(
        record.model, record.layers, record.dataset, record.k, record.mode, record.preprocessing
    )
    store.create_scan(copy, new, store.image_ids(scan_id))
    return copy
