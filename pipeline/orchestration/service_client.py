"""The pricing service's HTTP API as the pipeline calls it (`pricing replay`, the rollout).

One kept-alive connection per client (a replay makes a call per visitor); a connection the
service closed is opened again once before the call counts as unanswered.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import PricingError, Unavailable


class ServiceRefused(PricingError):
    """The service refused a call (an admin token, a catalogue that does not match)."""


class ServiceUnreachable(Unavailable):
    """The service did not answer."""


@dataclass
class ServiceClient:
    url: str
    token: str | None
    timeout: float = 60.0
    _conn: http.client.HTTPConnection | None = field(default=None, init=False, repr=False)

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            parts = urllib.parse.urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ServiceUnreachable(
                    f"the service URL {self.url!r} must start with http:// or https:// "
                    "(PRICING_SERVICE_URL)"
                )
            kind = (
                http.client.HTTPSConnection
                if parts.scheme == "https"
                else http.client.HTTPConnection
            )
            self._conn = kind(parts.hostname, parts.port, timeout=self.timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        prefix = urllib.parse.urlsplit(self.url).path.rstrip("/")
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, prefix + path, body=data, headers=headers)
                response = conn.getresponse()
                payload = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as err:
                self.close()  # the service closed a kept-alive connection: one more try
                if attempt == 2:
                    raise self._unreachable(err) from None
                continue
            except OSError as err:
                self.close()
                raise self._unreachable(err) from None
            except http.client.HTTPException as err:
                self.close()
                raise self._unreachable(err) from None
            if response.status >= 400:
                detail = payload.decode(errors="replace")[:500]
                raise ServiceRefused(f"{method} {path} answered {response.status}: {detail}")
            return json.loads(payload or b"null")
        raise AssertionError("unreachable")  # pragma: no cover

    def _unreachable(self, err: BaseException) -> ServiceUnreachable:
        return ServiceUnreachable(
            f"the pricing service at {self.url} did not answer ({err}); start it with "
            "`pricing serve`, or give its address (--url, or PRICING_SERVICE_URL)"
        )
