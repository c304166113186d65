"""HTTP(S) GETs over urllib, x2nestos' transport: the `get_bytes`/`open` of fetch.Fetcher that
the shared stream loading needs, without retries (nothing has changed yet when one fails).
Stdlib only, Python 3.7+; imports `errors` and the version string only.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from nestos_installer.errors import FetchError, UsageError
from x2nestos import __version__


class UrlFetcher:
    """One HTTP client for one operation (urllib has no session to share)."""

    def __init__(self, timeout: float = 60) -> None:
        self.timeout = timeout

    def open(self, url: str, *, what: str = "file") -> Any:
        """The response to a GET of `url` (a context manager with read() and headers)."""
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            raise UsageError(f"unknown protocol for URL '{url}'")
        req = urllib.request.Request(url, headers={"User-Agent": f"x2nestos/{__version__}"})
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)  # noqa: S310 (scheme checked)
        except urllib.error.HTTPError as e:
            e.close()
            raise FetchError(f"{what} fetch failed: {e.code} {e.reason} ({url})") from e
        except (urllib.error.URLError, OSError) as e:
            raise FetchError(f"{what} fetch failed: {url}") from e

    def get_bytes(self, url: str, *, max_size: int = 64 << 20, what: str = "file") -> bytes:
        """A whole small file in memory; larger than `max_size` is an error."""
        with self.open(url, what=what) as resp:
            length = resp.length  # from Content-Length; None when the server did not say
            if length is not None and length > max_size:
                raise FetchError(f"{what} at {url} is too large: {length} > {max_size} bytes")
            data: bytes = resp.read(max_size + 1 if length is None else length)
        if len(data) > max_size:
            raise FetchError(f"{what} at {url} is larger than {max_size} bytes")
        return data
