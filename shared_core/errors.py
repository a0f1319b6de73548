"""User-facing errors. The CLI turns an `ExtradimError` into one line on stderr and exit code 2."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


class ExtradimError(Exception):
    """An error caused by the user's input (a bad path, config, checkpoint or argument)."""


class ConfigError(ExtradimError, ValueError):
    """A config file or override that does not match its typed dataclass."""


class CheckpointError(ExtradimError):
    """A missing, corrupt or mismatched checkpoint."""


def first_line(error: BaseException | str) -> str:
    """The first non-blank line of an error's (or a text's) message, for one-line reports.

    An exception with an empty message gives its type name, so the report is never empty and never
    an ``IndexError`` of its own.
    """
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__ if isinstance(error, BaseException) else ""


def describe_error(error: BaseException, limit: int | None = None) -> str:
    """``"ValueError: <first line>"`` (the line cut to ``limit`` characters), or the bare type name
    when the message is empty."""
    if not str(error).strip():
        return type(error).__name__
    return f"{type(error).__name__}: {first_line(error)[:limit]}"


@contextmanager
def clean_warnings(printed: set[str]) -> Iterator[None]:
    """Turn UserWarnings (e.g. a truncated prompt) into one ``extradim: warning: ...`` line each on
    stderr (each message once per ``printed`` set); other warnings pass through unchanged."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        yield
    for w in caught:
        msg = first_line(w.message)
        if issubclass(w.category, UserWarning) and msg not in printed:
            printed.add(msg)
            print(f"extradim: warning: {msg}", file=sys.stderr)
        elif not issubclass(w.category, UserWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
