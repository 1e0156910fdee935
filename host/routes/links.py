"""Expiring links over HTTP: clinicians make, list and revoke them; anyone holding one downloads its one file."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath

from careshare.core import db
from careshare.core.links import (
    DEFAULT_LINK_SECONDS,
    MAX_LINK_SECONDS,
    MAX_PURPOSE_CHARS,
    Link,
    LinkTarget,
    attachment_link,
    file_link,
    link_url,
    links_of,
    open_link,
    revoke_link,
)
from careshare.core.problems import NOT_FOUND, Problem
from careshare.web.content import blob_response, content_route, download_name
from careshare.web.guards import clinician
from careshare.web.openapi import documented, limits
from careshare.web.views import invalid, page_json, parse_body

if TYPE_CHECKING:
    from careshare.core.models import Principal
    from careshare.core.runtime import Careshare

__all__ = ["ROUTES", "AttachmentLinkController", "FileLinkController", "PublicLinkController", "link_json"]


@attrs.frozen
class NewLink:
    purpose: str = attrs.field(default="", metadata=limits(maxLength=MAX_PURPOSE_CHARS))
    expires_in: int = attrs.field(default=DEFAULT_LINK_SECONDS, metadata=limits(minimum=1, maximum=MAX_LINK_SECONDS))
    #: Links on a file only: which copy (``shareable`` by default: what a patient would get).
    rendition: str = "shareable"


@attrs.frozen
class NewAttachmentLink(NewLink):
    """An attachment is one pinned copy: its link takes no other rendition."""

    rendition: str = attrs.field(default="shareable", metadata=limits(enum=["shareable"]))


def _checked(body: NewLink) -> NewLink:
    errors = []
    if not 1 <= body.expires_in <= MAX_LINK_SECONDS:
        errors.append(
            f"$.expires_in: give 1 to {MAX_LINK_SECONDS} seconds (7 days at most; the default is {DEFAULT_LINK_SECONDS})"
        )
    if len(body.purpose) > MAX_PURPOSE_CHARS:
        errors.append(f"$.purpose: at most {MAX_PURPOSE_CHARS} characters")
    if errors:
        raise invalid(*errors)
    return body


def link_json(cs: Careshare, link: Link) -> dict[str, Any]:
    opens: dict[str, Any] = {"type": link.kind, "file_id": link.file_id, "rendition": link.rendition}
    if link.attachment_id is not None:
        opens.update({"attachment_id": link.attachment_id, "target": link.target, "item_id": link.item_id})
    return {
        "id": link.id,
        "url": link_url(cs.settings, link.id),
        "opens": opens,
        "purpose": link.purpose,
        "status": link.status(db.utcnow()),
        "created_by": link.created_by,
        "created_at": link.created_at.isoformat(),
        "expires_at": link.expires_at.isoformat(),
        "revoked_at": link.revoked_at.isoformat() if link.revoked_at else None,
        "revoked_by": link.revoked_by,
        "uses": link.uses,
        "last_used_at": link.last_used_at.isoformat() if link.last_used_at else None,
    }


async def _revoke(cs: Careshare, principal: Principal, link_id: str, **opens: str) -> dict[str, Any]:
    async with cs.engine.begin() as conn:
        if not any(link.id == link_id for link in await links_of(conn, principal.org, **opens)):
            raise Problem(NOT_FOUND)
        return link_json(cs, await revoke_link(conn, principal, link_id))


class FileLinkController(Controller):
    path = "/v1/files/{fid:str}/links"
    dependencies = {"principal": Provide(clinician)}
    tags = ["links"]

    @post("/", status_code=201, operation_class=documented(NewLink))
    async def make(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        fid: FromPath[str],
    ) -> dict[str, Any]:
        """A link to one rendition of the file, for someone outside the app: ``{"purpose", "expires_in", "rendition"}``."""
        body = _checked(await parse_body(request, NewLink))
        async with cs.engine.begin() as conn:
            link = await file_link(
                conn, principal, fid, rendition=body.rendition, purpose=body.purpose, expires_in=body.expires_in
            )
        return link_json(cs, link)

    @get("/")
    async def index(
        self, cs: NamedDependency[Careshare], principal: NamedDependency[Principal], fid: FromPath[str]
    ) -> dict[str, Any]:
        """Every link made on this file, newest first, revoked and expired ones too."""
        async with cs.reader.connect() as conn:
            found = await links_of(conn, principal.org, file_id=fid)
        return page_json([link_json(cs, link) for link in found], None)

    @post("/{lid:str}/revoke", status_code=200)
    async def revoke(
        self,
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        fid: FromPath[str],
        lid: FromPath[str],
    ) -> dict[str, Any]:
        return await _revoke(cs, principal, lid, file_id=fid)


class AttachmentLinkController(Controller):
    path = "/v1/attachments/{aid:str}/links"
    dependencies = {"principal": Provide(clinician)}
    tags = ["links"]

    @post("/", status_code=201, operation_class=documented(NewAttachmentLink))
    async def make(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        aid: FromPath[str],
    ) -> dict[str, Any]:
        """A link to the attachment's pinned bytes: ``{"purpose", "expires_in"}``."""
        body = _checked(await parse_body(request, NewAttachmentLink))
        if body.rendition != "shareable":
            raise invalid("$.rendition: an attachment is one pinned copy; leave rendition out")
        async with cs.engine.begin() as conn:
            link = await attachment_link(conn, principal, aid, purpose=body.purpose, expires_in=body.expires_in)
        return link_json(cs, link)

    @get("/")
    async def index(
        self, cs: NamedDependency[Careshare], principal: NamedDependency[Principal], aid: FromPath[str]
    ) -> dict[str, Any]:
        async with cs.reader.connect() as conn:
            found = await links_of(conn, principal.org, attachment_id=aid)
        return page_json([link_json(cs, link) for link in found], None)

    @post("/{lid:str}/revoke", status_code=200)
    async def revoke(
        self,
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        aid: FromPath[str],
        lid: FromPath[str],
    ) -> dict[str, Any]:
        return await _revoke(cs, principal, lid, attachment_id=aid)


async def _follow(cs: Careshare, token: str) -> LinkTarget:
    """Open the link; a refusal is raised only after its audit row is committed."""
    refusal: Problem | None = None
    async with cs.engine.begin() as conn:
        try:
            served = await open_link(conn, cs.settings.secret_key, token)
        except Problem as problem:
            refusal = problem
    if refusal is not None:
        raise refusal
    return served


class PublicLinkController(Controller):
    """No bearer token here: the token in the path is the whole permission, for one file."""

    path = "/v1/links"
    tags = ["links"]

    @content_route("/{token:str}", public=True)
    async def download(
        self, request: Request[Any, Any, Any], cs: NamedDependency[Careshare], token: FromPath[str]
    ) -> Response[Any]:
        """The bytes the link opens (Range, ETag as for file content); expired or revoked: ``410``."""
        served = await _follow(cs, token)
        name = download_name(served.filename, served.media_type, served.role)
        response = blob_response(request, cs, served.sha256, served.size, served.media_type, name)
        response.headers["Referrer-Policy"] = "no-referrer"  # the URL is the secret: never pass it on
        return response


#: What the host mounts.
ROUTES = [PublicLinkController, FileLinkController, AttachmentLinkController]
