"""The console's core over HTTP: signing in, the session cookie and its checks, patients, files, the patient's view.

Pages are driven as a browser sends them (``careshare.testing.console``): forms with the console's
own Origin, the session cookie kept. The browser itself drives them in tests/test_console_browser.py.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from litestar.di import NamedDependency, Provide
from litestar.testing import TestClient

from careshare.core.models import Principal
from careshare.core.patients import find_patients, fold, register_organisation, register_patient
from careshare.host import create_app
from careshare.host.auth import mint_token
from careshare.host.console import when
from careshare.host.console.session import SESSION_COOKIE
from careshare.testing import make_pdf
from careshare.testing.console import BASE_URL, ConsoleClient, copied_settings, notice_text, register

if TYPE_CHECKING:
    from pathlib import Path

    from careshare.core.settings import Settings


# -- signing in ------------------------------------------------------------------------------------


def test_login_page_offers_the_token_form_and_the_dev_form_only_when_turned_on(
    tmp_path: Path, migrated_database: Path
) -> None:
    plain = copied_settings(tmp_path / "plain", migrated_database)
    with TestClient(create_app(plain), base_url=BASE_URL) as client:
        page = client.get("/console/login").text
        assert 'name="token"' in page and "Development sign-in" not in page
        dev = client.post(
            "/console/login",
            data={"role": "clinician", "org": "org-a", "subject": "x"},
            headers={"Origin": BASE_URL},
            follow_redirects=False,
        )
        assert dev.status_code == 303 and SESSION_COOKIE not in dev.headers.get("set-cookie", "")
    dev_settings = copied_settings(tmp_path / "dev", migrated_database, CARESHARE_DEV_LOGIN="1")
    with TestClient(create_app(dev_settings), base_url=BASE_URL) as client:
        page = client.get("/console/login").text
        assert "Development sign-in" in page and '<option value="org-a">' in page


def test_a_wrong_dev_login_value_stops_the_app_at_start(tmp_path: Path, migrated_database: Path) -> None:
    with pytest.raises(ValueError, match="CARESHARE_DEV_LOGIN must be 1 or 0"):
        create_app(copied_settings(tmp_path, migrated_database, CARESHARE_DEV_LOGIN="yes please"))


def test_token_sign_in_sets_a_strict_http_only_cookie_for_the_console_only(browser: ConsoleClient) -> None:
    token = mint_token(browser.settings.secret_key, role="clinician", org="org-a", sub="dr-a")
    answer = browser.form("/console/login", {"token": token})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/patients"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}={token};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert browser.page("/console/patients").status_code == 200


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("not-a-token", "invalid-token"),
        ("", "invalid-request"),
    ],
)
def test_a_refused_sign_in_goes_back_to_the_form_with_its_sentence(
    browser: ConsoleClient, token: str, code: str
) -> None:
    answer = browser.form("/console/login", {"token": token}, follow=True)
    assert answer.url.path == "/console/login"
    kind, shown_code, text = notice_text(answer.text) or ("", "", "")
    assert (kind, shown_code) == ("error", code), answer.text
    assert text  # a sentence: what to do
    assert SESSION_COOKIE not in browser.client.cookies


def test_a_token_of_an_unknown_organisation_does_not_sign_in(browser: ConsoleClient) -> None:
    answer = browser.sign_in("clinician", "org-nobody", sub="dr-z")
    assert notice_text(answer.text)[:2] == ("error", "organisation-unknown")  # type: ignore[index]
    assert SESSION_COOKIE not in browser.client.cookies


def test_pages_without_a_session_go_to_the_login(browser: ConsoleClient) -> None:
    for path in ("/console/", "/console/patients", "/console/library", "/console/me"):
        answer = browser.client.get(path, follow_redirects=False)
        assert (answer.status_code, answer.headers.get("location")) == (303, "/console/login"), path


def test_a_forged_cookie_counts_as_a_failed_token_and_signs_out(browser: ConsoleClient) -> None:
    browser.client.cookies.set(SESSION_COOKIE, "eyJhbGciOiJIUzI1NiJ9.e30.forged", path="/console")
    answer = browser.client.get("/console/patients", follow_redirects=False)
    assert answer.headers.get("location") == "/console/login"
    assert f"{SESSION_COOKIE}=" in answer.headers.get("set-cookie", "") and "Max-Age=0" in answer.headers["set-cookie"]


def test_sign_out_ends_the_session(clinic: ConsoleClient) -> None:
    out = clinic.form("/console/logout", {}, sent_from="/console/patients")
    assert out.status_code == 303
    assert clinic.client.get("/console/patients", follow_redirects=False).headers["location"] == "/console/login"


# -- forms from elsewhere --------------------------------------------------------------------------


@pytest.mark.parametrize("origin", [None, "http://evil.example", "null"])
def test_a_form_from_another_site_changes_nothing(clinic: ConsoleClient, origin: str | None) -> None:
    headers = {"Origin": origin} if origin else {}
    answer = clinic.client.post(
        "/console/patients", data={"name": "Eve", "external_id": "E-1"}, headers=headers, follow_redirects=True
    )
    assert notice_text(answer.text)[:2] == ("error", "cross-site-form")  # type: ignore[index]
    assert "Eve" not in clinic.page("/console/patients").text


def test_the_browser_saying_same_origin_is_enough(clinic: ConsoleClient) -> None:
    answer = clinic.client.post(
        "/console/patients",
        data={"name": "Sam Same", "external_id": "S-1"},
        headers={"Sec-Fetch-Site": "same-origin"},
        follow_redirects=False,
    )
    assert answer.status_code == 303 and answer.headers["location"].startswith("/console/patients/")


def test_an_upload_from_another_site_is_refused_as_json(clinic: ConsoleClient) -> None:
    pid = register(clinic)
    answer = clinic.client.post(
        f"/console/api/v1/patients/{pid}/files",
        files={"file": ("a.pdf", make_pdf())},
        headers={"Origin": "http://evil.example"},
    )
    assert answer.status_code == 403 and answer.json()["code"] == "cross-site-form"


def test_the_console_api_is_the_api_with_the_session_cookie(clinic: ConsoleClient, console_settings: Settings) -> None:
    pid = register(clinic)
    bearer_headers = {
        "Authorization": "Bearer " + mint_token(console_settings.secret_key, role="clinician", org="org-a", sub="dr-a")
    }
    for path in (f"/v1/patients/{pid}", f"/v1/patients/{pid}/files", "/v1/library/files"):
        through_console = clinic.client.get("/console/api" + path)
        direct = clinic.client.get(path, headers=bearer_headers)
        assert through_console.status_code == direct.status_code == 200, path
        assert through_console.json() == direct.json(), path
    # The cookie is what counts under /console/api: a bearer token alone is not a session.
    cookies = dict(clinic.client.cookies)
    clinic.client.cookies.clear()
    try:
        alone = clinic.client.get(f"/console/api/v1/patients/{pid}", headers=bearer_headers)
        assert alone.status_code == 401 and alone.json()["code"] == "authentication-required"
    finally:
        clinic.client.cookies.update(cookies)
    # A resumable upload's address stays under /console/api, where the cookie goes.
    created = clinic.client.post(
        f"/console/api/v1/patients/{pid}/uploads",
        headers={"Origin": BASE_URL, "Tus-Resumable": "1.0.0", "Upload-Length": "10", "Upload-Metadata": ""},
    )
    assert created.status_code == 201, created.text
    assert created.headers["location"].startswith(f"/console/api/v1/patients/{pid}/uploads/")
    problem = clinic.client.get("/console/api/v1/files/no-such-file")
    assert problem.status_code == 404 and problem.json()["instance"] == "/console/api/v1/files/no-such-file"
    # Only the API's own /v1 is handed on.
    assert clinic.client.get("/console/api/healthz").status_code == 404
    assert clinic.client.get("/console/api/schema/openapi.json").status_code == 404


# -- patients --------------------------------------------------------------------------------------


def test_register_goes_to_the_profile_with_a_notice_shown_once(clinic: ConsoleClient) -> None:
    pid = register(clinic, "Ann Smith", "MRN-7", email="ann@example.org")
    profile = clinic.page(f"/console/patients/{pid}")
    assert notice_text(profile.text) == ("ok", "", "Patient registered.")
    assert "MRN-7" in profile.text and "ann@example.org" in profile.text
    assert "Quick Actions" in profile.text and f"/console/patients/{pid}/files" in profile.text
    assert notice_text(clinic.page(f"/console/patients/{pid}").text) is None


def test_register_refuses_what_is_missing_with_each_field_named(clinic: ConsoleClient) -> None:
    answer = clinic.form(
        "/console/patients",
        {"name": "", "external_id": "", "email": "nope"},
        sent_from="/console/patients/new",
        follow=True,
    )
    assert answer.url.path == "/console/patients/new"
    kind, code, text = notice_text(answer.text) or ("", "", "")
    assert (kind, code) == ("error", "invalid-request")
    for line in ("name: give the patient's name", "external_id: give the clinic's number", "email: an email address"):
        assert line in text


def test_search_is_posted_and_matches_name_or_number_ignoring_case(clinic: ConsoleClient) -> None:
    register(clinic, "Ann Smith", "MRN-1")
    register(clinic, "Bob Jones", "XR-77")
    by_name = clinic.form("/console/patients/search", {"q": "sMiTh"}, sent_from="/console/patients")
    assert by_name.status_code == 200 and "Ann Smith" in by_name.text and "Bob Jones" not in by_name.text
    by_number = clinic.form("/console/patients/search", {"q": "xr-7"}, sent_from="/console/patients")
    assert "Bob Jones" in by_number.text and "Ann Smith" not in by_number.text
    partial = clinic.client.post(
        "/console/patients/search", data={"q": "ann"}, headers={"Origin": BASE_URL, "HX-Request": "true"}
    )
    assert "<html" not in partial.text and "Ann Smith" in partial.text  # htmx swaps in the rows only


def test_what_a_patient_typed_is_escaped(clinic: ConsoleClient) -> None:
    pid = register(clinic, "<script>alert(1)</script>", "MRN-X")
    page = clinic.page(f"/console/patients/{pid}").text
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_patient_of_another_organisation_is_not_found(clinic: ConsoleClient, console_settings: Settings) -> None:
    pid = register(clinic)
    with TestClient(clinic.client.app, base_url=BASE_URL) as other_client:
        other = ConsoleClient(other_client, console_settings)
        other.sign_in("clinician", "org-b", sub="dr-b")
        page = other.page(f"/console/patients/{pid}")
        assert page.status_code == 404 and "Ann Smith" not in page.text


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12)


def test_find_patients_matches_a_case_insensitive_substring(tmp_path: Path, migrated_database: Path) -> None:
    """Whatever is typed (``%``, ``_``, backslashes included) matches as text, like Python's ``in``."""
    import asyncio
    import itertools

    from careshare.core.runtime import Careshare

    organisations = (f"org-find-{n}" for n in itertools.count())
    with asyncio.Runner() as runner:
        cs = Careshare.build(copied_settings(tmp_path, migrated_database))
        runner.run(cs.start())
        try:

            @hsettings(max_examples=40, deadline=None)
            @given(
                people=st.lists(names, min_size=1, max_size=6),
                pick=st.integers(0, 5),
                cut=st.tuples(st.integers(0, 12), st.integers(0, 12)),
            )
            def check(people: list[str], pick: int, cut: tuple[int, int]) -> None:
                who = Principal(subject="dr-a", role="clinician", org=next(organisations))
                chosen = people[pick % len(people)]
                start, stop = sorted(cut)
                query = chosen[start:stop] or chosen

                async def found() -> list[int]:
                    await register_organisation(cs.engine, who.org)
                    async with cs.engine.begin() as conn:
                        for n, name in enumerate(people):
                            await register_patient(conn, who, name=name, external_id=f"#{n}", email=None)
                    async with cs.engine.connect() as conn:
                        page, _ = await find_patients(conn, who, query=query, cursor=None, limit=50)
                    return sorted(int(p.external_id[1:]) for p in page)

                wanted = fold(query.strip())
                expected = [
                    n for n, name in enumerate(people) if wanted and (wanted in fold(name) or wanted in f"#{n}")
                ]
                expected = expected if wanted else list(range(len(people)))
                assert runner.run(found()) == expected

            check()
        finally:
            runner.run(cs.close())


# -- files -----------------------------------------------------------------------------------------


def test_files_upload_through_the_console_api_and_a_refusal_shows_its_sentence(clinic: ConsoleClient) -> None:
    pid = register(clinic)
    good = clinic.upload(f"/console/api/v1/patients/{pid}/files", "leaflet.pdf", make_pdf(2))
    assert good.status_code in (201, 202), good.text
    locked = clinic.upload(f"/console/api/v1/patients/{pid}/files", "locked.pdf", make_pdf(user_password="secret"))
    assert locked.status_code == 422 and locked.json()["code"] == "pdf-password-protected"
    page = clinic.page(f"/console/patients/{pid}/files").text
    assert "leaflet.pdf" in page and "locked.pdf" in page
    assert locked.json()["detail"] in page.replace("&#39;", "'")
    assert f'data-upload-url="/console/api/v1/patients/{pid}/files"' in page
    assert f'data-tus-url="/console/api/v1/patients/{pid}/uploads"' in page
    file_page = clinic.page(f"/console/files/{good.json()['id']}")
    assert file_page.status_code == 200 and "leaflet.pdf" in file_page.text


def test_a_file_from_the_patient_is_marked_new_until_seen(browser: ConsoleClient, console_settings: Settings) -> None:
    browser.sign_in("clinician", "org-a", sub="dr-a")
    pid = register(browser)
    with TestClient(browser.client.app, base_url=BASE_URL) as patient_client:
        patient = ConsoleClient(patient_client, console_settings)
        assert patient.sign_in("patient", "org-a", patient=pid).url.path == "/console/me"
        sent = patient.upload("/console/api/v1/me/files", "photo.pdf", make_pdf(text="from home"))
        assert sent.status_code in (201, 202), sent.text
        assert "photo.pdf" in patient.page("/console/me/files").text
        assert patient.page("/console/patients").status_code == 403  # clinicians' pages
    profile = browser.page(f"/console/patients/{pid}").text
    assert "1 new file from the patient" in profile
    files = browser.page(f"/console/patients/{pid}/files").text
    assert 'class="badge">New' in files
    seen = browser.form(
        f"/console/files/{sent.json()['id']}/seen", {}, sent_from=f"/console/patients/{pid}/files", follow=True
    )
    assert notice_text(seen.text) == ("ok", "", "Marked as seen.")
    assert 'class="badge">New' not in seen.text


def test_the_dev_form_signs_in_a_patient_of_the_organisation_only(clinic: ConsoleClient) -> None:
    pid = register(clinic)
    clinic.form("/console/logout", {}, sent_from="/console/patients")
    wrong = clinic.form("/console/login", {"role": "patient", "org": "org-b", "patient_id": pid}, follow=True)
    assert "$.patient_id" in (notice_text(wrong.text) or ("", "", ""))[2]
    right = clinic.form("/console/login", {"role": "patient", "org": "org-a", "patient_id": pid}, follow=True)
    assert right.url.path == "/console/me" and "Hello Ann Smith" in right.text


def test_nothing_typed_about_a_patient_reaches_a_url(clinic: ConsoleClient) -> None:
    """Forms post; redirects carry opaque ids only."""
    answer = clinic.form(
        "/console/patients", {"name": "Zed Private", "external_id": "NHS 999"}, sent_from="/console/patients/new"
    )
    assert "Zed" not in answer.headers["location"] and "999" not in answer.headers["location"]
    page = clinic.page("/console/patients").text
    assert 'method="post" action="/console/patients/search"' in page


# -- a plugin's pages ------------------------------------------------------------------------------


def test_hook_careshare_console(tmp_path: Path, migrated_database: Path) -> None:
    """A plugin's pages, templates and links come with it, and go when it is not loaded."""
    from litestar import get

    from careshare import hookimpl
    from careshare.core.plugins import get_plugin_manager
    from careshare.web import ConsolePages, NavEntry, clinician, console_page

    folder = tmp_path / "ward_templates"
    folder.mkdir()
    (folder / "board.html").write_text(
        '{% extends "console/base.html" %}{% block content %}<p id="board">Beds for {{ who }}</p>{% endblock %}'
    )

    @get("/ward", dependencies={"principal": Provide(clinician)}, sync_to_thread=False)
    def board(principal: NamedDependency[Principal]) -> Any:
        return console_page("ward/board.html", title="Ward board", who=principal.org)

    class Ward:
        @hookimpl
        def careshare_console(self) -> list[ConsolePages]:
            nav = [
                NavEntry("Ward", "/ward", order=30),
                NavEntry("Beds", "/patients/{pid}/beds", place="patient", quick_action="Book a bed"),
            ]
            return [ConsolePages("ward", routes=[board], templates=folder, nav=nav)]

    settings = copied_settings(tmp_path, migrated_database)
    with_ward = get_plugin_manager(plugins=[Ward()])
    with TestClient(create_app(settings, with_ward), base_url=BASE_URL) as client:
        clinic = ConsoleClient(client, settings)
        patients = clinic.sign_in("clinician", "org-a", sub="dr-a")
        assert '<a href="/console/ward">Ward</a>' in patients.text
        page = clinic.page("/console/ward")
        assert page.status_code == 200 and '<p id="board">Beds for org-a</p>' in page.text
        assert '<a href="/console/ward" aria-current="page">Ward</a>' in page.text
        pid = register(clinic)
        profile = clinic.page(f"/console/patients/{pid}").text
        assert f'href="/console/patients/{pid}/beds">Book a bed</a>' in profile
    without = get_plugin_manager()
    with TestClient(create_app(settings, without), base_url=BASE_URL) as client:
        clinic = ConsoleClient(client, settings)
        patients = clinic.sign_in("clinician", "org-a", sub="dr-a")
        assert "/console/ward" not in patients.text
        assert clinic.page("/console/ward").status_code == 404


def test_a_dicom_shows_its_rendering_and_a_video_plays_with_seeking(clinic: ConsoleClient) -> None:
    import numpy as np

    from careshare.testing.strategies.dicom import build_dataset, to_bytes
    from careshare.testing.strategies.video import VideoSpec, make_video

    pid = register(clinic)
    scan = to_bytes(build_dataset(np.arange(64, dtype=np.uint8).reshape(8, 8), PatientName="Doe^Jane"))
    movie = make_video(VideoSpec(frames=12, width=64, height=48, moov_at_end=True))
    shown = {}
    for name, data in (("knee.dcm", scan), ("exercise.mp4", movie)):
        answer = clinic.upload(f"/console/api/v1/patients/{pid}/files", name, data)
        assert answer.status_code == 201, answer.text
        shown[name] = answer.json()["id"]
    knee = clinic.page(f"/console/files/{shown['knee.dcm']}").text
    assert f'<img src="/console/api/v1/files/{shown["knee.dcm"]}/content?rendition=shareable"' in knee
    assert "Doe" not in knee  # the rendering, never the DICOM's patient tags
    film = clinic.page(f"/console/files/{shown['exercise.mp4']}").text
    source = f"/console/api/v1/files/{shown['exercise.mp4']}/content?rendition=shareable"
    assert f'<video controls preload="metadata" src="{source}"' in film
    whole = clinic.client.get(source)
    part = clinic.client.get(source, headers={"Range": "bytes=100-199"})
    assert whole.status_code == 200 and whole.headers["content-type"].startswith("video/")
    assert part.status_code == 206 and part.content == whole.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(whole.content)}"


def test_the_library_takes_uploads_and_lists_them_for_clinicians_only(
    clinic: ConsoleClient, console_settings: Settings
) -> None:
    sent = clinic.upload("/console/api/v1/library/files", "exercises.pdf", make_pdf(3))
    assert sent.status_code == 201, sent.text
    page = clinic.page("/console/library")
    assert page.status_code == 200 and "exercises.pdf" in page.text
    assert 'data-upload-url="/console/api/v1/library/files"' in page.text
    pid = register(clinic)
    with TestClient(clinic.client.app, base_url=BASE_URL) as patient_client:
        patient = ConsoleClient(patient_client, console_settings)
        patient.sign_in("patient", "org-a", patient=pid)
        refused = patient.page("/console/library")
        assert refused.status_code == 403 and "exercises.pdf" not in refused.text


# -- times -----------------------------------------------------------------------------------------

ZONES = ("UTC", "Europe/London", "America/New_York", "Asia/Kolkata", "Pacific/Chatham")


@hsettings(max_examples=60)
@given(
    instant=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.sampled_from([UTC, None])
    ),
    zone=st.sampled_from((None, *ZONES)),
)
def test_a_time_is_written_in_its_zone_and_keeps_its_instant(instant: datetime, zone: str | None) -> None:
    shown = str(when(instant, zone))
    found = re.fullmatch(r'<time datetime="([^"]+)"( data-local)?>(\d\d \w{3} \d{4} \d\d:\d\d) (\S+)</time>', shown)
    assert found is not None, shown
    written = datetime.fromisoformat(found.group(1))
    assert written == (instant if instant.tzinfo else instant.replace(tzinfo=UTC))  # the same instant, always
    local = written.astimezone(zoneinfo.ZoneInfo(zone or "UTC"))
    assert found.group(3) == local.strftime("%d %b %Y %H:%M") and found.group(4) == local.tzname()
    assert bool(found.group(2)) is (zone is None)  # only a time without a zone of its own is the reader's


def test_a_date_alone_is_never_shifted_and_nothing_is_empty() -> None:
    end_of_day = datetime(2030, 3, 4, 23, 59, 59, tzinfo=UTC)
    assert str(when(end_of_day, date_only=True)) == '<time datetime="2030-03-04">04 Mar 2030</time>'
    assert str(when(None)) == str(when("")) == ""
    assert 'datetime="2030-03-04T23:59:59+00:00"' in str(when("2030-03-04T23:59:59+00:00"))
    assert str(when(end_of_day, "No/Such_Zone")).endswith("23:59 UTC</time>")  # an unknown zone reads as UTC


def test_the_console_is_off_with_careshare_console_0(tmp_path: Path, migrated_database: Path) -> None:
    """An API-only server: no page, no static file and no /console/api address answers."""
    settings = copied_settings(tmp_path, migrated_database, CARESHARE_CONSOLE="0")
    token = mint_token(settings.secret_key, role="clinician", org="org-a", sub="dr-a")
    with TestClient(create_app(settings), base_url=BASE_URL) as client:
        client.cookies.set(SESSION_COOKIE, token)
        for path in (
            "/console/login",
            "/console/patients",
            "/console/static/console.js",
            "/console/api/v1/library/files",
        ):
            assert client.get(path).status_code == 404, path
        assert client.get("/v1/library/files", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    with TestClient(create_app(copied_settings(tmp_path / "on", migrated_database)), base_url=BASE_URL) as client:
        assert client.get("/console/login").status_code == 200  # on unless turned off
