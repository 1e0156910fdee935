"""Hook specifications: the whole contract between careshare and its plugins.

Each function here is empty; its docstring is the reference documentation of the hook. A plugin
implements a hook by defining a function of the same name decorated with ``careshare.hookimpl``,
taking only the arguments it uses. Plugins register through the ``careshare`` entry point group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from careshare import hookspec

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy.ext.asyncio import AsyncConnection

    from careshare.core.kinds import Kind
    from careshare.core.models import Identification, Patient, Processed, Source, StoredFile
    from careshare.core.notifications import Notification
    from careshare.core.policy import Policy
    from careshare.core.problems import Problem
    from careshare.core.runtime import Careshare
    from careshare.core.scanning import ScanContent, ScanVerdict
    from careshare.core.settings import Setting
    from careshare.core.sharing import Shared
    from careshare.core.targets import Attachment, Item, Target

__all__ = [
    "careshare_archive",
    "careshare_background",
    "careshare_check_attachment",
    "careshare_commands",
    "careshare_contract",
    "careshare_deliver",
    "careshare_identify",
    "careshare_kinds",
    "careshare_migrations",
    "careshare_process",
    "careshare_routes",
    "careshare_scan",
    "careshare_settings",
    "careshare_shared",
    "careshare_targets",
    "careshare_withdrawn_with",
]


# -- targets (channels) -------------------------------------------------------------------------


@hookspec
def careshare_targets() -> list[Target]:
    """The attachment targets this plugin offers (a message, a template, a document sent for signing).

    Each target declares its name, which kinds of file it accepts (``accepts=None``: every kind
    the file-type plugins declare), its limits (bytes per file, bytes per item, how many files),
    whether items must be drafts, and which rendition the patient receives.

    :return: a list of targets; an empty list for a plugin with none.
    """


@hookspec
def careshare_check_attachment(
    target: Target, item: Item, file: StoredFile, attached: list[Attachment]
) -> list[Problem]:
    """Rules beyond a target's declarative limits, checked before a file is attached.

    :param target: the target being attached to.
    :param item: the item (a message, ...) that would carry the file.
    :param file: the :class:`~careshare.core.models.StoredFile` to attach.
    :param attached: the files already attached to the item.
    :return: a list of :class:`~careshare.core.problems.Problem`; empty when the plugin has no objection.
    """


@hookspec
def careshare_shared(event: Shared) -> None:
    """Something reached a patient: a message sent, a document sent, a visit booked.

    Called inside the sharing transaction, so a plugin can write notifications atomically with it.

    :param event: what was shared, with whom, from which item.
    """


@hookspec
def careshare_withdrawn_with(conn: AsyncConnection, target: str, item_id: str) -> list[tuple[str, str]]:
    """The items that leave the patient together with one a clinician withdraws (``.../revoke``).

    For a channel whose one item reaches the patient as several shares (a consent request and a
    copy of each of its packs): withdrawing the request withdraws the copies too, with the same
    reason, audited, without a notice of their own. Called inside the revoking transaction, once,
    when the item is first withdrawn.

    :param conn: the revoking transaction's connection.
    :param target: the withdrawn item's target (``consent-request``).
    :param item_id: the withdrawn item's id.
    :return: ``(target, item id)`` pairs of the organisation's shared items; empty when none go with it; may be an awaitable.
    """


@hookspec
def careshare_archive(patient: Patient) -> list[Any]:
    """The items this plugin contributes to a patient's archive (``GET /v1/me/archive``).

    :param patient: the :class:`~careshare.core.models.Patient` whose archive is being built.
    :return: archive entries, each with its attachments; may be an awaitable.
    """


@hookspec
def careshare_contract() -> list[Any]:
    """How the contract kit (``careshare.testing``) drives this plugin's targets and routes in its tests.

    Called only by the kit, never by a running app: import the testing code inside the
    implementation, as ``careshare_routes`` imports the web layer. What the kit cannot read from
    the declarations (how to make an item and attach a file through the routes, an object behind
    each path parameter, a body each route accepts) comes from here; the kit fails, naming the
    target, while a loaded target has no adapter.

    :return: a list of :class:`careshare.testing.contract.Contract`.
    """


@hookspec
def careshare_migrations() -> list[Path]:
    """Alembic version directories holding this plugin's table migrations.

    A plugin owns its tables on the shared metadata (``careshare.core.db.metadata``) and ships the
    migrations that create them; the host runs every plugin's migrations at start-up.

    :return: a list of directories of Alembic revision scripts.
    """


# -- file types -------------------------------------------------------------------------------


@hookspec
def careshare_kinds() -> list[Kind]:
    """The kinds of file this plugin identifies and processes, and what core needs to know of each.

    Core names no kind: targets that accept every kind list these, refusals list their nouns, and
    each kind brings its policy section (``Kind.options``, read by its handler with
    ``policy.section(...)``), the options a clinician may render its files again with
    (``Kind.render_options``) and, where a target leaves it out, a refusal of its own
    (``Kind.refusal``: a stable code and a boolean rule in ``GET /v1/targets``). Declare every kind
    ``careshare_identify`` can answer; a kind declared twice must be declared the same way.

    :return: a list of :class:`~careshare.core.kinds.Kind`; empty for a plugin with none.
    """


@hookspec(firstresult=True)
def careshare_identify(head: bytes, filename: str) -> Identification | None:
    """Say what kind of file this is, from its first bytes.

    Decide from the bytes (magic numbers) only; ``filename`` is the client's claim and may be used
    to break a tie, never to accept a file. The first non-None answer wins.

    :param head: the first bytes of the upload (at least 64 KiB, or the whole file if smaller).
    :param filename: the sanitised display name the client gave.
    :return: an :class:`~careshare.core.models.Identification`, or None when not recognised.
    """


@hookspec(firstresult=True)
def careshare_process(source: Source, kind: str, policy: Policy) -> Processed | None:
    """Check a file of ``kind`` and make its renditions, or refuse it.

    Runs in the file's check job, after the upload was acknowledged, on whichever worker takes
    the job; in a process of its own when the plugin is an importable module (killed after
    ``policy.time_limit_seconds``, memory capped at ``policy.memory_limit_bytes``), else in a
    thread. It may run again for the same file (a worker that died is retried). Refuse by raising
    :class:`~careshare.core.problems.Problem` with a specific code; any other exception refuses
    the file as ``file-unprocessable``. Write rendition files inside ``source.workdir`` only.
    The first non-None answer wins.

    :param source: the held upload (:class:`~careshare.core.models.Source`).
    :param kind: the kind ``careshare_identify`` gave.
    :param policy: the organisation's limits and options (:class:`~careshare.core.policy.Policy`);
        the handler's own options are its section, ``policy.section(TheOptionsClass)``.
    :return: a :class:`~careshare.core.models.Processed`, or None when this plugin does not handle ``kind``.
    """


@hookspec
def careshare_scan(content: ScanContent, cs: Careshare) -> ScanVerdict | None:
    """Scan an uploaded file for malware before it can become ``ready`` (and so be shared).

    Runs in the file's check job on the held original, before ``careshare_process``. Every
    scanner that answers must say ``clean``: one ``infected`` verdict refuses the file
    (``file-infected``), one ``too-large`` (over the scanner's limits: not known to be clean)
    refuses it as ``file-too-large-to-scan``. Raise
    :class:`~careshare.core.scanning.ScannerUnavailable` when the scanner cannot answer now: the
    file stays ``processing`` (``check.state`` ``waiting-for-scanner``) and is tried again later,
    without counting toward the attempts that end in refusal. Any other exception fails the
    attempt like a crashed check. May be a coroutine function (it usually talks to a daemon).

    :param content: the file's size, hash and kind, and ``chunks()`` streaming its bytes.
    :param cs: the running :class:`~careshare.core.runtime.Careshare` (its settings).
    :return: a :class:`~careshare.core.scanning.ScanVerdict`, or None when this scanner is not
        configured (nothing scanned).
    """


# -- delivery ---------------------------------------------------------------------------------


@hookspec
def careshare_deliver(notification: Notification, cs: Careshare | None) -> bool | None:
    """Deliver a notification over one channel (in-app inbox, email, webhook).

    Delivery is at least once: a notification may arrive again after a retry, so receivers
    de-duplicate by its key. Notifications never hold file contents or clinical text.
    A plain function runs in a worker thread; a coroutine function runs on the event loop.

    :param notification: the notification to deliver.
    :param cs: the running :class:`~careshare.core.runtime.Careshare` (settings, blob store,
        database), for a plugin that needs more than the notification (an email with the item's
        files); None when the caller has none to give.
    :return: True when delivered, False to be retried later, None when this plugin does not deliver it.
    :raises careshare.core.notifications.Undeliverable: it can never be delivered over this channel
        (an email larger than the server takes): ``failed`` at once, no retries; the message,
        naming the cause and never the patient, is kept as the delivery's ``last_error``.
    """


# -- settings ---------------------------------------------------------------------------------


@hookspec
def careshare_settings() -> list[Setting[Any]]:
    """The settings this plugin reads, declared so they are read, checked and listed with core's.

    Like tox's ``tox_add_core_config``: a plugin declares each variable (its ``CARESHARE_*``
    name, default, parser and one sentence), and reads the value with ``cs.settings.get(SETTING)``
    from the same environment core's settings come from. Every declared value is checked when the
    runtime is built, so a typo fails at start-up naming the variable (never its value), and
    ``careshare plugins`` lists each plugin's variables. A variable declared by two plugins is an error.

    :return: a list of :class:`~careshare.core.settings.Setting`; empty for a plugin with none.
    """


# -- host -------------------------------------------------------------------------------------


@hookspec
def careshare_routes() -> list[Any]:
    """HTTP routes this plugin serves: Litestar controllers or route handlers.

    The host mounts them; disabling the plugin removes them. Core never imports the web framework,
    so only plugins meant for the Litestar host implement this hook.

    :return: a list of controllers or route handlers.
    """


@hookspec
def careshare_console() -> list[Any]:
    """Pages this plugin adds to the clinic's web console and the patient's view.

    Like :func:`careshare_routes`, for people rather than programs: each entry is a
    ``careshare.web.ConsolePages`` (handlers under ``/console``, a folder of Jinja templates, the
    navigation entries). Disabling the plugin removes its pages and its links; the console's core
    names no plugin.

    :return: a list of ``ConsolePages``.
    """


@hookspec
def careshare_background(cs: Careshare) -> list[Any]:
    """Work the host runs beside the API for as long as it serves (reminders falling due, sweeps).

    The host starts each as an asyncio task once migrations have run, next to notification
    delivery, and cancels it on shutdown. A job runs until cancelled: it catches and logs the
    failure of one round itself and carries on. Several processes may run the same job, so a job
    makes its effects idempotent in the database (a unique key), never by assuming it runs alone.

    :param cs: the running :class:`~careshare.core.runtime.Careshare` (settings, plugins, store, engines).
    :return: a list of coroutines, or of coroutine functions taking no argument.
    """


@hookspec
def careshare_commands() -> list[Any]:
    """Commands this plugin adds to the ``careshare`` command line (for cron jobs and operators).

    A ``typer.Typer`` app with a ``name`` becomes a group (``careshare <name> <command>``); a plain
    function becomes a command named after it. Import heavy modules inside the command, so
    ``careshare --help`` stays fast.

    :return: a list of Typer apps or command functions.
    """
