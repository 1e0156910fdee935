"""Letter email over real SMTP: the MIME message (stdlib ``email``) and one send (stdlib ``smtplib``).

``CARESHARE_SMTP_URL`` names the server: ``smtp://host:port`` (plain; ``?starttls=true`` to
upgrade), ``smtp+starttls://host:port`` (upgraded), ``smtps://host:port`` (TLS from the start),
each with an optional ``user:password@`` to log in. The subject and the text say only who wrote;
the letter itself travels as the PDF attachment, with every file the letter carries, or, when the
files are too large to attach, with an expiring download link for each.

"Too large" is ours (``CARESHARE_MAIL_MAX_ATTACHMENT_BYTES``) and the server's: :func:`send` reads
the ``SIZE`` the server states in its EHLO reply (RFC 1870), measures the message as it goes on
the wire, and sends the links version instead when the attached one does not fit (or the server
refuses it with ``552``); when even that is over the server's ``SIZE`` nothing is sent and
:class:`MessageTooLarge` says by how much. smtplib names the size in ``MAIL FROM`` (``SIZE=``)
whenever the server supports the extension, so a server may also refuse before any byte of it.
"""

from __future__ import annotations

import contextlib
import io
import mimetypes
import re
import smtplib
import ssl
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.utils import format_datetime
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

import attrs

from careshare.core.settings import Setting

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from datetime import datetime

__all__ = [
    "MAIL_FROM",
    "MAIL_MAX_ATTACHMENT_BYTES",
    "SETTINGS",
    "SMTP_SCHEMES",
    "SMTP_URL",
    "Fallback",
    "MailAttachment",
    "MailLink",
    "MessageTooLarge",
    "SmtpServer",
    "build_message",
    "message_id",
    "refusal_reason",
    "send",
    "server_size_limit",
    "wire_size",
]

#: A slow server is simply retried: this runs in a worker thread of the delivery round.
TIMEOUT_SECONDS = 30.0
#: ``smtp://`` plain (or ``?starttls=true``), ``smtp+starttls://`` upgraded, ``smtps://`` TLS from the start.
SMTP_SCHEMES = ("smtp", "smtp+starttls", "smtps")
#: Submission ports by scheme.
DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}
DEFAULT_MAIL_FROM = "careshare@localhost"
#: The most an email carries attached (letter PDF and files, before encoding): base64 adds a
#: third, so 15 MB travel as about 20 MB, under what common mail providers accept.
DEFAULT_MAIL_MAX_ATTACHMENT_BYTES = 15_000_000
#: Room kept under the server's ``SIZE`` for what it adds or counts besides our bytes (its Received
#: header, the envelope, dot-stuffing): a message must fit in ``SIZE`` less this.
SIZE_MARGIN_BYTES = 1_000
#: The SMTP reply to mail over what the server takes (RFC 1870, RFC 5321: exceeded storage allocation).
TOO_LARGE_REPLY = 552
_ADDRESS = re.compile(r"<?[^\s<>@]+@[^\s<>@]+>?")


def _smtp_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is no number)
    except ValueError:
        raise ValueError("not a URL") from None
    if parts.scheme.lower() not in SMTP_SCHEMES or not parts.hostname:
        raise ValueError("not an SMTP URL")
    return url


def _address(value: str) -> str:
    if "@" not in value:
        raise ValueError("not an address")
    return value


def _positive_bytes(value: str) -> int:
    if not value.isdigit() or int(value) <= 0:
        raise ValueError("not a positive whole number")
    return int(value)


#: Where letter emails go out (``smtp://user:password@host:port``); unset: this server sends no email.
SMTP_URL: Setting[str | None] = Setting(
    "CARESHARE_SMTP_URL",
    None,
    "Where letter emails go out (smtp://user:password@host:port); unset: no email is sent.",
    parse=_smtp_url,
    expected=", ".join(f"{scheme}://host:port" for scheme in SMTP_SCHEMES),
    secret=True,  # may hold a password
)
MAIL_FROM = Setting(
    "CARESHARE_MAIL_FROM",
    DEFAULT_MAIL_FROM,
    "The From address of letter emails.",
    parse=_address,
    expected="an email address",
)
MAIL_MAX_ATTACHMENT_BYTES = Setting(
    "CARESHARE_MAIL_MAX_ATTACHMENT_BYTES",
    DEFAULT_MAIL_MAX_ATTACHMENT_BYTES,
    "Over this many bytes of files, a letter email carries expiring links to them instead.",
    parse=_positive_bytes,
    expected="a positive number of bytes",
)
#: What the letters plugin declares (``careshare_settings``).
SETTINGS = (SMTP_URL, MAIL_FROM, MAIL_MAX_ATTACHMENT_BYTES)


@attrs.frozen
class SmtpServer:
    host: str
    port: int
    tls: bool  # TLS from the first byte (smtps)
    starttls: bool
    user: str | None = attrs.field(default=None, repr=False)
    password: str | None = attrs.field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in SMTP_SCHEMES or not parts.hostname:
            raise ValueError(f"CARESHARE_SMTP_URL must be one of {', '.join(SMTP_SCHEMES)} with a host")
        options = {k.lower(): v[-1].lower() for k, v in parse_qs(parts.query).items()}
        return cls(
            host=parts.hostname,
            port=parts.port or DEFAULT_PORTS.get(scheme, 25),
            tls=scheme == "smtps",
            starttls=scheme == "smtp+starttls" or options.get("starttls") in ("1", "true", "yes"),
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


@attrs.frozen
class MailAttachment:
    filename: str
    media_type: str
    data: bytes = attrs.field(repr=False)


@attrs.frozen
class MailLink:
    """A file the email names with a download link instead of carrying it."""

    filename: str
    media_type: str
    size: int
    url: str = attrs.field(repr=False)  # holds the link's secret
    expires_at: datetime


def message_id(letter_id: str, mail_from: str) -> str:
    """The same for every try of one letter's email, so receivers can drop a repeat."""
    domain = mail_from.rsplit("@", 1)[-1].strip("<> ") or "careshare"
    return f"<letter-{letter_id}@{domain}>"


def attachment_name(filename: str, media_type: str) -> str:
    """The file's name with the extension of what is sent (a DICOM scan travels as its PNG)."""
    extension = {"image/jpeg": ".jpg"}.get(media_type) or mimetypes.guess_extension(media_type) or ""
    stem = filename.rsplit(".", 1)[0] if "." in filename else filename
    return f"{stem or 'file'}{extension}"


def build_message(
    *,
    letter_id: str,
    mail_from: str,
    to: str,
    organisation: str,
    sent_at: datetime,
    pdf: bytes,
    files: list[MailAttachment],
    links: Sequence[MailLink] = (),
) -> EmailMessage:
    """The letter's email: the PDF attached, and each file either attached (``files``) or linked (``links``)."""
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = to
    # No clinical text in the subject or the text: mail servers and lock screens show them.
    message["Subject"] = f"A letter from {organisation}"
    message["Date"] = format_datetime(sent_at)
    message["Message-ID"] = message_id(letter_id, mail_from)
    enclosed = f" and {len(files)} file{'s' if len(files) != 1 else ''}" if files else ""
    text = (
        f"{organisation} has sent you a letter. It is attached as a PDF{enclosed}.\nYou can also read it in the app.\n"
    )
    if links:
        until = min(link.expires_at for link in links)
        text += (
            f"\nThe letter comes with {len(links)} file{'s' if len(links) != 1 else ''} too large to attach."
            f" Download {'them' if len(links) != 1 else 'it'} with these links before {until:%d %B %Y, %H:%M} UTC"
            " (each link opens one file; the app keeps them for good):\n\n"
        )
        text += "".join(
            f"{attachment_name(link.filename, link.media_type)} ({_megabytes(link.size)})\n{link.url}\n\n"
            for link in links
        )
    message.set_content(text)
    message.add_attachment(pdf, maintype="application", subtype="pdf", filename="letter.pdf")
    for file in files:
        maintype, _, subtype = file.media_type.partition("/")
        message.add_attachment(
            file.data,
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            filename=attachment_name(file.filename, file.media_type),
        )
    return message


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB" if size >= 100_000 else f"{max(size // 1000, 1)} kB"


class MessageTooLarge(Exception):
    """Even the smallest version of the email is over what the SMTP server takes: it is not sent, for good."""

    def __init__(self, size: int, limit: int, *, linked: bool) -> None:
        super().__init__(size, limit, linked)
        self.size = size
        self.limit = limit
        self.linked = linked

    def __str__(self) -> str:
        # Sizes only: what the clinic needs to act (a larger limit, or the app alone), no patient data.
        how = "with its files as links" if self.linked else "with the letter PDF"
        return (
            f"not sent: the email is {self.size:,} bytes {how}, over the mail server's SIZE limit of"
            f" {self.limit:,} bytes ({SIZE_MARGIN_BYTES:,} kept for its own headers)"
        )


@attrs.frozen
class Fallback:
    """The smaller version of the email: files as links instead of attached.

    ``probe`` is that version with stand-in links (URLs as long as the real ones): it is measured
    first, so a server too small for it too leaves no link made. ``make`` makes the real links and
    the message carrying them (called at most once, only when the probe fits).
    """

    probe: EmailMessage = attrs.field(repr=False)
    make: Callable[[], EmailMessage] = attrs.field(repr=False)


def wire_size(message: EmailMessage) -> int:
    """The message's bytes as smtplib sends them (CRLF line ends) and RFC 1870's ``SIZE`` counts them."""
    with io.BytesIO() as out:
        BytesGenerator(out).flatten(message, linesep="\r\n")
        return len(out.getvalue())


def server_size_limit(smtp: smtplib.SMTP) -> int | None:
    """The largest message the server takes, from its EHLO ``SIZE`` keyword; None: no stated limit (absent or 0)."""
    stated = smtp.esmtp_features.get("size", "").strip() if smtp.does_esmtp else ""
    return int(stated) if stated.isdigit() and int(stated) > 0 else None


def _over(size: int, limit: int | None) -> int | None:
    """The server's limit when ``size`` (with the margin) passes it, else None."""
    return limit if limit is not None and size + SIZE_MARGIN_BYTES > limit else None


@contextlib.contextmanager
def _session(server: SmtpServer) -> Iterator[smtplib.SMTP]:
    """One SMTP session, greeted (EHLO), upgraded and logged in as the URL says."""
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if server.tls:
        smtp = smtplib.SMTP_SSL(server.host, server.port, timeout=TIMEOUT_SECONDS, context=context)
    else:
        smtp = smtplib.SMTP(server.host, server.port, timeout=TIMEOUT_SECONDS)
    with smtp:
        smtp.ehlo()
        if server.starttls:
            smtp.starttls(context=context)
            smtp.ehlo()  # what the server states after the upgrade is what holds
        if server.user:
            smtp.login(server.user, server.password or "")
        yield smtp


def send(server: SmtpServer, message: EmailMessage | None, *, fallback: Fallback | None = None) -> str:
    """Hand the email to the server once, in the largest version it takes; ``attached`` or ``linked``.

    ``message`` goes first (None: there is only the fallback), unless it is over the server's
    ``SIZE`` or the server refuses it with 552; then ``fallback``, all in one session. Raises
    :class:`MessageTooLarge` when the last version left is over ``SIZE`` (before any mail is
    sent), smtplib's errors on any other refusal. Blocking: run it in a thread.
    """
    with _session(server) as smtp:
        limit = server_size_limit(smtp)
        if message is not None:
            size = wire_size(message)
            over = _over(size, limit)
            if over is None:
                try:
                    smtp.send_message(message)  # names SIZE= in MAIL FROM when the server has the extension
                except smtplib.SMTPResponseException as exc:
                    if exc.smtp_code != TOO_LARGE_REPLY or fallback is None:
                        raise
                    # Too large for a server that did not say so in EHLO (smtplib has reset the transaction).
                else:
                    return "attached"
            elif fallback is None:
                raise MessageTooLarge(size, over, linked=False)
        if fallback is None:
            raise ValueError("nothing to send")
        size = wire_size(fallback.probe)
        over = _over(size, limit)
        if over is None:  # the links are made only now; measured again (they should be as long as the stand-ins)
            linked = fallback.make()
            size = wire_size(linked)
            over = _over(size, limit)
        if over is not None:
            raise MessageTooLarge(size, over, linked=True)
        smtp.send_message(linked)
        return "linked"


def refusal_reason(exc: BaseException) -> str:
    """What went wrong, for the clinic: the SMTP code and text (addresses removed), or the error's type."""
    if isinstance(exc, MessageTooLarge):
        return str(exc)[:200]
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        replies = list(exc.recipients.values())
        code, text = replies[0] if replies else (0, b"")
    elif isinstance(exc, smtplib.SMTPResponseException):
        code, text = exc.smtp_code, exc.smtp_error
    else:
        return type(exc).__name__[:200]
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    # The server may echo the patient's address; it is patient data.
    cleaned = " ".join(_ADDRESS.sub("<address>", str(text)).split())
    return f"{code} {cleaned}".strip()[:200]
