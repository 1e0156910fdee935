"""HTTP routes of a channel's templates (appointment types, medication types): one factory, mounted by each channel."""

from __future__ import annotations

from typing import Any

import attrs
from litestar import Controller, Request, delete, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath

from careshare.core.models import Principal
from careshare.core.runtime import Careshare
from careshare.core.templates import MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS, Template, Templates
from careshare.web.guards import clinician
from careshare.web.openapi import NON_BLANK, documented, limits
from careshare.web.pages import page_route, show_route
from careshare.web.views import invalid, parse_body, shown

__all__ = ["NewTemplate", "TemplateChange", "template_json", "template_routes"]


@attrs.frozen
class NewTemplate:
    name: str = attrs.field(metadata=limits(maxLength=MAX_NAME_CHARS, pattern=NON_BLANK))
    description: str = attrs.field(default="", metadata=limits(maxLength=MAX_DESCRIPTION_CHARS))


@attrs.frozen
class TemplateChange:
    name: str | None = attrs.field(default=None, metadata=limits(maxLength=MAX_NAME_CHARS, pattern=NON_BLANK))
    description: str | None = attrs.field(default=None, metadata=limits(maxLength=MAX_DESCRIPTION_CHARS))


@attrs.frozen
class NewTemplateAttachment:
    file_id: str


def template_json(t: Template) -> dict[str, Any]:
    return shown(t, hide={"org"})


def _name(value: str) -> str:
    name = value.strip()
    if not name:
        raise invalid("$.name: must not be blank")
    if len(value) > MAX_NAME_CHARS:
        raise invalid(f"$.name: at most {MAX_NAME_CHARS} characters")
    return name


def _description(value: str) -> str:
    if len(value) > MAX_DESCRIPTION_CHARS:
        raise invalid(f"$.description: at most {MAX_DESCRIPTION_CHARS} characters")
    return value.strip()


def template_routes(templates: Templates, *, base: str, tag: str) -> type[Controller]:
    """A controller serving ``templates`` under ``base``: create, list, show, rename, attach and detach files.

    Files come from where the templates' target allows (for the built-in types: the organisation
    library); detaching is how a template is edited, and reaches only items made from it later.
    """

    class TemplateController(Controller):
        path = base
        dependencies = {"principal": Provide(clinician)}
        tags = [tag]

        made = {"tid": "$response.body#/id"}

        @post(
            "/",
            status_code=201,
            operation_class=documented(
                NewTemplate,
                links={
                    "template": ("GET", f"{base}/{{tid}}", made),
                    "change": ("PATCH", f"{base}/{{tid}}", made),
                    "attach": ("POST", f"{base}/{{tid}}/attachments", made),
                },
            ),
        )
        async def create(
            self, request: Request[Any, Any, Any], cs: NamedDependency[Careshare], principal: NamedDependency[Principal]
        ) -> dict[str, Any]:
            """Create a template ``{"name", "description"?}``; attach its files next."""
            body = await parse_body(request, NewTemplate)
            name, description = _name(body.name), _description(body.description)
            async with cs.engine.begin() as conn:
                return template_json(await templates.create(conn, principal, name=name, description=description))

        #: The organisation's templates, newest first, each with its files.
        list_templates = page_route("/", templates.page, template_json, of="organisation")

        show = show_route("/{tid:str}", templates.get, template_json)

        @patch("/{tid:str}", operation_class=documented(TemplateChange, status=200))
        async def change(
            self,
            request: Request[Any, Any, Any],
            cs: NamedDependency[Careshare],
            principal: NamedDependency[Principal],
            tid: FromPath[str],
        ) -> dict[str, Any]:
            """Rename or describe again ``{"name"?, "description"?}``; items made earlier keep what they showed."""
            body = await parse_body(request, TemplateChange)
            name = _name(body.name) if body.name is not None else None
            description = _description(body.description) if body.description is not None else None
            async with cs.engine.begin() as conn:
                changed = await templates.update(conn, principal, tid, name=name, description=description)
            return template_json(changed)

        @post("/{tid:str}/attachments", status_code=201, operation_class=documented(NewTemplateAttachment))
        async def attach(
            self,
            request: Request[Any, Any, Any],
            cs: NamedDependency[Careshare],
            principal: NamedDependency[Principal],
            tid: FromPath[str],
        ) -> dict[str, Any]:
            """Attach a library file ``{"file_id"}``; the template is returned with all its files."""
            body = await parse_body(request, NewTemplateAttachment)
            async with cs.engine.begin() as conn:
                return template_json(await templates.attach(conn, cs.plugins, principal, tid, [body.file_id]))

        @delete("/{tid:str}/attachments/{aid:str}", status_code=200)
        async def detach(
            self,
            cs: NamedDependency[Careshare],
            principal: NamedDependency[Principal],
            tid: FromPath[str],
            aid: FromPath[str],
        ) -> dict[str, Any]:
            """Remove a file from the template; appointments, reminders ... made earlier keep theirs."""
            async with cs.engine.begin() as conn:
                return template_json(await templates.detach(conn, principal, tid, aid))

    named = "".join(part.title() for part in templates.target.name.split("-"))
    TemplateController.__name__ = TemplateController.__qualname__ = f"{named}Controller"
    return TemplateController
