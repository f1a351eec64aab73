"""Hypothesis profiles of the fuzz suite: `ci` (the default, in `make test`: 15 examples per
fuzz test, about 400 in all, under a minute on two cores) and `long` (`make fuzz`, or
MAXACT_FUZZ_PROFILE=long: 400 per test). Examples are derandomized in `ci` so a CI run is
repeatable; `long` explores new ones each run."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
}
settings.register_profile("ci", max_examples=15, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=400, **_COMMON)
settings.load_profile(os.environ.get("MAXACT_FUZZ_PROFILE", "ci"))
