"""``careshare recheck``: stored files checked again by today's handlers; what was shared stays pinned."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from careshare.core import db
from careshare.core.recheck import handler_generation
from careshare.testing import make_pdf

if TYPE_CHECKING:
    from litestar.testing import AsyncTestClient

    from careshare.core.settings import Settings


@given(st.integers(0, 10**6), st.text(max_size=30).filter(lambda t: not t[:1].isdigit()))
def test_the_handler_generation_is_the_leading_number(number: int, rest: str) -> None:
    assert handler_generation(f"{number}{rest}") == number
    assert handler_generation(f"  {number} (lib 1.2)") == number


@given(st.one_of(st.none(), st.text(max_size=20).filter(lambda t: not t.strip()[:1].isdigit())))
def test_a_version_without_a_number_has_no_generation(version: str | None) -> None:
    assert handler_generation(version) is None


def _recheck(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARESHARE_")}
    env.update(CARESHARE_DATA_DIR=str(settings.data_dir), CARESHARE_SECRET_KEY=settings.secret_key)
    command = [str(Path(sys.executable).with_name("careshare")), "recheck", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=True)


async def _age(client: AsyncTestClient[Any], fid: str) -> None:
    """Make a file look checked by an older handler generation that made no shareable copy."""
    engine = client.app.state.careshare.engine
    async with engine.begin() as conn:
        check = (await conn.execute(sa.select(db.files.c.check).where(db.files.c.id == fid))).scalar_one()
        old = {**check, "handler_version": "1 (an older pdf handler)"}
        await conn.execute(sa.update(db.files).where(db.files.c.id == fid).values(check=old))
        await conn.execute(
            sa.delete(db.renditions).where(db.renditions.c.file_id == fid, db.renditions.c.role != "original")
        )


async def test_recheck_renews_the_renditions_of_old_files_and_leaves_shared_copies_pinned(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, settings: Settings
) -> None:
    uploaded = await client.post(f"/v1/patients/{patient_id}/files", content=make_pdf(pages=2), headers=clinician)
    fid = uploaded.json()["id"]
    current = uploaded.json()["check"]["handler_version"]
    sent = await client.post(
        f"/v1/patients/{patient_id}/messages", json={"body": "Results", "file_ids": [fid]}, headers=clinician
    )
    assert sent.status_code == 201, sent.text
    pinned = sent.json()["attachments"][0]
    newer = await client.post(f"/v1/patients/{patient_id}/files", content=make_pdf(pages=3), headers=clinician)
    await _age(client, fid)
    assert [r["role"] for r in (await client.get(f"/v1/files/{fid}", headers=clinician)).json()["renditions"]] == [
        "original"
    ]

    dry = _recheck(settings, "--kind", "pdf", "--handler-version-below", "2", "--dry-run")
    assert "1 file(s) would be queued" in dry.stderr
    assert _recheck(settings, "--kind", "image").stderr.strip().startswith("0 file(s)")
    done = _recheck(settings, "--kind", "pdf", "--handler-version-below", "2")
    assert "1 file(s) queued" in done.stderr

    for _ in range(300):  # the app's own worker runs the job
        shown = (await client.get(f"/v1/files/{fid}", headers=clinician)).json()
        if shown["check"].get("rechecked"):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the recheck did not run within 30 s")
    assert shown["status"] == "ready"
    assert shown["check"]["handler_version"] == current
    assert {r["role"] for r in shown["renditions"]} >= {"original", "shareable"}
    # The message that was sent keeps the bytes it was sent with.
    message = (await client.get(f"/v1/patients/{patient_id}/messages", headers=clinician)).json()["items"][0]
    assert message["attachments"][0]["sha256"] == pinned["sha256"]
    # A file of today's generation was not touched.
    untouched = (await client.get(f"/v1/files/{newer.json()['id']}", headers=clinician)).json()
    assert not untouched["check"].get("rechecked")
