"""One-line error reports: ``first_line`` and ``clean_warnings``."""

from __future__ import annotations

import warnings

import pytest

from shared_core.errors import clean_warnings, describe_error, first_line


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ValueError("bad header\nat byte 12"), "bad header"),
        (ValueError("\n  \n  indented first line  \nsecond"), "indented first line"),
        (NotImplementedError(), "NotImplementedError"),  # empty message: the type, never IndexError
        (KeyError(""), "''"),
        ("plain text\nmore", "plain text"),
        ("", ""),
    ],
)
def test_first_line(error: BaseException | str, expected: str) -> None:
    assert first_line(error) == expected


def test_describe_error_names_the_type_and_cuts_the_line() -> None:
    assert describe_error(OSError("moov atom not found\ncontext")) == "OSError: moov atom not found"
    assert describe_error(ValueError("x" * 200), 120) == "ValueError: " + "x" * 120
    assert describe_error(RuntimeError("  ")) == "RuntimeError"


def test_clean_warnings_prints_each_user_warning_once_and_survives_empty_ones(capsys) -> None:
    printed: set[str] = set()
    with clean_warnings(printed):
        warnings.warn("prompt truncated\ndetails", UserWarning, stacklevel=1)
        warnings.warn("prompt truncated\nother details", UserWarning, stacklevel=1)
        warnings.warn("", UserWarning, stacklevel=1)
    assert capsys.readouterr().err == "extradim: warning: prompt truncated\nextradim: warning: UserWarning\n"
