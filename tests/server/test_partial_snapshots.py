"""While a scan runs the stream sends partial top-k snapshots that only ever improve, and the
final patches agree with the last snapshot's ranking rules."""

from __future__ import annotations

from pathlib import Path

from maxact.client import Client, Done, PartialTopK, Patch
from tests.datasets import slow_scan


def test_partial_snapshots_arrive_during_the_scan_and_improve_monotonically(
    client: Client, model_root: Path, data_root: Path
) -> None:
    slow_scan(model_root, data_root, 160, seed=5, dataset="noise")

    partials: list[PartialTopK] = []
    patches: list[Patch] = []
    for event in client.topk("heavy", "relu5", 3, dataset="noise", k=5):
        if isinstance(event, PartialTopK):
            assert not patches, "snapshots come before the final patches"
            partials.append(event)
        elif isinstance(event, Patch):
            patches.append(event)
        elif isinstance(event, Done):
            assert event.images_scanned == 160
    assert partials, "a multi-second scan must send at least one snapshot"
    done = [p.images_done for p in partials]
    assert done == sorted(done) and 0 < done[0] < 160
    for earlier, later in zip(partials, [*partials[1:]], strict=False):
        for rank, hit in enumerate(earlier.hits):
            assert later.hits[rank].score >= hit.score
    final = [p.hit.score for p in patches]
    assert len(final) == 5 and final == sorted(final, reverse=True)
    for rank, hit in enumerate(partials[-1].hits):
        assert final[rank] >= hit.score
