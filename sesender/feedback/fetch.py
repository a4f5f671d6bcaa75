"""The outbound HTTP of the feedback path: SNS certificates and SubscribeURL confirmations.

Both URLs were already checked against the SNS host rules (or the operator's
``SNS_CERT_URL_PATTERN``) before they get here. On top of that: redirects are never followed (a
redirect could lead anywhere), every request has a short timeout, and a body larger than a
certificate can be is refused. httpx errors are translated here, at this one boundary.
"""

from __future__ import annotations

import httpx

from sesender import __version__
from sesender.errors import SnsCertificateUnavailable, SubscriptionConfirmFailed

#: Real SNS certificates are about 2 KB; anything much larger is not one.
MAX_CERTIFICATE_BYTES = 16 * 1024
MAX_CONFIRMATION_BYTES = 64 * 1024


class SnsHttp:
    """Fetches with one shared httpx client (connection reuse, bounded pool)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    @staticmethod
    def build_client(timeout: float = 10.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=4),
            headers={"User-Agent": f"sesender/{__version__}"},
            trust_env=False,
        )

    async def _get(self, url: str, limit: int) -> tuple[int, bytes]:
        async with self._client.stream("GET", url) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > limit:
                    raise ValueError(f"response larger than {limit} bytes")
            return response.status_code, bytes(body)

    async def fetch_pem(self, url: str) -> bytes:
        try:
            status, body = await self._get(url, MAX_CERTIFICATE_BYTES)
        except (httpx.HTTPError, ValueError) as exc:
            raise SnsCertificateUnavailable(f"could not fetch the SNS certificate: {exc}") from exc
        if status != 200:
            raise SnsCertificateUnavailable(f"the SNS certificate URL answered {status}")
        return body

    async def confirm_subscription(self, url: str) -> None:
        try:
            status, _ = await self._get(url, MAX_CONFIRMATION_BYTES)
        except (httpx.HTTPError, ValueError) as exc:
            raise SubscriptionConfirmFailed(f"could not confirm the subscription: {exc}") from exc
        if status != 200:
            raise SubscriptionConfirmFailed(f"the SubscribeURL answered {status}")
