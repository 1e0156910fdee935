"""Real-world files made by other people's tools: each ends, through the whole API, as MANIFEST.tsv says.

Per-format tests call each handler directly; this one goes through upload, identification by
every plugin at once, isolated processing and storage, so a file claimed by the wrong handler or
a crash between them shows up here.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from careshare.testing import corpus_dir

if TYPE_CHECKING:
    from litestar.testing import AsyncTestClient

CORPUS = corpus_dir()

#: What each refusal reason of MANIFEST.tsv means in careshare's codes.
REASONS = {
    "password": {"pdf-password-protected"},
    "corrupt": {"pdf-unreadable", "image-unreadable", "dicom-unreadable", "dicom-truncated", "video-unreadable"},
    "bomb": {"image-too-large"},
    "svg": {"image-svg-unsupported"},
    "nopixels": {"dicom-no-pixel-data"},
    "playlist": {"video-unreadable"},
    "notvideo": {"video-no-video-stream"},
    "format": {"video-format-unsupported"},
}

#: Where careshare's outcome differs from the manifest's judgement, and why.
DISAGREEMENTS = {
    # Five bytes of text ("oops"): no %PDF header, so no handler claims it: unsupported, not corrupt.
    "pdf/qpdf_bad1.pdf": {"unsupported-file-type"},
}


def _manifest() -> list[tuple[str, str]]:
    with (CORPUS / "MANIFEST.tsv").open(newline="") as handle:
        rows = {row["path"]: row["expected"] for row in csv.DictReader(handle, delimiter="\t")}
    return sorted(rows.items())


@pytest.mark.parametrize(("path", "expected"), _manifest(), ids=[path for path, _ in _manifest()])
async def test_corpus_file_ends_as_the_manifest_says(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, path: str, expected: str
) -> None:
    body = (CORPUS / path).read_bytes()
    response = await client.post(
        f"/v1/patients/{patient_id}/files", content=body, params={"filename": Path(path).name}, headers=clinician
    )
    if path in DISAGREEMENTS:
        assert response.status_code >= 400, response.text
        assert response.json()["code"] in DISAGREEMENTS[path], response.text
        return
    if expected == "accept":
        assert response.status_code == 201, response.text
        created = response.json()
        assert created["sha256"] == hashlib.sha256(body).hexdigest()
        assert created["status"] == "ready"
        assert any(r["role"] == "shareable" for r in created["renditions"]), created["renditions"]
        return
    reason = expected.removeprefix("refuse:")
    assert response.status_code in (415, 422), response.text
    problem = response.json()
    assert problem["code"] in REASONS[reason], f"{path}: {problem['code']} is not a '{reason}' refusal"
    assert problem["detail"] and "Traceback" not in problem["detail"]
