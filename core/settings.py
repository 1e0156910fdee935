"""Settings, read from ``CARESHARE_*`` environment variables with embedded defaults."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import attrs

from careshare.core.policy import Policy

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_MAIL_FROM",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_UPLOAD_EXPIRY_SECONDS",
    "SMTP_SCHEMES",
    "Settings",
    "disabled_plugins",
]

DEFAULT_MAX_UPLOAD_BYTES = 1024**3
#: How long an unfinished resumable (tus) upload waits for its next bytes before it is swept.
DEFAULT_UPLOAD_EXPIRY_SECONDS = 24 * 3600.0
SECRET_FILE = "secret.key"
#: ``smtp://`` plain (or ``?starttls=true``), ``smtp+starttls://`` upgraded, ``smtps://`` TLS from the start.
SMTP_SCHEMES = ("smtp", "smtp+starttls", "smtps")
DEFAULT_MAIL_FROM = "careshare@localhost"
#: How long an upload without ``Prefer: wait`` waits for its check before answering ``202``: long
#: enough that a photo, a letter PDF or a short clip feel synchronous (201 with the final file).
DEFAULT_UPLOAD_WAIT_SECONDS = 10.0
#: The most any request waits for checks (``Prefer: wait=N`` is capped here): under a proxy's 60 s.
DEFAULT_MAX_WAIT_SECONDS = 30.0
#: A running job's lease (embedded queue) or a silent worker's grace (procrastinate) before it is retried.
DEFAULT_JOB_LEASE_SECONDS = 30.0
QUEUES = ("local", "procrastinate")


def disabled_plugins(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The plugin names ``CARESHARE_DISABLE_PLUGINS`` blocks (comma-separated), read without touching disk."""
    env = os.environ if environ is None else environ
    return frozenset(name.strip() for name in (env.get("CARESHARE_DISABLE_PLUGINS") or "").split(",") if name.strip())


@attrs.frozen
class Settings:
    """Everything a careshare process needs to know about where it runs."""

    data_dir: Path
    database_url: str
    storage_url: str
    secret_key: str
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    disabled_plugins: frozenset[str] = frozenset()
    upload_expiry_seconds: float = DEFAULT_UPLOAD_EXPIRY_SECONDS
    #: Limits and options handlers apply (the defaults of every organisation).
    policy: Policy = attrs.field(factory=Policy)
    #: Where email goes out (``smtp://user:password@host:port``); None: this server sends no email.
    smtp_url: str | None = attrs.field(default=None, repr=False)  # may hold a password
    mail_from: str = DEFAULT_MAIL_FROM
    #: Seconds an upload waits for its check when the client states no ``Prefer: wait``.
    upload_wait_seconds: float = DEFAULT_UPLOAD_WAIT_SECONDS
    #: The longest any request waits for a check.
    max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS
    #: Jobs this process runs at once (0: none; ``careshare worker`` processes run them).
    workers: int = attrs.field(factory=lambda: os.cpu_count() or 2)
    #: ``local`` (careshare's own table) or ``procrastinate`` (PostgreSQL); None: by the database.
    queue: str | None = None
    job_lease_seconds: float = DEFAULT_JOB_LEASE_SECONDS

    @property
    def queue_engine(self) -> str:
        """The queue in use: procrastinate on PostgreSQL unless told otherwise, the local table elsewhere."""
        if self.queue is not None:
            return self.queue
        return "procrastinate" if self.database_url.startswith("postgresql") else "local"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``), creating the data directory.

        ``CARESHARE_SECRET_KEY`` unset means: use the key kept in the data directory, generating it
        the first time, so tokens stay valid across restarts.
        """
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("CARESHARE_DATA_DIR") or "careshare-data").resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        database_url = env.get("CARESHARE_DATABASE_URL") or f"sqlite+aiosqlite:///{data_dir / 'careshare.db'}"
        storage_url = env.get("CARESHARE_STORAGE_URL") or (data_dir / "blobs").as_uri()
        secret_key = env.get("CARESHARE_SECRET_KEY") or _kept_secret(data_dir)
        max_upload = int(env.get("CARESHARE_MAX_UPLOAD_BYTES") or DEFAULT_MAX_UPLOAD_BYTES)
        if max_upload <= 0:
            raise ValueError("CARESHARE_MAX_UPLOAD_BYTES must be a positive number of bytes")
        expiry_hours = env.get("CARESHARE_UPLOAD_EXPIRY_HOURS")
        upload_expiry = float(expiry_hours) * 3600 if expiry_hours else DEFAULT_UPLOAD_EXPIRY_SECONDS
        if not 0 < upload_expiry < float("inf"):
            raise ValueError("CARESHARE_UPLOAD_EXPIRY_HOURS must be a positive number of hours")
        policy = Policy()
        if env.get("CARESHARE_HANDLER_TIME_LIMIT"):
            policy = attrs.evolve(policy, time_limit_seconds=float(env["CARESHARE_HANDLER_TIME_LIMIT"]))
        if env.get("CARESHARE_HANDLER_MEMORY_LIMIT"):
            policy = attrs.evolve(policy, memory_limit_bytes=int(env["CARESHARE_HANDLER_MEMORY_LIMIT"]))
        if policy.time_limit_seconds <= 0 or policy.memory_limit_bytes <= 0:
            raise ValueError("CARESHARE_HANDLER_TIME_LIMIT and CARESHARE_HANDLER_MEMORY_LIMIT must be positive")
        disabled = disabled_plugins(env)
        smtp_url = (env.get("CARESHARE_SMTP_URL") or "").strip() or None
        if smtp_url is not None and not _valid_smtp_url(smtp_url):
            # The URL may hold a password: name only what is wrong with it.
            raise ValueError(f"CARESHARE_SMTP_URL must be {', '.join(s + '://host:port' for s in SMTP_SCHEMES)}")
        mail_from = (env.get("CARESHARE_MAIL_FROM") or "").strip() or DEFAULT_MAIL_FROM
        if "@" not in mail_from:
            raise ValueError("CARESHARE_MAIL_FROM must be an email address")
        upload_wait = _seconds(env, "CARESHARE_UPLOAD_WAIT", DEFAULT_UPLOAD_WAIT_SECONDS)
        max_wait = _seconds(env, "CARESHARE_MAX_WAIT", DEFAULT_MAX_WAIT_SECONDS)
        lease = _seconds(env, "CARESHARE_JOB_LEASE_SECONDS", DEFAULT_JOB_LEASE_SECONDS)
        if lease <= 0:
            raise ValueError("CARESHARE_JOB_LEASE_SECONDS must be a positive number of seconds")
        workers = int(env.get("CARESHARE_WORKERS") or (os.cpu_count() or 2))
        if workers < 0:
            raise ValueError("CARESHARE_WORKERS must be 0 or more")
        queue = (env.get("CARESHARE_QUEUE") or "").strip() or None
        if queue is not None and queue not in QUEUES:
            raise ValueError(f"CARESHARE_QUEUE must be one of {', '.join(QUEUES)}")
        if queue == "procrastinate" and not database_url.startswith("postgresql"):
            raise ValueError("CARESHARE_QUEUE=procrastinate needs a PostgreSQL CARESHARE_DATABASE_URL")
        return cls(
            data_dir=data_dir,
            database_url=database_url,
            storage_url=storage_url,
            secret_key=secret_key,
            max_upload_bytes=max_upload,
            disabled_plugins=disabled,
            upload_expiry_seconds=upload_expiry,
            policy=policy,
            smtp_url=smtp_url,
            mail_from=mail_from,
            upload_wait_seconds=upload_wait,
            max_wait_seconds=max_wait,
            workers=workers,
            queue=queue,
            job_lease_seconds=lease,
        )


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds") from None
    if not 0 <= value < float("inf"):
        raise ValueError(f"{name} must be a number of seconds, 0 or more")
    return value


def _valid_smtp_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is no number)
    except ValueError:
        return False
    return parts.scheme.lower() in SMTP_SCHEMES and bool(parts.hostname)


def _kept_secret(data_dir: Path) -> str:
    path = data_dir / SECRET_FILE
    try:
        kept = path.read_text().strip()
    except FileNotFoundError:
        kept = ""
    if kept:
        return kept
    # Write a complete temporary file, then link it into place: the key file appears whole or not
    # at all, and of two processes starting together the first link wins and both use its key.
    fd, temporary = tempfile.mkstemp(dir=data_dir, prefix=".secret-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        try:
            os.link(temporary, path)
        except FileExistsError:
            if not path.read_text().strip():  # an empty file left by an older version
                os.replace(temporary, path)
                return path.read_text().strip()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return path.read_text().strip()
