"""The pricing service's HTTP API as the pipeline calls it (`pricing replay`, the rollout)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
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

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        if not self.url.startswith(("http://", "https://")):
            raise ServiceUnreachable(
                f"the service URL {self.url!r} must start with http:// or https:// "
                "(PRICING_SERVICE_URL)"
            )
        try:
            # bandit: the scheme is checked above (http or https only)
            with urllib.request.urlopen(request, timeout=60) as response:  # nosec B310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")[:500]
            raise ServiceRefused(f"{method} {path} answered {err.code}: {detail}") from None
        except OSError as err:
            raise ServiceUnreachable(
                f"the pricing service at {self.url} did not answer ({err}); start it with "
                "`pricing serve`, or give its address (--url, or PRICING_SERVICE_URL)"
            ) from None
