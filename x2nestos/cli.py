"""Command-line front end of x2nestos (placeholder until the convert work lands)."""

from __future__ import annotations

import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> None:
    print("x2nestos: not implemented yet", file=sys.stderr)
    sys.exit(1)
