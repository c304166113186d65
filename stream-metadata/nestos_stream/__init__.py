"""nestos_stream: the NestOS stream metadata format (parse, validate, select artifacts).

Standalone library (stdlib only, Python 3.7+): imports nothing from nestos_installer or x2nestos.
"""

from __future__ import annotations

from pathlib import Path

from nestos_stream.stream import (
    DEFAULT_BASE_URL,
    DEFAULT_STREAM,
    Arch,
    Artifact,
    Platform,
    Stream,
    StreamError,
    load,
    signature_url,
    stream_url,
)

SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "stream.schema.json"
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_STREAM",
    "EXAMPLES_DIR",
    "SCHEMA_PATH",
    "Arch",
    "Artifact",
    "Platform",
    "Stream",
    "StreamError",
    "load",
    "signature_url",
    "stream_url",
]
