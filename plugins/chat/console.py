"""The chat channel's console pages: a clinician's conversation with a patient, and the patient's own.

The pages read and send through the plugin's own functions (``routes.conversation``, the message
checks), never through the HTTP API. A message goes out whole or not at all: a refused send (too
many files, a file not ready) raises its Problem and the console shows its sentence on the form.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from litestar import Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from careshare.core.files import list_files
from careshare.core.patients import find_patients, get_patient
from careshare.plugins.chat import TARGET
from careshare.plugins.chat.routes import (
    BODY_FIELD,
    MAX_BODY_CHARS,
    NewMessage,
    checked_message,
    conversation,
    deliver_message,
)
from careshare.web import (
    CONSOLE,
    ConsolePages,
    NavEntry,
    clinician,
    console_page,
    form_data,
    form_text,
    form_values,
    patient,
    see_other,
)

if TYPE_CHECKING:
    from careshare.core.models import Patient, Principal
    from careshare.core.runtime import Careshare

__all__ = ["CHAT_PAGES"]

TEMPLATES = Path(__file__).parent / "console_templates"
#: Messages on one page of the thread, and patients or files offered at once.
PAGE = 50
SENT = "Message sent."


def _message_view(message: dict[str, Any], principal: Principal) -> dict[str, Any]:
    """A message as the thread shows it: whose side it is on, who wrote it, its attachments' links."""
    from_patient = message["author_role"] == "patient"
    mine = from_patient != principal.is_clinician
    if principal.is_clinician:
        who = "Patient" if from_patient else "You" if message.get("author") == principal.subject else message["author"]
    else:
        who = "You" if from_patient else "Care team"
    attachments = [
        {**a, "content": f"{CONSOLE}/api{a['url']}", "page": f"{CONSOLE}/files/{a['file_id']}"}
        for a in message["attachments"]
    ]
    return {
        **message,
        "mine": mine,
        "who": who,
        "created": datetime.fromisoformat(message["created_at"]),
        "attachments": attachments,
        "lines": message["body"].splitlines(),
    }


async def _thread_page(
    cs: Careshare, principal: Principal, who: Patient, *, cursor: str | None, send_url: str, upload: str
) -> Template:
    """The thread (oldest first), the message form and the patient's files to attach."""
    page = await conversation(
        cs, principal.org, who.id, cursor=cursor, limit=PAGE, for_clinician=principal.is_clinician
    )
    async with cs.reader.connect() as conn:
        files, _ = await list_files(conn, principal, owner_type="patient", patient_id=who.id, limit=PAGE)
    return console_page(
        "chat/thread.html",
        title=f"Chat with {who.name}" if principal.is_clinician else "Chat with your care team",
        patient=who if principal.is_clinician else None,
        messages=[_message_view(m, principal) for m in reversed(page["items"])],
        older=page["next_cursor"],
        files=[f for f in files if f.status != "rejected"],
        send_url=send_url,
        upload_url=f"{CONSOLE}/api/v1/{upload}/files",
        tus_url=f"{CONSOLE}/api/v1/{upload}/uploads",
        upload_label="Upload a file to attach",
        max_body=MAX_BODY_CHARS,
        chat_target=TARGET.name,
    )


async def _send(request: Request[Any, Any, Any], cs: Careshare, principal: Principal, patient_id: str) -> None:
    fields = await form_data(request)
    message = NewMessage(body=form_text(fields, BODY_FIELD), file_ids=form_values(fields, "file_id"))
    await deliver_message(cs, principal, patient_id, checked_message(message))


# -- the clinician's pages -------------------------------------------------------------------------


@get("/chat", dependencies={"principal": Provide(clinician)})
async def chat_home(cs: NamedDependency[Careshare], principal: NamedDependency[Principal]) -> Template:
    """Pick a patient to write to: the most recent ones, or those a posted search finds."""
    async with cs.reader.connect() as conn:
        found, _ = await find_patients(conn, principal, cursor=None, limit=PAGE)
    return console_page("chat/patients.html", title="Chat", patients=found, query="")


@post("/chat/search", status_code=200, dependencies={"principal": Provide(clinician)})
async def chat_search(
    request: Request[Any, Any, Any], cs: NamedDependency[Careshare], principal: NamedDependency[Principal]
) -> Template:
    """Posted, so a name typed never stands in a URL."""
    query = form_text(await form_data(request), "q")
    async with cs.reader.connect() as conn:
        found, _ = await find_patients(conn, principal, query=query, cursor=None, limit=PAGE)
    template = "chat/_patient_list.html" if request.headers.get("hx-request") else "chat/patients.html"
    return console_page(template, title="Chat", patients=found, query=query)


@get("/patients/{pid:str}/chat", dependencies={"principal": Provide(clinician)})
async def clinician_thread(
    cs: NamedDependency[Careshare],
    principal: NamedDependency[Principal],
    pid: FromPath[str],
    cursor: FromQuery[str | None] = None,
) -> Template:
    async with cs.reader.connect() as conn:
        who = await get_patient(conn, principal, pid)
    return await _thread_page(
        cs, principal, who, cursor=cursor, send_url=f"{CONSOLE}/patients/{pid}/chat", upload=f"patients/{pid}"
    )


@post("/patients/{pid:str}/chat", status_code=303, dependencies={"principal": Provide(clinician)})
async def clinician_send(
    request: Request[Any, Any, Any],
    cs: NamedDependency[Careshare],
    principal: NamedDependency[Principal],
    pid: FromPath[str],
) -> Redirect:
    async with cs.reader.connect() as conn:
        await get_patient(conn, principal, pid)
    await _send(request, cs, principal, pid)
    return see_other(f"/patients/{pid}/chat", SENT)


# -- the patient's pages ---------------------------------------------------------------------------


@get("/me/chat", dependencies={"principal": Provide(patient)})
async def my_thread(
    cs: NamedDependency[Careshare], principal: NamedDependency[Principal], cursor: FromQuery[str | None] = None
) -> Template:
    async with cs.reader.connect() as conn:
        me = await get_patient(conn, principal, principal.patient or "")
    return await _thread_page(cs, principal, me, cursor=cursor, send_url=f"{CONSOLE}/me/chat", upload="me")


@post("/me/chat", status_code=303, dependencies={"principal": Provide(patient)})
async def my_reply(
    request: Request[Any, Any, Any], cs: NamedDependency[Careshare], principal: NamedDependency[Principal]
) -> Redirect:
    async with cs.reader.connect() as conn:
        me = await get_patient(conn, principal, principal.patient or "")
    await _send(request, cs, principal, me.id)
    return see_other("/me/chat", SENT)


CHAT_PAGES = ConsolePages(
    name="chat",
    routes=[chat_home, chat_search, clinician_thread, clinician_send, my_thread, my_reply],
    templates=TEMPLATES,
    nav=[
        NavEntry("Chat", "/chat", order=30),
        NavEntry("Chat", "/patients/{pid}/chat", place="patient", quick_action="Start a conversation", order=30),
        NavEntry("Chat", "/me/chat", audience="patient", order=30),
    ],
    item_pages={TARGET.name: "/me/chat"},
    clinic_pages={TARGET.name: "/patients/{patient_id}/chat"},
)
