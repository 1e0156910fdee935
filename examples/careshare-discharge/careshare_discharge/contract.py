"""How careshare's contract kit drives this channel: one request makes a summary with its files."""

from __future__ import annotations

from typing import Any

from careshare.testing.contract import Contract
from careshare.testing.targets import Adapter

SEND = "/v1/patients/{pid}/discharge-summaries"


class Summary(Adapter):
    target, batch, item_per_request, shares = "discharge-summary", 11, True, True

    async def attach(self, world: Any, item: Any, files: Any) -> Any:
        body = {"title": world.clinical_text, "file_ids": [f.file_id for f in files]}
        return await world.client.post(SEND.format(pid=world.patient_id), json=body, headers=world.clinician)

    async def share(self, world: Any, item: Any, files: Any) -> str:
        return str((await self.attach(world, item, files)).json()["id"])


CONTRACT = Contract(
    adapters=[Summary()], bodies=lambda ids: {("POST", SEND): {"json": {"title": "Discharge", "file_ids": []}}}
)
