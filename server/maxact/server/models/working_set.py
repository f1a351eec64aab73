"""How much memory one image needs while onnxruntime computes some tensors of a model: the
estimate each model run reserves in the memory budget (`MemoryBudget.reserved`) before it runs.

From the model's own tensor shapes at that input size (float32): the input, the tensors handed
back (they leave the session and live until reduced), and twice the model's largest
activation (an operator reads one while it writes the next; onnxruntime reuses the rest).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from threading import Event

from maxact.server.models.registry import LoadedModel
from maxact.server.models.session_cost import FLOAT_BYTES, per_image
from maxact.server.ops.memory import BUDGET


def working_set_bytes(model: LoadedModel, size: tuple[int, int], outputs: Sequence[str]) -> int:
    """Estimated bytes per image of a run of `model` at input `size` returning `outputs`."""
    shapes = model.view(size).shapes
    weights = {init.name for init in model.proto.graph.initializer}
    largest = max(
        (per_image(shape) for name, shape in shapes.items() if name not in weights), default=0
    )
    exposed = sum(per_image(shapes.get(name, ())) for name in outputs)
    return FLOAT_BYTES * (per_image(shapes.get(model.input.name, ())) + exposed + 2 * largest)


def reserve_run(
    model: LoadedModel,
    size: tuple[int, int],
    outputs: Sequence[str],
    images: int,
    stop: Event | None = None,
    wait: float | None = None,
) -> AbstractContextManager[None]:
    """Hold the estimated working set of a run of `images` images in the memory budget."""
    nbytes = images * working_set_bytes(model, size, outputs)
    what = f"a run of {images} image(s) at {size[0]}x{size[1]} through model {model.name!r}"
    return reserve_working_set(model, nbytes, what, stop, wait)


@contextmanager
def reserve_working_set(
    model: LoadedModel,
    nbytes: int,
    what: str,
    stop: Event | None = None,
    wait: float | None = None,
) -> Iterator[None]:
    """Hold `nbytes` (an estimate) scaled by what the model's runs were measured to take
    (`run_peaks`) while the block runs; the scaling alone never makes a run too large for
    the budget (it reserves at most what the budget leaves runs then)."""
    scaled = int(nbytes * model.run_peaks.factor())
    scaled = max(nbytes, min(scaled, BUDGET.work_bytes))
    with (
        BUDGET.reserved(scaled, what, stop, wait),
        model.run_peaks.measured(nbytes, lambda: BUDGET.reserved_bytes == scaled),
    ):
        yield
