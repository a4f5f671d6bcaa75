"""A small generic trio toolkit for supervised actors. Imports only trio and the stdlib.

Nothing here knows about sesender: the supervisor, pipes, thread lanes, token bucket and shutdown
trigger are the concurrency edges that the service's pure logic plugs into, and they are tested on
their own under trio's autojump clock.
"""

from actors.channels import PipeReceiver, PipeSender, PipeStatistics, open_pipe
from actors.ratelimit import TokenBucket, TokenBucketStatistics
from actors.shutdown import ShutdownTrigger, watch_signals
from actors.supervisor import (
    ActorCrashed,
    ActorState,
    ActorStatistics,
    Supervisor,
    SupervisorStatistics,
    open_supervisor,
)
from actors.testing import collect, wait_until
from actors.threads import ThreadLane, ThreadLaneStatistics

__all__ = [
    "ActorCrashed",
    "ActorState",
    "ActorStatistics",
    "PipeReceiver",
    "PipeSender",
    "PipeStatistics",
    "ShutdownTrigger",
    "Supervisor",
    "SupervisorStatistics",
    "ThreadLane",
    "ThreadLaneStatistics",
    "TokenBucket",
    "TokenBucketStatistics",
    "collect",
    "open_pipe",
    "open_supervisor",
    "wait_until",
    "watch_signals",
]
