"""Storage and tracking URIs: which of them name a local file or a database server, how to reach
one without a traceback, and how to print them safely."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse, urlsplit, urlunsplit

from foundation.errors import AmpStudyError

SQLITE_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql", "postgresql+psycopg2", "postgres")
CONNECT_TIMEOUT = 15  # seconds; an unreachable server fails instead of hanging


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///PATH` URI (relative as written), None for any other URI."""
    if not uri.startswith(SQLITE_PREFIX):
        return None
    return Path(uri.removeprefix(SQLITE_PREFIX))


def masked(uri: str) -> str:
    """`uri` with any password replaced by ***, for messages and logs."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def without_credentials(uri: str) -> str:
    """`uri` with any user:password dropped, for addresses a user is given to open (UI links)."""
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, parts.query, parts.fragment))


def is_postgres(url: str) -> bool:
    return urlparse(url).scheme in POSTGRES_SCHEMES


def sqlalchemy_url(url: str) -> str:
    """SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; ampstudy ships psycopg2-binary, so
    name that driver unless psycopg 3 is importable or the URL names a driver itself."""
    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None:
            return f"postgresql+psycopg2{sep}{rest}"
        return f"postgresql{sep}{rest}"
    return url


@contextlib.contextmanager
def unreachable_as_error(url: str, what: str, fix: str) -> Iterator[None]:
    """A database that cannot be reached (server down, wrong host/password, unwritable file) ends in
    one line naming `what` and the URL, its password masked, instead of a SQLAlchemy traceback."""
    import sqlalchemy

    try:
        yield
    except sqlalchemy.exc.DBAPIError as err:
        reason = (str(getattr(err, "orig", None) or err).strip().splitlines() or ["unknown error"])[0]
        raise AmpStudyError(f"cannot open {what} {masked(url)}: {reason}; check that the database server runs "
                            f"and the host, port, database name, user and password ({fix})") from None


def probe_postgres(url: str, what: str, fix: str) -> None:
    """Connect to the PostgreSQL database of `url` once, within CONNECT_TIMEOUT: a failure is one line
    (see unreachable_as_error) before a library that retries for a minute gets to it."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(sqlalchemy_url(url), connect_args={"connect_timeout": CONNECT_TIMEOUT})
    try:
        with unreachable_as_error(url, what, fix), engine.connect():
            pass
    finally:
        engine.dispose()
