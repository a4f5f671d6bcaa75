"""The service process's garbage collector (and its SES client process's), set for a program
that allocates per email.

Why: at CPython's default thresholds (700, 10, 10) the cyclic collector took 12 to 13 us of CPU
per email in the throughput benchmark (``bench.ceiling``, part (a)), a sixth of the process's
CPU (docs/performance.md, "Pipeline: garbage collection"). Two things made it expensive: the
objects of emails in flight (claimed emails, composed messages, outcomes: thousands at once at
full speed) outlive the young generation's 700 allocations, so they are promoted and make the
older generations fill and be collected often; and every full collection walked the ~85,000
objects that start-up (quart, boto3, botocore's models...) leaves behind and that live as long as
the process.

So, once the service has started: collect once, then freeze what exists (frozen objects are never
scanned again; reference counting still frees them as usual), and collect the young generation
every :data:`YOUNG_THRESHOLD` allocations. Cyclic garbage is still collected, only in larger
steps; the email objects of this service form no cycles (frozen dataclasses of strings and ints).
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "tune_for_service"]

#: Allocations (minus deallocations) of container objects between two young collections.
YOUNG_THRESHOLD = 20_000


def tune_for_service() -> None:
    """Freeze what start-up left and raise the young generation's threshold (see the module
    docstring); the older generations keep their thresholds. Idempotent."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
