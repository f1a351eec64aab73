"""onnxruntime sessions: pick the device once, and build sessions tuned for throughput."""

from __future__ import annotations

import logging
import os
from functools import lru_cache

import onnx
import onnxruntime as ort

log = logging.getLogger("maxact.server")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@lru_cache(maxsize=4)
def providers_for(device: str) -> tuple[str, ...]:
    """Providers for 'auto' | 'cpu' | 'cuda'; 'auto' probes CUDA once and logs ONE line.

    onnxruntime-gpu lists the CUDA provider even on machines without a GPU and then prints a
    page of errors per session; probing once with logging silenced keeps the log readable.
    """
    if device == "cpu":
        return (CPU,)
    if CUDA in ort.get_available_providers() and _cuda_loads():
        log.info("using the CUDA execution provider")
        return (CUDA, CPU)
    if device == "cuda":
        raise RuntimeError("--device cuda: the CUDA execution provider does not load here")
    log.info("CUDA execution provider unavailable; using the CPU")
    return (CPU,)


def _cuda_loads() -> bool:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.log_severity_level = 4
    ort.set_default_logger_severity(4)  # the provider bridge logs through the default logger
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=[CUDA, CPU])
    except Exception:  # any failure means "no CUDA here"
        return False
    finally:
        ort.set_default_logger_severity(3)
    return CUDA in session.get_providers()


INTRA_OP_THREADS_ENV = "MAXACT_INTRA_OP_THREADS"


def session_options() -> ort.SessionOptions:
    """Threads = cores (or MAXACT_INTRA_OP_THREADS: a Ray worker's share of them), no
    spinning; optimisations keep exposed intermediate outputs intact."""
    options = ort.SessionOptions()
    threads = os.environ.get(INTRA_OP_THREADS_ENV, "")
    options.intra_op_num_threads = int(threads) if threads.isdigit() else os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # no busy-waiting between runs: the scan's decode and reduction threads need those cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def run_options(variable_shapes: bool) -> ort.RunOptions:
    """Options for one run. With `variable_shapes` (a model whose input height/width vary, e.g.
    a detector fed each photo at its own size) the CPU arena returns what the run allocated:
    otherwise it keeps the largest buffers of every shape it saw. Measured on PP-OCRv4 det, 12
    input sizes, batch 2, with glibc's `malloc_trim` after each run (the engine trims after
    each scan, `ops.process`): RSS 90 -> 370 MB with the arena as is, 128 MB with shrinkage,
    111 MB with no arena at all (but 128 s instead of 84 s: every buffer from malloc); without the
    trims 426, 228 and 539 MB (glibc keeps freed blocks in per-thread arenas)."""
    options = ort.RunOptions()
    if variable_shapes:
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def create_session(model: onnx.ModelProto, device: str = "auto") -> ort.InferenceSession:
    return ort.InferenceSession(
        model.SerializeToString(), session_options(), providers=list(providers_for(device))
    )


def run_failure(model: str, exc: BaseException) -> Exception | None:
    """onnxruntime failing to run a model it loaded (an attribute its kernel rejects, e.g. a
    Conv `kernel_shape` that contradicts its weights): the model's fault, said as such
    (FAILED_PRECONDITION MODEL_INVALID), not an internal error; None for any other error."""
    if not type(exc).__module__.startswith("onnxruntime"):
        return None
    from maxact.server.errors import failed_precondition

    first_line = (str(exc).strip().splitlines() or [""])[-1][:200]
    return failed_precondition(
        "MODEL_INVALID",
        f"model {model!r}: onnxruntime cannot run it ({type(exc).__name__}: {first_line})",
        model=model,
    )
