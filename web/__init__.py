"""careshare's web kit: everything a plugin needs to serve HTTP routes, and nothing of the host's own.

A channel plugin's ``routes.py`` imports ``careshare.core.*``, Litestar and this module only
(``tests/test_layers.py`` checks it): guards for who may call, strict JSON bodies with errors that
name each field, cursor pages, uploads (raw, multipart, ``Prefer: wait``), blob responses with
Range and ETag, the JSON of files and attachments, the OpenAPI declarations of what a handler
reads itself, and the routes and console pages of an organisation's templates. The host builds on the same kit.
"""

from __future__ import annotations

from careshare.web.catalogue import catalogue_pages
from careshare.web.console import (
    CONSOLE,
    ConsolePages,
    NavEntry,
    console_page,
    form_data,
    form_text,
    form_values,
    leave_notice,
    read_notice,
    see_other,
)
from careshare.web.content import RANGE_NOT_SATISFIABLE, blob_response, content_route, download_name, parse_range
from careshare.web.guards import clinician, patient, signed_in
from careshare.web.openapi import (
    AWARE_DATE_TIME,
    CONTENT_PARAMETERS,
    CONTENT_RESPONSES,
    NON_BLANK,
    UPLOAD_MEDIA,
    UPLOAD_PARAMETERS,
    body_schema,
    documented,
    limits,
)
from careshare.web.pages import PageOf, page_route, show_route
from careshare.web.problems import BAD_REQUEST, INVALID_REQUEST, PROBLEM_JSON, REQUEST_TOO_LARGE, problem_response
from careshare.web.templates import NewTemplate, TemplateChange, template_json, template_routes
from careshare.web.uploads import (
    FILE_FIELD,
    UPLOAD_RESPONSES,
    FilePart,
    FormField,
    FormParts,
    Upload,
    answer_upload,
    requested_wait,
    upload_route,
)
from careshare.web.views import (
    PageLimit,
    attachment_json,
    aware_datetime,
    file_json,
    invalid,
    output,
    page_json,
    parse_body,
    patient_json,
    shown,
)

__all__ = [
    "AWARE_DATE_TIME",
    "BAD_REQUEST",
    "CONSOLE",
    "CONTENT_PARAMETERS",
    "CONTENT_RESPONSES",
    "FILE_FIELD",
    "INVALID_REQUEST",
    "NON_BLANK",
    "PROBLEM_JSON",
    "RANGE_NOT_SATISFIABLE",
    "REQUEST_TOO_LARGE",
    "UPLOAD_MEDIA",
    "UPLOAD_PARAMETERS",
    "UPLOAD_RESPONSES",
    "ConsolePages",
    "FilePart",
    "FormField",
    "FormParts",
    "NavEntry",
    "NewTemplate",
    "PageLimit",
    "PageOf",
    "TemplateChange",
    "Upload",
    "answer_upload",
    "attachment_json",
    "aware_datetime",
    "blob_response",
    "body_schema",
    "catalogue_pages",
    "clinician",
    "console_page",
    "content_route",
    "documented",
    "download_name",
    "file_json",
    "form_data",
    "form_text",
    "form_values",
    "invalid",
    "leave_notice",
    "limits",
    "output",
    "page_json",
    "page_route",
    "parse_body",
    "parse_range",
    "patient",
    "patient_json",
    "problem_response",
    "read_notice",
    "requested_wait",
    "see_other",
    "show_route",
    "shown",
    "signed_in",
    "template_json",
    "template_routes",
    "upload_route",
]
