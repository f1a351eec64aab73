"""One thread per replica that keeps its scans' leases and claims new scans.

Every `renew_seconds` it extends the leases of the scans this replica runs (a lease another
replica took over, or whose scan was cancelled or deleted anywhere, is reported lost: its scan
stops here); whenever it has free slots it claims queued scans and scans whose owner's lease
ran out (a replica that died). A store that cannot be reached is retried each round: the
scans go on where they left off when it is back.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Collection

from maxact.server.errors import ServiceError
from maxact.server.jobs.store import Lease, Store

log = logging.getLogger("maxact.server")

# how often a replica looks for scans to claim (at most; a created or finished scan wakes it)
CLAIM_SECONDS = 1.0


def replica_name(unique: str) -> str:
    """`host/pid/unique`: a replica as the lease rows name it."""
    return f"{socket.gethostname()}/{os.getpid()}/{unique}"


def dead_here(owners: Collection[str]) -> set[str]:
    """The owners that were processes on this machine which no longer run: a server restarted
    after a crash takes their scans back at once instead of waiting for their leases."""
    dead = set()
    for owner in owners:
        host, _, rest = owner.partition("/")
        pid = rest.partition("/")[0]
        if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            dead.add(owner)
        except PermissionError:  # alive, someone else's
            pass
    return dead


class LeaseLoop:
    def __init__(
        self,
        store: Store,
        owner: str,
        lease_seconds: float,
        held: Callable[[], list[Lease]],
        free_slots: Callable[[], int],
        start: Callable[[Lease], None],
        lost: Callable[[Lease], None],
    ) -> None:
        self.store, self.owner, self.lease_seconds = store, owner, lease_seconds
        # renewed five times per lease: a slow round or two does not lose it
        self.renew_seconds = lease_seconds / 5
        self._held, self._free, self._start, self._lost = held, free_slots, start, lost
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="maxact-leases", daemon=True)
        self._failing = False

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Look for scans to claim now (a scan was created, or a slot came free)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(10)

    def claim_now(self, dead_owners: Collection[str] = ()) -> list[Lease]:
        """Claim what the free slots can run and start it; the leases claimed."""
        leases = self.store.claim(self.owner, self.lease_seconds, self._free(), dead_owners)
        for lease in leases:
            self._start(lease)
        return leases

    def _loop(self) -> None:
        renewed = time.monotonic()
        while not self._stop.is_set():
            try:
                if time.monotonic() - renewed >= self.renew_seconds:
                    renewed = time.monotonic()
                    for lease in self.store.renew(self._held(), self.lease_seconds):
                        self._lost(lease)
                self.claim_now()
                if self._failing:
                    log.info("the store answers again")
                self._failing = False
            except ServiceError as error:
                if not self._failing:
                    log.warning("leases: %s (retrying)", error.message)
                self._failing = True
            except Exception:  # the loop must outlive any one round: it keeps every lease
                log.exception("leases: unexpected error (retrying)")
            self._wake.wait(min(CLAIM_SECONDS, self.renew_seconds))
            self._wake.clear()
