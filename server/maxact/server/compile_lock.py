"""One lock around code that parses Python source in worker threads.

`np.load` reads a .npy/.npz header with `ast.literal_eval`; CPython 3.11 before 3.11.9 can fail
concurrent parses in several threads with "SystemError: AST constructor recursion depth
mismatch" (python/cpython#106905). Header parses are microseconds, so serialising them costs
nothing measurable and keeps the answers of parallel requests from failing INTERNAL.
"""

from __future__ import annotations

import threading

COMPILE_LOCK = threading.Lock()
