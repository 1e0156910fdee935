"""Resumable uploads over HTTP: tus 1.0.0 with creation, termination, checksum (sha256) and expiration.

Patients upload at ``/v1/me/uploads``, clinicians at ``/v1/patients/{pid}/uploads``; a finished
upload lands in the patient's files through the same ingest pipeline as a plain upload.
"""

from __future__ import annotations

import base64
import binascii
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

from litestar import Controller, Request, Response, delete, get, head, patch, post, route
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency, Provide
from litestar.enums import HttpMethod, MediaType
from litestar.params import FromPath

from careshare.core import tus
from careshare.core.models import Principal
from careshare.core.patients import get_patient
from careshare.core.problems import Problem, ProblemType
from careshare.core.runtime import Careshare
from careshare.host.problems import exception_handlers
from careshare.web.guards import clinician, patient
from careshare.web.openapi import (
    TUS_CREATE_PARAMETERS,
    TUS_CREATED,
    TUS_NO_CONTENT,
    TUS_OFFSET,
    TUS_PARAMETERS,
    TUS_PATCH_MEDIA,
    TUS_PATCH_PARAMETERS,
    documented,
)
from careshare.web.problems import PROBLEM_JSON
from careshare.web.uploads import requested_wait

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["ClinicUploadController", "PatientUploadController"]

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,termination,checksum,expiration"
CHECKSUM_ALGORITHMS = "sha256"
OFFSET_OCTET_STREAM = "application/offset+octet-stream"
#: Set once the finished upload is a file of the patient's files (final PATCH, and HEAD after).
FILE_ID_HEADER = "Careshare-File-Id"

TUS_RESUMABLE_REQUIRED = ProblemType(
    "tus-resumable-required",
    412,
    "Tus-Resumable header required",
    "Resumable upload requests must carry the header 'Tus-Resumable: 1.0.0'.",
)
TUS_VERSION_UNSUPPORTED = ProblemType(
    "tus-version-unsupported",
    412,
    "tus version not supported",
    "This server speaks tus 1.0.0 only. Send 'Tus-Resumable: 1.0.0'.",
)
UPLOAD_LENGTH_REQUIRED = ProblemType(
    "upload-length-required",
    400,
    "Upload-Length required",
    "Creating an upload needs the file's size in bytes in the Upload-Length header (deferred lengths are not"
    " supported).",
)
UPLOAD_LENGTH_INVALID = ProblemType(
    "upload-length-invalid",
    400,
    "Upload-Length not valid",
    "Upload-Length must be the file's size as a whole number of bytes.",
)
UPLOAD_OFFSET_INVALID = ProblemType(
    "upload-offset-invalid",
    400,
    "Upload-Offset missing or not valid",
    "Send the offset these bytes start at as a whole number in the Upload-Offset header.",
)
UPLOAD_METADATA_MALFORMED = ProblemType(
    "upload-metadata-malformed",
    400,
    "Upload-Metadata not valid",
    "Upload-Metadata must be comma-separated pairs of a key and a base64 value, such as 'filename"
    " c2Nhbi5wZGY=', at most 4096 characters long.",
)
UPLOAD_CONTENT_TYPE = ProblemType(
    "upload-content-type-unsupported",
    415,
    "Content-Type must be application/offset+octet-stream",
    "Send the bytes of a resumable upload with 'Content-Type: application/offset+octet-stream'.",
)
UPLOAD_CHECKSUM_MALFORMED = ProblemType(
    "upload-checksum-malformed",
    400,
    "Upload-Checksum not valid",
    "Upload-Checksum must be the algorithm name, a space and the base64 digest of this request's bytes.",
)
UPLOAD_CHECKSUM_ALGORITHM = ProblemType(
    "upload-checksum-algorithm-unsupported",
    400,
    "Checksum algorithm not supported",
    "This server checks sha256 checksums only. Send 'Upload-Checksum: sha256 <base64 digest>'.",
)


# -- headers in, headers out ----------------------------------------------------------------------------


def _count(value: str | None, missing: ProblemType, invalid: ProblemType) -> int:
    if value is None:
        raise Problem(missing)
    value = value.strip()
    if not value.isdigit() or not value.isascii():
        raise Problem(invalid)
    # Past 18 digits a count is beyond any upload (and int() refuses over 4300 digits): cap it.
    digits = value.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else 10**18


def parse_metadata(header: str | None) -> dict[str, bytes]:
    """The pairs of an ``Upload-Metadata`` header: keys to decoded values (empty when a key has none)."""
    if not header:
        return {}
    if len(header) > tus.MAX_METADATA_CHARS:
        raise Problem(UPLOAD_METADATA_MALFORMED)
    pairs: dict[str, bytes] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition(" ")
        if not key or not key.isascii() or key in pairs or " " in value.strip():
            raise Problem(UPLOAD_METADATA_MALFORMED)
        try:
            pairs[key] = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise Problem(UPLOAD_METADATA_MALFORMED) from None
    return pairs


def parse_checksum(header: str | None) -> bytes | None:
    """The SHA-256 digest an ``Upload-Checksum`` header promises, or None without the header."""
    if header is None:
        return None
    algorithm, _, encoded = header.strip().partition(" ")
    if algorithm.lower() != "sha256":
        raise Problem(UPLOAD_CHECKSUM_ALGORITHM)
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Problem(UPLOAD_CHECKSUM_MALFORMED) from None
    if len(digest) != 32:
        raise Problem(UPLOAD_CHECKSUM_MALFORMED)
    return digest


def _http_date(upload: tus.ResumableUpload) -> str:
    return format_datetime(upload.expires_at, usegmt=True)


def _state_headers(upload: tus.ResumableUpload) -> dict[str, str]:
    headers = {"Upload-Offset": str(upload.offset), "Cache-Control": "no-store"}
    if upload.finished:
        headers[FILE_ID_HEADER] = str(upload.file_id)
    else:
        headers["Upload-Expires"] = _http_date(upload)
    return headers


def _empty(status: int, headers: dict[str, str]) -> Response[None]:
    return Response(content=b"", status_code=status, headers=headers, media_type=MediaType.TEXT)  # type: ignore[arg-type]


def _options_headers(cs: Careshare) -> dict[str, str]:
    return {
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": TUS_EXTENSIONS,
        "Tus-Max-Size": str(cs.settings.max_upload_bytes),
        "Tus-Checksum-Algorithm": CHECKSUM_ALGORITHMS,
    }


async def _require_tus_resumable(request: Request[Any, Any, Any]) -> None:
    """Before auth: every tus request names the protocol version (discovery and status reads aside)."""
    if request.method in (HttpMethod.OPTIONS, HttpMethod.GET):
        return
    version = request.headers.get("tus-resumable")
    if version is None:
        raise Problem(TUS_RESUMABLE_REQUIRED)
    if version.strip() != TUS_VERSION:
        raise Problem(TUS_VERSION_UNSUPPORTED)


def _with_tus_headers(handler: Callable[..., Response[Any]]) -> Callable[..., Response[Any]]:
    def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        response = handler(request, exc)
        headers = {**response.headers, "Tus-Resumable": TUS_VERSION}
        if response.status_code == 412:
            headers["Tus-Version"] = TUS_VERSION
        if isinstance(exc, Problem) and "offset" in exc.extra:
            headers["Upload-Offset"] = str(exc.extra["offset"])
        if request.method == HttpMethod.HEAD:  # a HEAD answer has no body: the status says it all
            refused = _empty(response.status_code, headers)
            refused.media_type = PROBLEM_JSON  # what a GET would have carried: the headers say so
            return refused
        response.headers.update(headers)
        return response

    return handle


# -- who may reach which uploads -----------------------------------------------------------------------------


async def _own_files(cs: NamedDependency[Careshare], principal: NamedDependency[Principal]) -> str:
    return str(principal.patient)


async def _patients_files(
    cs: NamedDependency[Careshare], principal: NamedDependency[Principal], pid: FromPath[str]
) -> str:
    async with cs.reader.connect() as conn:
        await get_patient(conn, principal, pid)
    return pid


# -- the protocol ---------------------------------------------------------------------------------------


class _ResumableUploads(Controller):
    """The tus endpoints; subclasses say whose files they fill (``patient_id``) and who may call."""

    before_request = _require_tus_resumable
    response_headers = [ResponseHeader(name="Tus-Resumable", value=TUS_VERSION)]
    exception_handlers = {kind: _with_tus_headers(handler) for kind, handler in exception_handlers.items()}
    signature_namespace = {"Careshare": Careshare, "Principal": Principal}

    # Named to sort first: Litestar registers a controller's handlers in name order, and once it
    # has added its own OPTIONS handler to a path, a later one of ours would not replace it.
    @route(["/", "/{uid:str}"], http_method=[HttpMethod.OPTIONS], status_code=204, include_in_schema=False)
    async def announce(self, cs: NamedDependency[Careshare]) -> Response[None]:
        """tus discovery: the version, extensions, size limit and checksum algorithms (no sign-in)."""
        return _empty(204, _options_headers(cs))

    @post("/", status_code=201, responses=TUS_CREATED, operation_class=documented(parameters=TUS_CREATE_PARAMETERS))
    async def create(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        patient_id: NamedDependency[str],
    ) -> Response[None]:
        if request.headers.get("upload-defer-length") is not None and request.headers.get("upload-length") is None:
            raise Problem(UPLOAD_LENGTH_REQUIRED)
        length = _count(request.headers.get("upload-length"), UPLOAD_LENGTH_REQUIRED, UPLOAD_LENGTH_INVALID)
        raw_metadata = request.headers.get("upload-metadata")
        metadata = parse_metadata(raw_metadata)
        filename = None
        if metadata.get("filename"):
            try:
                filename = metadata["filename"].decode("utf-8")
            except UnicodeDecodeError:
                raise Problem(UPLOAD_METADATA_MALFORMED, "The filename in Upload-Metadata is not UTF-8.") from None
        async with cs.reader.connect() as conn:
            await get_patient(conn, principal, patient_id)
        upload = await tus.create(
            cs, principal, patient_id=patient_id, length=length, filename=filename, metadata=raw_metadata
        )
        location = f"{request.url.path.rstrip('/')}/{upload.id}"
        return _empty(201, {"Location": location, "Upload-Offset": "0", "Upload-Expires": _http_date(upload)})

    @head("/{uid:str}", responses=TUS_OFFSET, operation_class=documented(parameters=TUS_PARAMETERS))
    async def offset(
        self,
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        patient_id: NamedDependency[str],
        uid: FromPath[str],
    ) -> Response[None]:
        upload = await tus.settle(cs, principal, uid, patient_id=patient_id)
        headers = {**_state_headers(upload), "Upload-Length": str(upload.length)}
        if upload.metadata:
            headers["Upload-Metadata"] = upload.metadata
        return _empty(200, headers)

    @patch(
        "/{uid:str}",
        status_code=204,
        request_max_body_size=None,
        responses=TUS_NO_CONTENT,
        operation_class=documented(media=TUS_PATCH_MEDIA, parameters=TUS_PATCH_PARAMETERS),
    )
    async def append(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        patient_id: NamedDependency[str],
        uid: FromPath[str],
    ) -> Response[None]:
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != OFFSET_OCTET_STREAM:
            raise Problem(UPLOAD_CONTENT_TYPE)
        offset = _count(request.headers.get("upload-offset"), UPLOAD_OFFSET_INVALID, UPLOAD_OFFSET_INVALID)
        sha256 = parse_checksum(request.headers.get("upload-checksum"))
        declared = request.headers.get("content-length")
        upload, _stored = await tus.append(
            cs,
            principal,
            uid,
            patient_id=patient_id,
            offset=offset,
            chunks=request.stream(),
            sha256=sha256,
            declared=int(declared) if declared and declared.isdigit() else None,
            wait=requested_wait(request, cs.settings),
        )
        return _empty(204, _state_headers(upload))

    @delete("/{uid:str}", status_code=204, operation_class=documented(parameters=TUS_PARAMETERS))
    async def terminate(
        self,
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        patient_id: NamedDependency[str],
        uid: FromPath[str],
    ) -> None:
        await tus.terminate(cs, principal, uid, patient_id=patient_id)

    @get("/{uid:str}")
    async def status(
        self,
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        patient_id: NamedDependency[str],
        uid: FromPath[str],
    ) -> dict[str, Any]:
        """Not tus: how far an upload got, and its file once finished, as JSON for apps."""
        upload = await tus.get_upload(cs, principal, uid, patient_id=patient_id)
        return {
            "id": upload.id,
            "offset": upload.offset,
            "length": upload.length,
            "filename": upload.filename,
            "finished": upload.finished,
            "file_id": upload.file_id,
            "file_url": f"/v1/files/{upload.file_id}" if upload.finished else None,
            "created_at": upload.created_at.isoformat(),
            "expires_at": upload.expires_at.isoformat(),
        }


class PatientUploadController(_ResumableUploads):
    """A patient's resumable uploads: the finished file lands in their files with source ``patient``."""

    path = "/v1/me/uploads"
    dependencies = {"principal": Provide(patient), "patient_id": Provide(_own_files)}
    tags = ["me"]


class ClinicUploadController(_ResumableUploads):
    """A clinician's resumable uploads to a patient's files (source ``clinic``)."""

    path = "/v1/patients/{pid:str}/uploads"
    dependencies = {"principal": Provide(clinician), "patient_id": Provide(_patients_files)}
    tags = ["patients"]
