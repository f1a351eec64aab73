"""The admission count both faces share: at most `limit` maxact calls (gRPC or HTTP) in
flight; the next is refused with RESOURCE_EXHAUSTED. Taken and released on the event loop
(one coroutine at a time: no lock needed)."""

from __future__ import annotations

from maxact.server.errors import Code, ServiceError


class Slots:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def try_take(self) -> bool:
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        self.in_flight -= 1

    def refusal(self) -> ServiceError:
        return ServiceError(
            Code.RESOURCE_EXHAUSTED,
            "TOO_MANY_CALLS",
            f"the server is busy: {self.limit} calls are in flight (maxact serve "
            f"--max-concurrent-rpcs); retry later",
            {"limit": str(self.limit)},
        )
