"""Discharge summaries: a clinician sends a patient the record of their stay with its files, in one request.

A channel written from outside careshare, against ``careshare.core`` and ``careshare.web`` only: a
target with its rules, a table with its migration, one route, and the share that notifies the
patient. The patient reads it where they read everything else (``GET /v1/me/archive``, the inbox).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import sqlalchemy as sa
from litestar import Controller, Request, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath

from careshare import hookimpl
from careshare.core import db
from careshare.core.ids import new_id
from careshare.core.models import Principal
from careshare.core.patients import get_patient
from careshare.core.runtime import Careshare
from careshare.core.sharing import share
from careshare.core.targets import Item, Target, attach
from careshare.web import NON_BLANK, attachment_json, clinician, documented, invalid, limits, parse_body

#: Letters, photos and scans (DICOM goes as its rendering); a video is refused with its own code.
TARGET = Target("discharge-summary", "discharge", accepts=frozenset({"pdf", "image", "dicom"}), max_count=10)
#: How a summary reaches the patient; the title is what the inbox and push gateways show: nothing clinical.
TITLE = "Your discharge summary is ready"
MAX_TITLE_CHARS = 200
SHARED = dict(channel="discharge", target=TARGET.name, title=TITLE, notification_kind="discharge-summary")
summaries = sa.Table(
    "discharge_summaries",
    db.metadata,
    sa.Column("id", db.ID, primary_key=True),
    sa.Column("org_id", sa.String(200), sa.ForeignKey("organisations.id"), nullable=False),
    sa.Column("patient_id", db.ID, sa.ForeignKey("patients.id"), nullable=False),
    sa.Column("title", sa.String(MAX_TITLE_CHARS), nullable=False),
    sa.Column("sent_by", sa.String(200), nullable=False),
    sa.Column("sent_at", db.UTCDateTime, nullable=False),
)


@attrs.frozen
class NewSummary:
    title: str = attrs.field(metadata=limits(maxLength=MAX_TITLE_CHARS, pattern=NON_BLANK))
    file_ids: list[str] = attrs.Factory(list)


class Summaries(Controller):
    path, tags = "/v1/patients/{pid:str}/discharge-summaries", ["discharge"]
    dependencies = {"principal": Provide(clinician)}

    @post("/", status_code=201, operation_class=documented(NewSummary))
    async def send(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        pid: FromPath[str],
    ) -> dict[str, Any]:
        """Send ``{"title", "file_ids"}``: every file attaches and the patient is told, or nothing happens."""
        body = await parse_body(request, NewSummary)
        if not (title := body.title.strip()) or len(body.title) > MAX_TITLE_CHARS:
            raise invalid(f"$.title: 1 to {MAX_TITLE_CHARS} characters")
        async with cs.engine.begin() as conn:
            await get_patient(conn, principal, pid)
            row = {"id": new_id(), "org_id": principal.org, "patient_id": pid, "title": title}
            await conn.execute(summaries.insert().values(**row, sent_by=principal.subject, sent_at=db.utcnow()))
            item = Item(target=TARGET.name, id=row["id"], org=principal.org, patient_id=pid)
            files = await attach(conn, cs.plugins, principal, TARGET, item, body.file_ids)
            await share(conn, cs.plugins, principal, **SHARED, item_id=item.id, patient_id=pid)
        return {**row, "attachments": [attachment_json(a) for a in files]}


@hookimpl
def careshare_targets() -> list[Target]:
    return [TARGET]


@hookimpl
def careshare_migrations() -> list[Path]:
    return [Path(__file__).parent / "migrations"]


@hookimpl
def careshare_routes() -> list[type[Controller]]:
    return [Summaries]


@hookimpl
def careshare_contract() -> list[Any]:
    from careshare_discharge.contract import CONTRACT  # only the contract kit calls this, in tests

    return [CONTRACT]
