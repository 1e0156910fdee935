"""Settings, read from ``CARESHARE_*`` environment variables with embedded defaults.

Core's own settings are fields of :class:`Settings`; a plugin declares the variables it reads
(``careshare_settings``, each a :class:`Setting`) and reads them with :meth:`Settings.get` from
the same environment, checked when the runtime is built (:func:`check_settings`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import urlsplit

import attrs

from careshare.core.policy import Policy

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import pluggy

__all__ = [
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_UPLOAD_EXPIRY_SECONDS",
    "Setting",
    "Settings",
    "check_settings",
    "declared_settings",
    "disabled_plugins",
]

T = TypeVar("T")

#: Every variable careshare and its plugins read starts so.
PREFIX = "CARESHARE_"
DEFAULT_MAX_UPLOAD_BYTES = 1024**3
#: How long an unfinished resumable (tus) upload waits for its next bytes before it is swept.
DEFAULT_UPLOAD_EXPIRY_SECONDS = 24 * 3600.0
SECRET_FILE = "secret.key"
#: Where people outside the app reach this server: the base of expiring links in emails.
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
#: How long an upload without ``Prefer: wait`` waits for its check before answering ``202``: long
#: enough that a photo, a short document or a short clip feel synchronous (201 with the final file).
DEFAULT_UPLOAD_WAIT_SECONDS = 10.0
#: The most any request waits for checks (``Prefer: wait=N`` is capped here): under a proxy's 60 s.
DEFAULT_MAX_WAIT_SECONDS = 30.0
#: A running job's lease (embedded queue) or a silent worker's grace (procrastinate) before it is retried.
DEFAULT_JOB_LEASE_SECONDS = 30.0
#: The sweep (core/sweep.py) removes crash leftovers only once they are this old: live uploads and
#: running checks, in any process sharing the store, are always younger.
DEFAULT_SWEEP_AGE_SECONDS = 3600.0
#: Slow and stuck clients (host/limits.py): the longest wait for a request body's next bytes (a JSON
#: body must also arrive whole in this time), and for a request's head from the connection's start.
DEFAULT_BODY_READ_TIMEOUT_SECONDS = 30.0
DEFAULT_HEADER_TIMEOUT_SECONDS = 20.0
#: Upload bodies arriving at once, per caller and per process; patient uploads an hour; failed tokens
#: a minute per client address (0: no limit for the last two).
DEFAULT_MAX_UPLOADS_PER_CALLER = 16
DEFAULT_MAX_UPLOADS = 64
DEFAULT_PATIENT_UPLOADS_PER_HOUR = 200
DEFAULT_TOKEN_FAILURES_PER_MINUTE = 30
QUEUES = ("local", "procrastinate")
#: How long one step of a malware scan may take (connect, send a block, wait for the verdict).
DEFAULT_CLAMD_TIMEOUT_SECONDS = 120.0


def disabled_plugins(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The plugin names ``CARESHARE_DISABLE_PLUGINS`` blocks (comma-separated), read without touching disk."""
    env = os.environ if environ is None else environ
    return frozenset(name.strip() for name in (env.get("CARESHARE_DISABLE_PLUGINS") or "").split(",") if name.strip())


@attrs.frozen
class Setting(Generic[T]):
    """One ``CARESHARE_*`` variable a plugin reads, declared with ``careshare_settings``.

    Unset or blank means ``default``. A wrong value is refused naming the variable and what it
    must be (``expected``), never the value itself: it may hold a password.
    """

    variable: str
    default: T
    #: What it is for, in one sentence (listed by ``careshare plugins``).
    description: str
    #: The value from the variable's stripped text; raises ``ValueError`` when the text is wrong.
    parse: Callable[[str], T]
    #: What a right value is, ending "<variable> must be ..." (``"a positive number of bytes"``).
    expected: str
    #: The value may hold a password or key: never shown, only whether it is set.
    secret: bool = False

    def read(self, environ: Mapping[str, str]) -> T:
        """The value in ``environ``: the default when unset or blank, else parsed (or ``ValueError``)."""
        raw = (environ.get(self.variable) or "").strip()
        if not raw:
            return self.default
        try:
            return self.parse(raw)
        except ValueError:
            raise ValueError(f"{self.variable} must be {self.expected}") from None


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
    #: Seconds an upload waits for its check when the client states no ``Prefer: wait``.
    upload_wait_seconds: float = DEFAULT_UPLOAD_WAIT_SECONDS
    #: The longest any request waits for a check.
    max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS
    #: Jobs this process runs at once (0: none; ``careshare worker`` processes run them).
    workers: int = attrs.field(factory=lambda: os.cpu_count() or 2)
    #: ``local`` (careshare's own table) or ``procrastinate`` (PostgreSQL); None: by the database.
    queue: str | None = None
    job_lease_seconds: float = DEFAULT_JOB_LEASE_SECONDS
    #: Age a staging file, work directory, held copy or unowned blob must reach before the sweep removes it.
    sweep_age_seconds: float = DEFAULT_SWEEP_AGE_SECONDS
    #: Slow and stuck clients, concurrent uploads and rate limits (``host/limits.py``, ``host/server.py``).
    body_read_timeout_seconds: float = DEFAULT_BODY_READ_TIMEOUT_SECONDS
    header_timeout_seconds: float = DEFAULT_HEADER_TIMEOUT_SECONDS
    max_uploads_per_caller: int = DEFAULT_MAX_UPLOADS_PER_CALLER
    max_uploads: int = DEFAULT_MAX_UPLOADS
    patient_uploads_per_hour: int = DEFAULT_PATIENT_UPLOADS_PER_HOUR
    token_failures_per_minute: int = DEFAULT_TOKEN_FAILURES_PER_MINUTE
    #: The base URL of expiring links (``<public_url>/v1/links/<token>``), without a trailing slash.
    public_url: str = DEFAULT_PUBLIC_URL
    #: Organisations whose tokens are accepted without ``careshare org create`` (their rows are made on first sight).
    allowed_orgs: frozenset[str] = frozenset()
    #: ClamAV's daemon scanning every upload: a unix socket path or ``tcp://host:port``; None: no scanning.
    clamd: str | None = None
    clamd_timeout_seconds: float = DEFAULT_CLAMD_TIMEOUT_SECONDS
    #: The ``CARESHARE_*`` variables as read, for the settings plugins declare (:meth:`get`).
    #: Never shown or compared: values may be passwords.
    environ: Mapping[str, str] = attrs.field(factory=dict, repr=False, eq=False)

    def get(self, setting: Setting[T]) -> T:
        """A plugin's setting, read from the environment these settings came from."""
        return setting.read(self.environ)

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
        data_dir = data_dir_of(env)
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
        upload_wait = _seconds(env, "CARESHARE_UPLOAD_WAIT", DEFAULT_UPLOAD_WAIT_SECONDS)
        max_wait = _seconds(env, "CARESHARE_MAX_WAIT", DEFAULT_MAX_WAIT_SECONDS)
        lease = _seconds(env, "CARESHARE_JOB_LEASE_SECONDS", DEFAULT_JOB_LEASE_SECONDS)
        if lease <= 0:
            raise ValueError("CARESHARE_JOB_LEASE_SECONDS must be a positive number of seconds")
        sweep_age = _seconds(env, "CARESHARE_SWEEP_AGE_SECONDS", DEFAULT_SWEEP_AGE_SECONDS)
        workers = int(env.get("CARESHARE_WORKERS") or (os.cpu_count() or 2))
        if workers < 0:
            raise ValueError("CARESHARE_WORKERS must be 0 or more")
        queue = (env.get("CARESHARE_QUEUE") or "").strip() or None
        if queue is not None and queue not in QUEUES:
            raise ValueError(f"CARESHARE_QUEUE must be one of {', '.join(QUEUES)}")
        if queue == "procrastinate" and not database_url.startswith("postgresql"):
            raise ValueError("CARESHARE_QUEUE=procrastinate needs a PostgreSQL CARESHARE_DATABASE_URL")
        public_url = _public_url(env.get("CARESHARE_PUBLIC_URL"))
        allowed_orgs = frozenset(o.strip() for o in (env.get("CARESHARE_ORGS") or "").split(",") if o.strip())
        clamd = (env.get("CARESHARE_CLAMD") or "").strip() or None
        if clamd is not None and not _valid_clamd(clamd):
            raise ValueError("CARESHARE_CLAMD must be clamd's unix socket (an absolute path) or tcp://host:port")
        clamd_timeout = _seconds(env, "CARESHARE_CLAMD_TIMEOUT", DEFAULT_CLAMD_TIMEOUT_SECONDS)
        if clamd_timeout <= 0:
            raise ValueError("CARESHARE_CLAMD_TIMEOUT must be a positive number of seconds")
        return cls(
            data_dir=data_dir,
            database_url=database_url,
            storage_url=storage_url,
            secret_key=secret_key,
            max_upload_bytes=max_upload,
            disabled_plugins=disabled,
            upload_expiry_seconds=upload_expiry,
            policy=policy,
            upload_wait_seconds=upload_wait,
            max_wait_seconds=max_wait,
            workers=workers,
            queue=queue,
            job_lease_seconds=lease,
            sweep_age_seconds=sweep_age,
            **_client_limits(env),
            public_url=public_url,
            allowed_orgs=allowed_orgs,
            clamd=clamd,
            clamd_timeout_seconds=clamd_timeout,
            environ={name: value for name, value in env.items() if name.startswith(PREFIX)},
        )


def declared_settings(pm: pluggy.PluginManager) -> dict[str, list[Setting[Any]]]:
    """The settings each loaded plugin declares (``careshare_settings``), by plugin name.

    A variable declared twice (by two plugins, or one plugin twice) is an error: the two would
    read one value two ways.
    """
    declared: dict[str, list[Setting[Any]]] = {}
    seen: set[str] = set()
    for impl in reversed(pm.hook.careshare_settings.get_hookimpls()):
        name = str(pm.get_name(impl.plugin))
        for setting in impl.function():
            if setting.variable in seen:
                raise ValueError(f"setting {setting.variable} is declared twice")
            seen.add(setting.variable)
            declared.setdefault(name, []).append(setting)
    return declared


def check_settings(pm: pluggy.PluginManager, settings: Settings) -> None:
    """Read every setting the loaded plugins declare, so a wrong one fails at start-up, not on first use."""
    for declared in declared_settings(pm).values():
        for setting in declared:
            settings.get(setting)


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


def _public_url(raw: str | None) -> str:
    url = (raw or "").strip().rstrip("/") or DEFAULT_PUBLIC_URL
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is no number)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(
            "CARESHARE_PUBLIC_URL must be an http:// or https:// URL such as https://careshare.example.org"
        )
    return url


def _valid_clamd(address: str) -> bool:
    if address.startswith("tcp://"):
        try:
            parts = urlsplit(address)
            return bool(parts.hostname) and parts.port is not None and not parts.path.strip("/")
        except ValueError:
            return False
    return Path(address.removeprefix("unix://")).is_absolute()


def data_dir_of(env: Mapping[str, str]) -> Path:
    """The data directory ``env`` names: ``CARESHARE_DATA_DIR``, else ``./careshare-data`` (absolute)."""
    return Path(env.get("CARESHARE_DATA_DIR") or "careshare-data").resolve()


def secret_is_kept(env: Mapping[str, str]) -> bool:
    """Whether ``env`` gives a signing key already: ``CARESHARE_SECRET_KEY``, or a kept ``secret.key``."""
    if env.get("CARESHARE_SECRET_KEY"):
        return True
    try:
        return bool((data_dir_of(env) / SECRET_FILE).read_text().strip())
    except OSError:
        return False


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


def _client_limits(env: Mapping[str, str]) -> dict[str, float | int]:
    """The timeouts, upload caps and rate limits against slow, stuck and hostile clients."""
    values: dict[str, float | int] = {}
    for field, name, default in (
        ("body_read_timeout_seconds", "CARESHARE_BODY_READ_TIMEOUT", DEFAULT_BODY_READ_TIMEOUT_SECONDS),
        ("header_timeout_seconds", "CARESHARE_HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT_SECONDS),
    ):
        values[field] = _seconds(env, name, default)
        if values[field] <= 0:
            raise ValueError(f"{name} must be a positive number of seconds")
    for field, name, default, least in (
        ("max_uploads_per_caller", "CARESHARE_MAX_UPLOADS_PER_CALLER", DEFAULT_MAX_UPLOADS_PER_CALLER, 1),
        ("max_uploads", "CARESHARE_MAX_UPLOADS", DEFAULT_MAX_UPLOADS, 1),
        ("patient_uploads_per_hour", "CARESHARE_PATIENT_UPLOADS_PER_HOUR", DEFAULT_PATIENT_UPLOADS_PER_HOUR, 0),
        ("token_failures_per_minute", "CARESHARE_TOKEN_FAILURES_PER_MINUTE", DEFAULT_TOKEN_FAILURES_PER_MINUTE, 0),
    ):
        raw = (env.get(name) or "").strip()
        if raw and (not raw.isdigit() or int(raw) < least):
            raise ValueError(f"{name} must be a whole number, {least} or more")
        values[field] = int(raw) if raw else default
    return values
