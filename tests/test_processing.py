"""Handler isolation: a hostile file costs at most its own time limit, and the server goes on."""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

import pytest
from litestar.testing import AsyncTestClient

from careshare import hookimpl
from careshare.core.models import Identification, Processed
from careshare.core.plugins import get_plugin_manager
from careshare.host import create_app
from careshare.testing import bearer, hostile, make_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from careshare.core.settings import Settings


@pytest.fixture
def limited(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path / "data", CARESHARE_HANDLER_TIME_LIMIT="2", CARESHARE_HANDLER_MEMORY_LIMIT=str(1024**3)
    )


@pytest.fixture
async def hostile_client(limited: Settings) -> AsyncIterator[tuple[AsyncTestClient[Any], dict[str, str], str]]:
    pm = get_plugin_manager(plugins=[hostile])
    headers = bearer(limited, "clinician", "org-a", sub="dr-h")
    async with AsyncTestClient(app=create_app(limited, plugins=pm)) as client:
        patient = await client.post("/v1/patients", json={"name": "H", "external_id": "H1"}, headers=headers)
        yield client, headers, patient.json()["id"]


async def _send(setup: tuple[AsyncTestClient[Any], dict[str, str], str], behaviour: str) -> Any:
    client, headers, pid = setup
    body = hostile.MAGIC + behaviour.encode() + b"\n" + os.urandom(16)
    return await client.post(f"/v1/patients/{pid}/files", content=body, headers=headers)


def _nothing_staged(settings: Settings) -> bool:
    staging = settings.data_dir / "blobs" / "staging"
    return not staging.exists() or not any(staging.iterdir())


async def test_handlers_of_importable_plugins_run_in_another_process(hostile_client: Any) -> None:
    response = await _send(hostile_client, "fine")
    assert response.status_code == 201, response.text
    assert response.json()["metadata"]["pid"] != os.getpid()


async def test_a_hanging_handler_is_refused_and_the_server_goes_on(hostile_client: Any, limited: Settings) -> None:
    response = await _send(hostile_client, "hang")
    assert response.status_code == 422
    assert response.json()["code"] == "processing-timeout"
    assert _nothing_staged(limited)
    after = await _send(hostile_client, "fine")
    assert after.status_code == 201


async def test_a_handler_process_that_dies_refuses_the_file(hostile_client: Any, limited: Settings) -> None:
    response = await _send(hostile_client, "exit")
    assert response.status_code == 422
    assert response.json()["code"] == "file-unprocessable"
    assert _nothing_staged(limited)


async def test_a_memory_hog_hits_the_memory_limit_not_the_machine(hostile_client: Any) -> None:
    response = await _send(hostile_client, "hog")
    assert response.status_code == 422
    assert response.json()["code"] == "file-unprocessable"
    assert (await _send(hostile_client, "fine")).status_code == 201


async def test_a_handler_exception_is_refused_without_leaking_its_message(
    hostile_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        response = await _send(hostile_client, "raise")
    assert response.status_code == 422
    assert response.json()["code"] == "file-unprocessable"
    assert "Jane" not in response.text
    assert "RuntimeError" in caplog.text  # the type is logged for the operator ...
    assert "Jane" not in caplog.text  # ... never the message, which can hold patient data


async def test_a_refusal_crosses_the_process_boundary_whole(hostile_client: Any) -> None:
    response = await _send(hostile_client, "refuse")
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "hostile-refused"
    assert problem["detail"] == "Refused with a detail."
    assert problem["hint"] == "extra member"


class SlowInThread:
    """Not importable by name, so the processor falls back to threads."""

    @hookimpl
    def careshare_identify(self, head: bytes) -> Identification | None:
        return Identification(kind="slow", media_type="text/plain") if head.startswith(b"SLOW") else None

    @hookimpl
    def careshare_process(self, kind: str) -> Processed | None:
        if kind != "slow":
            return None
        time.sleep(4)
        return Processed(handler="slow", handler_version="1")


async def test_a_plugin_that_is_not_a_module_runs_in_a_thread_under_the_time_limit(limited: Settings) -> None:
    pm = get_plugin_manager(plugins=[SlowInThread()])
    headers = bearer(limited, "clinician", "org-a", sub="dr-s")
    app = create_app(limited, plugins=pm)
    assert app.state.careshare.processor.isolated is False
    async with AsyncTestClient(app=app) as client:
        patient = await client.post("/v1/patients", json={"name": "S", "external_id": "S1"}, headers=headers)
        response = await client.post(f"/v1/patients/{patient.json()['id']}/files", content=b"SLOW", headers=headers)
    assert response.status_code == 422
    assert response.json()["code"] == "processing-timeout"
