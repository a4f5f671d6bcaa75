"""NotificationListener: one dedicated PostgreSQL connection that ``LISTEN``s, read in a thread.

PostgreSQL delivers ``NOTIFY`` to every session listening on the channel when the sending
transaction commits, so one instance's submission or cancellation reaches every instance within
milliseconds. The listener waits for notifications in a worker thread of its own lane (one slot:
this blocking wait never takes a thread from the store's lane), for at most ``timeout`` seconds a
call, so its caller also gets regular turns to poll (a notification sent while the connection was
down is lost; the caller's poll covers that).

A broken connection (the server restarted) raises ``StoreUnavailable`` once; the next call
reconnects and listens again.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from actors import ThreadLane
from sesender.errors import StoreUnavailable
from sesender.store.pg_queries import CANCEL_CHANNEL, PAUSE_CHANNEL, QUEUE_CHANNEL, Connection


@dataclass(frozen=True, slots=True)
class Notification:
    channel: str
    payload: str


class NotificationListener:
    CHANNELS = (QUEUE_CHANNEL, CANCEL_CHANNEL, PAUSE_CHANNEL)

    def __init__(self, url: str) -> None:
        self._url = url
        self._connection: Connection | None = None
        self._lane = ThreadLane("postgres-listen", 1)

    async def wait(self, seconds: float) -> list[Notification]:
        """The notifications that arrive within ``seconds`` (returns at the first)."""
        try:
            return await self._lane.run_abandonable(self._wait, seconds)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"notification listener: {exc}") from exc

    def _wait(self, timeout: float) -> list[Notification]:
        connection = self._connection
        if connection is None or connection.closed or connection.broken:
            if connection is not None:
                connection.close()
            connection = psycopg.connect(self._url, autocommit=True, connect_timeout=5)
            for channel in self.CHANNELS:
                connection.execute(f"LISTEN {channel}")
            self._connection = connection
        try:
            received = [
                Notification(n.channel, n.payload)
                for n in connection.notifies(timeout=timeout, stop_after=1)
            ]
            # Whatever else arrived with the first, without waiting again.
            received += [
                Notification(n.channel, n.payload)
                for n in connection.notifies(timeout=0, stop_after=1000)
            ]
        except psycopg.Error:
            connection.close()
            self._connection = None
            raise
        return received

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await self._lane.run(connection.close)
