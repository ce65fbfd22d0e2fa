"""Storage URLs: the embedded default, Postgres driver mapping, passwords kept out of sight."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from tuner.errors import StorageError

__all__ = [
    "EMBEDDED_PATH",
    "PASSWORD_FILE_ENV",
    "STORAGE_ENV",
    "StorageURL",
    "public_url",
    "resolve_url",
    "split_userinfo",
]

STORAGE_ENV = "TUNER_STORAGE"
PASSWORD_FILE_ENV = "TUNER_DB_PASSWORD_FILE"
EMBEDDED_PATH = Path("storage") / "tuner.db"
"""The embedded store, relative to the working directory, when no storage is given."""

_POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg")


@dataclass(frozen=True)
class StorageURL:
    """A resolved storage URL. ``url`` may hold a password: never print it; print ``public``."""

    url: URL
    kind: str  # "sqlite" or "postgresql"
    password: str | None  # from TUNER_DB_PASSWORD_FILE, passed to the driver, not in the URL

    @property
    def public(self) -> str:
        return public_url(self.url)

    @property
    def path(self) -> Path | None:
        """The database file of an embedded (SQLite) store."""
        return Path(self.url.database) if self.kind == "sqlite" and self.url.database else None


def public_url(url: URL | str) -> str:
    """The URL without any password, safe for logs, files and messages.

    A string is split at the string level (:func:`split_userinfo`), so a password with an
    unencoded ``@`` or ``/`` never leaks into what is shown as the host or the path.
    """
    if isinstance(url, URL):
        return url._replace(password=None).render_as_string(hide_password=False)
    scheme, username, _password, rest = split_userinfo(url.strip())
    if scheme is None:
        return url
    user = f"{quote(username, safe='')}@" if username else ""
    return f"{scheme}://{user}{rest}"


def split_userinfo(text: str) -> tuple[str | None, str | None, str | None, str]:
    """``scheme://USER:PASSWORD@rest`` -> (scheme, user, password, rest), decoded.

    Everything between ``://`` and the last ``@`` before the host is the user-info, whatever
    characters the password holds (an ``@`` need not be written ``%40``); the last ``@`` whose
    remainder still holds the ``/`` of the database path wins, so an ``@`` in a query
    parameter is not taken for the end of the user-info. Without ``://`` the scheme is None;
    ``sqlite:///PATH`` has no user-info.
    """
    scheme, sep, after = text.partition("://")
    if not sep:
        return None, None, None, text
    ats = [i for i, char in enumerate(after) if char == "@"]
    if not ats or after.startswith("/"):  # no user-info, or no host at all (sqlite:///PATH)
        return scheme, None, None, after
    end = next((i for i in reversed(ats) if "/" in after[i + 1 :]), ats[-1])
    userinfo, rest = after[:end], after[end + 1 :]
    username, colon, password = userinfo.partition(":")
    return scheme, unquote(username) or None, unquote(password) if colon else None, rest


def resolve_url(url: str | None = None, *, create: bool = True) -> StorageURL:
    """Turn ``--storage`` / ``TUNER_STORAGE`` (or nothing: the embedded store) into a URL.

    ``create=False`` is for those that only read or run an existing study: the folder of the
    embedded store is not made, and a missing folder is left for the caller to report as a
    missing database.

    ``postgresql://``, ``postgres://`` and ``postgresql+psycopg://`` are mapped to the psycopg2
    driver that tuner installs (SQLAlchemy 2.1 maps a plain ``postgresql://`` to psycopg 3,
    which is not installed, and Optuna then fails to import it). A bare file path or
    ``sqlite:///PATH`` is an embedded store. A password comes from the URL, from
    ``PGPASSWORD`` (read by libpq itself), or from the file named by ``TUNER_DB_PASSWORD_FILE``.
    """
    text = url if url is not None else os.environ.get(STORAGE_ENV) or None
    if text is None:
        if create:
            EMBEDDED_PATH.parent.mkdir(parents=True, exist_ok=True)
        return StorageURL(make_url(f"sqlite:///{EMBEDDED_PATH.resolve()}"), "sqlite", None)
    text = text.strip()
    if "://" not in text:
        return _sqlite(Path(text), create)
    scheme, username, password, rest = split_userinfo(text)
    try:
        parsed = make_url(f"{scheme}://{rest}").set(username=username, password=password)
    except ArgumentError:
        raise StorageError(
            f"storage URL {public_url(text)!r} cannot be parsed; use "
            "postgresql://USER@HOST:PORT/DATABASE or sqlite:///PATH"
        ) from None
    if parsed.drivername == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise StorageError(
                "an in-memory SQLite storage cannot be shared by workers; give a file"
            )
        return _sqlite(Path(parsed.database), create)
    if parsed.drivername not in _POSTGRES_SCHEMES:
        raise StorageError(
            f"unknown storage URL scheme {parsed.drivername!r}; use "
            "postgresql://USER@HOST:PORT/DATABASE or sqlite:///PATH (or nothing, for the "
            "embedded store)"
        )
    driver = (
        "postgresql+psycopg"
        if parsed.drivername == "postgresql+psycopg" and importlib.util.find_spec("psycopg")
        else "postgresql+psycopg2"
    )
    return StorageURL(parsed.set(drivername=driver), "postgresql", _password_from_file())


def _sqlite(path: Path, create: bool) -> StorageURL:
    path = path.expanduser().resolve()
    if create and not path.parent.is_dir():
        raise StorageError(
            f"the folder of storage file {str(path)!r} does not exist; create it or fix the path"
        )
    return StorageURL(make_url(f"sqlite:///{path}"), "sqlite", None)


def _password_from_file() -> str | None:
    name = os.environ.get(PASSWORD_FILE_ENV)
    if not name:
        return None
    try:
        return Path(name).read_text().strip()
    except OSError as exc:
        raise StorageError(
            f"{PASSWORD_FILE_ENV} names {name!r}, which cannot be read ({exc.strerror})"
        ) from None
