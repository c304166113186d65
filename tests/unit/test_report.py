"""The one error renderer of both tools: user terms, cause chains, hints, exit codes."""

from __future__ import annotations

import io

from nestos_installer.errors import ConfigError, TargetError, UsageError
from nestos_installer.report import EXIT_INTERNAL, format_error, report


def _chain() -> TargetError:
    try:
        try:
            open("/nonexistent/dir/b.iso", "rb")
        except OSError as e:
            raise TargetError("opening the output", hint="choose another folder") from e
    except TargetError as e:
        return e
    raise AssertionError("unreachable")


def test_oserror_reads_in_user_terms():
    lines = format_error(_chain())
    assert lines[0] == "Error: opening the output"
    assert lines[1:3] == ["", "Caused by:"]
    assert lines[3] == "    No such file or directory: /nonexistent/dir/b.iso"
    assert lines[-1] == "hint: choose another folder"
    assert not any("Errno" in line for line in lines)


def test_exit_codes_and_internal_errors():
    out = io.StringIO()
    assert report(UsageError("give only one of -f and -u"), out) == 2
    assert out.getvalue() == "Error: give only one of -f and -u\n"
    assert report(ConfigError("bad key 'x'"), io.StringIO()) == 1  # a file's content: run time
    out = io.StringIO()
    assert report(FileExistsError(17, "File exists", "b.iso"), out) == 1
    assert out.getvalue() == "Error: File exists: b.iso\n"
    out = io.StringIO()
    assert report(ValueError("invalid literal"), out) == EXIT_INTERNAL
    first, hint = out.getvalue().splitlines()
    assert first == "Error: internal error (ValueError: invalid literal)"
    assert hint.startswith("hint: this is a bug")
    assert "Traceback" not in out.getvalue()


def test_debug_adds_the_traceback_and_surrogates_do_not_crash_the_report():
    out = io.StringIO()
    err = _chain()
    report(err, out, debug=True)
    assert "Traceback" in out.getvalue()
    bad = TargetError("no such file \udcff.iso")
    buf = io.BytesIO()
    stream = io.TextIOWrapper(buf, encoding="utf-8", errors="strict")
    assert report(bad, stream) == 1
    assert buf.getvalue() == b"Error: no such file \\udcff.iso\n"
