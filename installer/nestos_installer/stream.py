"""Stream metadata as both tools load it: nestos_stream's parsing and selection over the caller's
transport (fetch.Fetcher, or x2nestos' urllib one), with typed errors. Stdlib only, Python 3.7+
(bundled in the zipapp): imports `errors` and nestos_stream, never an HTTP client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict

import nestos_stream
from nestos_installer.errors import StreamError, UsageError
from nestos_stream import DEFAULT_BASE_URL, Artifact, Stream

if TYPE_CHECKING:
    from typing import Protocol

    class Transport(Protocol):
        """What loading needs of a transport: a whole small file, bounded in size."""

        def get_bytes(self, url: str, *, max_size: int = ..., what: str = ...) -> bytes: ...


MAX_SIZE = 64 << 20
"""Stream metadata larger than this is refused (a real one is a few hundred KiB)."""


def load_stream(transport: Transport, name: str, base_url: str = DEFAULT_BASE_URL) -> Stream:
    """Fetch and parse `<base_url>/<name>.json`: a bad name is a UsageError, a bad document one
    StreamError line naming the URL; the transport's own errors (FetchError) pass through."""
    try:
        nestos_stream.stream_url(base_url, name)
    except nestos_stream.StreamError as e:
        raise UsageError(str(e)) from None

    def get(url: str) -> bytes:
        return transport.get_bytes(url, max_size=MAX_SIZE, what="stream metadata")

    try:
        return nestos_stream.load(get, name, base_url)
    except nestos_stream.StreamError as e:
        raise StreamError(str(e)) from None


def select_artifacts(stream: Stream, arch: str, platform: str, fmt: str) -> Dict[str, Artifact]:
    """Artifact type -> Artifact, or a StreamError that lists the available choices."""
    try:
        chosen: Dict[str, Artifact] = stream.select(arch, platform, fmt)
    except nestos_stream.StreamError as e:
        raise StreamError(str(e)) from None
    return chosen
