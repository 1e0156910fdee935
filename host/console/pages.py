"""The console's own pages: signing in and out, patients, a patient's profile and files, the library, the inboxes.

Each channel's pages come from its plugin (``careshare_console``); these name none of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from careshare.core import notifications as inbox
from careshare.core.erasure import ERASURE_NOT_CONFIRMED, delete_file, erase_patient
from careshare.core.files import FileSearch, get_file, list_files, mark_seen, refusal
from careshare.core.models import Principal
from careshare.core.patients import (
    find_patients,
    get_patient,
    list_organisations,
    register_patient,
    update_patient,
)
from careshare.core.problems import INVALID_TOKEN, NOT_FOUND, Problem
from careshare.core.sharing import MAX_REASON_CHARS, revoke
from careshare.host.auth import known_organisation, mint_token, verify_token
from careshare.host.console.session import CROSS_SITE_FORM, DEV_LOGIN, end_session, same_origin, start_session
from careshare.web import clinician, patient, signed_in
from careshare.web.console import CONSOLE, console_page, form_data, form_text, see_other
from careshare.web.views import invalid

if TYPE_CHECKING:
    from careshare.core.models import StoredFile
    from careshare.core.runtime import Careshare

__all__ = ["CORE_PAGES"]

PAGE = 25


def _home_of(who: Principal) -> str:
    return CONSOLE + ("/patients" if who.is_clinician else "/me")


def file_view(f: StoredFile) -> dict[str, Any]:
    """What a file row of the console shows: its links under ``/console/api`` and, if refused, why."""
    base = f"{CONSOLE}/api/v1/files/{f.id}/content"
    roles = {r.role: r.media_type for r in f.renditions}
    preview = "thumbnail" if "thumbnail" in roles else "poster" if "poster" in roles else None
    # How a browser shows what the patient receives: by the media type, never by the format's name.
    shown_as = roles.get("shareable", "").partition("/")[0]
    problem = refusal(f) if f.status == "rejected" else None
    return {
        "file": f,
        "thumbnail": f"{base}?rendition={preview}" if preview else None,
        "shareable": f"{base}?rendition=shareable" if "shareable" in roles else None,
        "original": base,
        "refusal": {"title": problem.type.title, "detail": problem.detail} if problem else None,
        "new": f.source == "patient" and f.seen_at is None,
        "shown_as": shown_as if shown_as in ("video", "image", "audio") else "link",
    }


# -- signing in ------------------------------------------------------------------------------------


@get("/login")
async def login_form(cs: NamedDependency[Careshare]) -> Template:
    dev_login = cs.settings.get(DEV_LOGIN)
    organisations = []
    if dev_login:
        organisations = sorted({org for org, _ in await list_organisations(cs.engine)} | cs.settings.allowed_orgs)
    return console_page("console/login.html", title="Sign in", dev_login=dev_login, organisations=organisations)


@post("/login", status_code=303)
async def login(request: Request[Any, Any, Any], cs: NamedDependency[Careshare]) -> Redirect:
    """A token (from ``careshare token`` or the clinic's identity service), or the development form's choice."""
    if not same_origin(request):
        raise Problem(CROSS_SITE_FORM)
    fields = await form_data(request)
    token = form_text(fields, "token")
    if not token and cs.settings.get(DEV_LOGIN):
        token = await _dev_token(cs, fields)
    if not token:
        raise invalid("$.token: paste the token you were given, or ask for one (careshare token)")
    try:
        who = verify_token(cs.settings.secret_key, token)
    except Problem:
        raise Problem(
            INVALID_TOKEN, "This token is not valid here: it is expired or made for another server."
        ) from None
    await known_organisation(request, cs, who)
    return start_session(Redirect(path=_home_of(who), status_code=303), request, token)  # type: ignore[return-value]


async def _dev_token(cs: Careshare, fields: dict[str, Any]) -> str:
    role, org = form_text(fields, "role"), form_text(fields, "org")
    subject, patient_id = form_text(fields, "subject"), form_text(fields, "patient_id")
    if role == "patient" and patient_id:
        async with cs.reader.connect() as conn:
            try:
                await get_patient(conn, Principal(subject="dev-login", role="clinician", org=org), patient_id)
            except Problem:
                raise invalid("$.patient_id: no patient of this organisation has this id") from None
    try:
        return mint_token(
            cs.settings.secret_key,
            role=role,
            org=org or "demo",
            sub=subject or None,
            patient=patient_id or None,
            ttl_seconds=12 * 3600,
        )
    except ValueError as exc:
        raise invalid(f"$.{'patient_id' if role == 'patient' else 'subject'}: {exc}") from None


@post("/logout", status_code=303)
async def logout(request: Request[Any, Any, Any]) -> Redirect:
    if not same_origin(request):
        raise Problem(CROSS_SITE_FORM)
    return end_session(Redirect(path=CONSOLE + "/login", status_code=303))  # type: ignore[return-value]


@get("/", dependencies={"principal": Provide(signed_in)}, sync_to_thread=False)
def home(principal: NamedDependency[Principal]) -> Redirect:
    return Redirect(path=_home_of(principal), status_code=303)


# -- patients --------------------------------------------------------------------------------------


@get("/patients", dependencies={"principal": Provide(clinician)})
async def patients(
    cs: NamedDependency[Careshare], principal: NamedDependency[Principal], cursor: FromQuery[str | None] = None
) -> Template:
    async with cs.reader.connect() as conn:
        found, next_cursor = await find_patients(conn, principal, cursor=cursor, limit=PAGE)
    return console_page("console/patients.html", title="Patients", patients=found, next_cursor=next_cursor, query="")


@post("/patients/search", status_code=200, dependencies={"principal": Provide(clinician)})
async def search_patients(
    request: Request[Any, Any, Any], cs: NamedDependency[Careshare], principal: NamedDependency[Principal]
) -> Template:
    """Posted, so what was typed (a name) never stands in a URL, a history or an access log."""
    query = form_text(await form_data(request), "q")
    async with cs.reader.connect() as conn:
        found, _ = await find_patients(conn, principal, query=query, cursor=None, limit=PAGE)
    template = "console/_patient_rows.html" if request.headers.get("hx-request") else "console/patients.html"
    return console_page(template, title="Patients", patients=found, next_cursor=None, query=query)


@get("/patients/new", dependencies={"principal": Provide(clinician)}, sync_to_thread=False)
def new_patient(principal: NamedDependency[Principal]) -> Template:
    return console_page("console/patient_new.html", title="Register a patient")


@post("/patients", status_code=303, dependencies={"principal": Provide(clinician)})
async def register(
    request: Request[Any, Any, Any], cs: NamedDependency[Careshare], principal: NamedDependency[Principal]
) -> Redirect:
    fields = await form_data(request)
    name, external_id, email = form_text(fields, "name"), form_text(fields, "external_id"), form_text(fields, "email")
    errors = [
        *(["$.name: give the patient's name"] if not name else []),
        *(["$.external_id: give the clinic's number for this patient"] if not external_id else []),
        *(["$.email: an email address has an @ and a domain"] if email and "@" not in email[1:-1] else []),
    ]
    if errors:
        raise invalid(*errors)
    async with cs.engine.begin() as conn:
        made = await register_patient(conn, principal, name=name, external_id=external_id, email=email or None)
    return see_other(f"/patients/{made.id}", "Patient registered.")


@get("/patients/{pid:str}", dependencies={"principal": Provide(clinician)})
async def profile(
    cs: NamedDependency[Careshare], principal: NamedDependency[Principal], pid: FromPath[str]
) -> Template:
    async with cs.reader.connect() as conn:
        who = await get_patient(conn, principal, pid)
        new, _ = await list_files(
            conn,
            principal,
            owner_type="patient",
            patient_id=pid,
            search=FileSearch(source="patient", unseen=True),
            limit=PAGE,
        )
    return console_page("console/profile.html", title=who.name, patient=who, new_files=len(new))


@post("/patients/{pid:str}/edit", status_code=303, dependencies={"principal": Provide(clinician)})
async def edit_patient(
    request: Request[Any, Any, Any],
    cs: NamedDependency[Careshare],
    principal: NamedDependency[Principal],
    pid: FromPath[str],
) -> Redirect:
    """The profile's form: a new name or email (an empty email removes it); audited as the API's change is."""
    fields = await form_data(request)
    name, email = form_text(fields, "name"), form_text(fields, "email")
    errors = [
        *(["$.name: give the patient's name"] if not name else []),
        *(["$.email: an email address has an @ and a domain"] if email and "@" not in email[1:-1] else []),
    ]
    if errors:
        raise invalid(*errors)
    async with cs.engine.begin() as conn:
        await update_patient(conn, principal, pid, name=name, email=email or None)
    return see_other(f"/patients/{pid}", "Patient details saved.")


@post("/patients/{pid:str}/erase", status_code=303, dependencies={"principal": Provide(clinician)})
async def erase(
    request: Request[Any, Any, Any],
    cs: NamedDependency[Careshare],
    principal: NamedDependency[Principal],
    pid: FromPath[str],
) -> Redirect:
    """Erase on request, once the clinic number is typed again (as the API's erase asks)."""
    typed = form_text(await form_data(request), "external_id")
    async with cs.reader.connect() as conn:
        who = await get_patient(conn, principal, pid)
    if typed != who.external_id:
        raise Problem(ERASURE_NOT_CONFIRMED, "Type the patient's clinic number exactly to confirm the erasure.")
    await erase_patient(cs, principal, pid)
    return see_other("/patients", "Patient erased.")


@get("/patients/{pid:str}/files", dependencies={"principal": Provide(clinician)})
async def patient_files(
    cs: NamedDependency[Careshare],
    principal: NamedDependency[Principal],
    pid: FromPath[str],
    cursor: FromQuery[str | None] = None,
) -> Template:
    async with cs.reader.connect() as conn:
        who = await get_patient(conn, principal, pid)
        files, next_cursor = await list_files(
            conn, principal, owner_type="patient", patient_id=pid, cursor=cursor, limit=PAGE
        )
    return console_page(
        "console/files.html",
        title=f"Files of {who.name}",
        patient=who,
        files=[file_view(f) for f in files],
        next_cursor=next_cursor,
        upload_url=f"{CONSOLE}/api/v1/patients/{pid}/files",
        tus_url=f"{CONSOLE}/api/v1/patients/{pid}/uploads",
    )


@post("/files/{fid:str}/seen", status_code=303, dependencies={"principal": Provide(clinician)})
async def seen(cs: NamedDependency[Careshare], principal: NamedDependency[Principal], fid: FromPath[str]) -> Redirect:
    async with cs.engine.begin() as conn:
        stored = await mark_seen(conn, principal, fid)
    return see_other(f"/patients/{stored.patient_id}/files", "Marked as seen.")


@post("/files/{fid:str}/delete", status_code=303, dependencies={"principal": Provide(clinician)})
async def delete(cs: NamedDependency[Careshare], principal: NamedDependency[Principal], fid: FromPath[str]) -> Redirect:
    async with cs.reader.connect() as conn:
        stored = await get_file(conn, principal, fid)
    await delete_file(cs, principal, fid)
    back = f"/patients/{stored.patient_id}/files" if stored.patient_id else "/library"
    return see_other(back, "File deleted. What was already shared with the patient stays.")


@get("/files/{fid:str}", dependencies={"principal": Provide(signed_in)})
async def file_page(
    cs: NamedDependency[Careshare], principal: NamedDependency[Principal], fid: FromPath[str]
) -> Template:
    """One file: its rendering (a DICOM's image, a video that seeks), its details, or why it was refused."""
    async with cs.reader.connect() as conn:
        stored = await get_file(conn, principal, fid)
    return console_page("console/file.html", title=stored.filename or "File", view=file_view(stored))


@get("/library", dependencies={"principal": Provide(clinician)})
async def library(
    cs: NamedDependency[Careshare], principal: NamedDependency[Principal], cursor: FromQuery[str | None] = None
) -> Template:
    async with cs.reader.connect() as conn:
        files, next_cursor = await list_files(
            conn, principal, owner_type="library", patient_id=None, cursor=cursor, limit=PAGE
        )
    return console_page(
        "console/files.html",
        title="Library",
        patient=None,
        files=[file_view(f) for f in files],
        next_cursor=next_cursor,
        upload_url=f"{CONSOLE}/api/v1/library/files",
    )


# -- taking back a share --------------------------------------------------------------------------

WITHDRAWN = "Withdrawn: the patient no longer sees it."


def _back(fields: dict[str, Any]) -> str:
    """The console page the form came from (``back``), else the patient list: never another site."""
    back = form_text(fields, "back")
    rest = back[len(CONSOLE) :]
    if not back.startswith(CONSOLE + "/") or rest.startswith("//") or "\\" in rest:
        return "/patients"
    return back


@post("/shares/{target:str}/{item_id:str}/revoke", status_code=303, dependencies={"principal": Provide(clinician)})
async def withdraw(
    request: Request[Any, Any, Any],
    cs: NamedDependency[Careshare],
    principal: NamedDependency[Principal],
    target: FromPath[str],
    item_id: FromPath[str],
) -> Redirect:
    """Withdraw a shared item from its patient (``POST /v1/shares/.../revoke``), from any channel's page."""
    fields = await form_data(request)
    reason = form_text(fields, "reason")
    if not reason:
        raise invalid("reason: say why the item is withdrawn (the patient never sees it)")
    if len(reason) > MAX_REASON_CHARS:
        raise invalid(f"reason: at most {MAX_REASON_CHARS} characters")
    async with cs.engine.begin() as conn:
        await revoke(conn, cs.plugins, principal, target, item_id, reason)
    return see_other(_back(fields), WITHDRAWN)


# -- the clinic's inbox ----------------------------------------------------------------------------


@get("/inbox", dependencies={"principal": Provide(clinician)})
async def clinic_inbox(
    cs: NamedDependency[Careshare],
    principal: NamedDependency[Principal],
    cursor: FromQuery[str | None] = None,
    unread: FromQuery[bool] = False,
) -> Template:
    """What the organisation's patients sent, newest first, read once for every clinician."""
    async with cs.reader.connect() as conn:
        items, next_cursor = await inbox.clinic_inbox(
            conn, principal.org, cursor=cursor, limit=PAGE, unread_only=unread
        )
        names = {}
        for pid in {n.patient_id for n in items}:
            names[pid] = (await get_patient(conn, principal, pid)).name
    return console_page(
        "console/clinic_inbox.html", title="Inbox", items=items, names=names, next_cursor=next_cursor, unread=unread
    )


@post("/inbox/{nid:str}/read", status_code=303, dependencies={"principal": Provide(clinician)})
async def clinic_read(
    cs: NamedDependency[Careshare], principal: NamedDependency[Principal], nid: FromPath[str]
) -> Redirect:
    async with cs.engine.begin() as conn:
        found = await inbox.mark_clinic_read(conn, principal.org, principal.subject, nid)
    if found is None:
        raise Problem(NOT_FOUND)
    return see_other("/inbox", "Marked as read.")


# -- the patient's view ----------------------------------------------------------------------------


@get("/me", dependencies={"principal": Provide(patient)})
async def my_inbox(
    cs: NamedDependency[Careshare], principal: NamedDependency[Principal], cursor: FromQuery[str | None] = None
) -> Template:
    async with cs.reader.connect() as conn:
        me = await get_patient(conn, principal, principal.patient or "")
        items, next_cursor = await inbox.inbox(conn, principal.org, me.id, cursor=cursor, limit=PAGE)
    return console_page("console/inbox.html", title="Inbox", me=me, items=items, next_cursor=next_cursor)


@get("/me/files", dependencies={"principal": Provide(patient)})
async def my_files(
    cs: NamedDependency[Careshare], principal: NamedDependency[Principal], cursor: FromQuery[str | None] = None
) -> Template:
    async with cs.reader.connect() as conn:
        me = await get_patient(conn, principal, principal.patient or "")
        files, next_cursor = await list_files(
            conn, principal, owner_type="patient", patient_id=me.id, cursor=cursor, limit=PAGE
        )
    return console_page(
        "console/files.html",
        title="My files",
        patient=None,
        files=[file_view(f) for f in files],
        next_cursor=next_cursor,
        upload_url=f"{CONSOLE}/api/v1/me/files",
        tus_url=f"{CONSOLE}/api/v1/me/uploads",
    )


CORE_PAGES = [
    login_form,
    login,
    logout,
    home,
    patients,
    search_patients,
    new_patient,
    register,
    profile,
    edit_patient,
    erase,
    patient_files,
    seen,
    delete,
    file_page,
    library,
    withdraw,
    clinic_inbox,
    clinic_read,
    my_inbox,
    my_files,
]
