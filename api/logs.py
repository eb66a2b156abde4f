"""Log redaction: API tokens and passwords in URLs never reach a log line, whoever logs them.

A token sent where it does not belong (`?token=olk_…` in a URL, refused) would otherwise be
written whole by uvicorn's access log; an exception's message or traceback may quote one too.
`RedactSecrets` rewrites each record before any handler formats it: `olk_…` tokens (also
percent-encoded) become `olk_…redacted`, and `scheme://user:password@` becomes
`scheme://user:***@`, as `store.engine.display_url` shows a database URL.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping
from typing import Any, Final

from store.keys import TOKEN_PREFIX

REDACTED_TOKEN: Final = f"{TOKEN_PREFIX}…redacted"
# Tokens are TOKEN_PREFIX + secrets.token_urlsafe: [A-Za-z0-9_-]; a URL may percent-encode any
# of them (the `_` of the prefix too), so encoded octets are part of the match.
_TOKEN: Final = re.compile(r"olk(?:_|%5[Ff])(?:[A-Za-z0-9_-]|%[0-9A-Fa-f]{2})+")
_URL_PASSWORD: Final = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]*:)[^\s/@]+@")
_FORMATTER: Final = logging.Formatter()
#: Loggers given the filter themselves, for records logged on them directly.
_LOGGERS: Final = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "opsledger")


def redact(text: str) -> str:
    """`text` without API tokens or passwords in URLs."""
    if TOKEN_PREFIX[:3] in text:
        text = _TOKEN.sub(REDACTED_TOKEN, text)
    if "://" in text:
        text = _URL_PASSWORD.sub(r"\1***@", text)
    return text


class RedactSecrets(logging.Filter):
    """Rewrites a record's message, arguments, traceback and stack; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place (every later handler sees the redacted record)."""
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, Mapping):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        elif isinstance(record.args, tuple):
            # Arguments keep their places and types: uvicorn's access formatter unpacks them.
            record.args = tuple(_redact_arg(a) for a in record.args)
        if record.args:
            try:
                message = record.getMessage()
            except Exception:  # a broken format is the handler's to report, as it would be
                message = ""
            if redact(message) != message:
                # A token split between the format and an argument (`"olk_%s"`) shows only
                # once they are joined: keep the joined, redacted text instead.
                record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when it is set, so the traceback is redacted once here.
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _redact_arg(value: Any) -> Any:
    if value is None or isinstance(value, int | float):
        return value
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:  # an object whose str() fails is left for the formatter to report
        return value
    clean = redact(text)
    return value if clean == text else clean


#: The one filter of the process, so installing twice adds nothing.
FILTER: Final = RedactSecrets("opsledger.redact")


def redaction_filter() -> RedactSecrets:
    """The process's filter (a `logging.config.dictConfig` factory)."""
    return FILTER


def install() -> None:
    """Put the filter on every handler there is now, on the last-resort handler and on the
    loggers that uvicorn and opsledger log to."""
    handlers: list[logging.Handler] = [h for h in (logging.lastResort,) if h is not None]
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    loggers += [
        lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for logger in loggers:
        handlers += logger.handlers
    for target in [*handlers, *(logging.getLogger(name) for name in _LOGGERS)]:
        if FILTER not in target.filters:
            target.addFilter(FILTER)


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration with the filter on each of its handlers."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact"] = {"()": "api.logs.redaction_filter"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact")
    return config
