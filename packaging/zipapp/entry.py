# The zipapp's __main__.py (copied in by build_pyz.py). It must parse on Python 2.7 and 3.6 (no
# f-strings, no annotations, no `from __future__ import annotations`) so that a host whose
# Python is too old gets one clear line and exit status 2 instead of a SyntaxError.
import sys

if sys.version_info < (3, 7):
    sys.stderr.write(
        "x2nestos: this host's Python is %d.%d; x2nestos.pyz needs Python >= 3.7 here, or run "
        "`x2nestos ... --host [USER@]THIS-HOST` from another machine, which needs no Python on "
        "this host\n" % tuple(sys.version_info[:2])
    )
    sys.exit(2)

from x2nestos.cli import main  # noqa: E402 - only once the version is known to be new enough

main()
