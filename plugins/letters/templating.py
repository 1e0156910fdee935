"""Letter templates: Jinja2 in an immutable sandbox, with a small documented set of variables.

A template's subject and body are plain text (what the patient's app shows); escaping happens
where text becomes HTML, in the letter's PDF layout (:mod:`.pdf`). The sandbox refuses access to
Python internals (``''.__class__``), refuses to change values, caps ranges, repeated strings,
powers, output size and time, and knows no undefined name (a misspelt variable is an error, with
its line, rather than an empty gap in a patient's letter).
"""

from __future__ import annotations

import functools
import re
import time
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from careshare.core.problems import Problem, ProblemType

if TYPE_CHECKING:
    from datetime import date

__all__ = ["TEMPLATE_INVALID", "VARIABLES", "check_template", "render_text", "template_context"]

TEMPLATE_INVALID = ProblemType(
    "template-invalid",
    422,
    "Letter template not valid",
    "This letter template could not be used. Correct the line named in 'line' and save it again.",
)

#: What a template may use, documented in docs/api.md: nothing else is defined.
VARIABLES = {
    "patient.name": "the patient's name",
    "patient.external_id": "the patient's number in the clinic's records",
    "clinician.name": "who writes the letter (the token's subject)",
    "organisation.name": "the organisation's name (letter settings; the organisation id by default)",
    "date": "today, as '1 December 2026'",
    "date_iso": "today, as '2026-12-01'",
}
#: Longest template text (subject or body) and longest rendered letter text, in characters.
MAX_TEMPLATE_CHARS = 100_000
MAX_OUTPUT_CHARS = 200_000
#: A template that takes longer than this to render is refused (a loop over loops).
RENDER_SECONDS = 2.0
#: Largest string or list a template may build with ``*``, and largest exponent of ``**``.
MAX_REPEAT = 100_000
MAX_EXPONENT = 100
#: The file name Jinja2 gives a template made from a string (its frames in tracebacks carry it).
TEMPLATE_NAME = "<template>"
#: A width or count of six digits or more inside a format string ("%1000000s", "{:>1000000}").
_HUGE_WIDTH = re.compile(r"\d{6,}")


class _Deadline(Exception):
    pass


def _check_costs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse arguments that would make a call build something huge (a width, a count, a format)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_REPEAT:
            raise SecurityError("number too large")
        if isinstance(value, str) and ("%" in value or "{" in value) and _HUGE_WIDTH.search(value):
            raise SecurityError("format width too large")


def _guarded(function: Any) -> Any:
    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _check_costs(args, kwargs)
        return function(*args, **kwargs)

    return guarded


class LetterEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, plus limits on what a call, a filter, an operator and a whole render may cost."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self) -> None:
        super().__init__(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
        self.deadline = float("inf")
        self.filters = {name: _guarded(function) for name, function in self.filters.items()}
        self.globals.pop("lipsum", None)

    def _tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise _Deadline

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        self._tick()
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(count, int) and len(seq) * count > MAX_REPEAT:
                    raise SecurityError("repeated value too long")
        if operator == "**" and isinstance(right, int) and abs(right) > MAX_EXPONENT:
            raise SecurityError("exponent too large")
        if operator == "%":
            _check_costs((left,), {})
        return super().call_binop(context, operator, left, right)

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        self._tick()
        _check_costs(args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        self._tick()
        if isinstance(obj, str) and attribute in ("format", "format_map"):
            _check_costs((obj,), {})
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        self._tick()
        return super().getitem(obj, argument)


def template_context(
    *, patient_name: str, external_id: str, clinician: str, organisation: str, today: date
) -> dict[str, Any]:
    return {
        "patient": {"name": patient_name, "external_id": external_id},
        "clinician": {"name": clinician},
        "organisation": {"name": organisation},
        "date": f"{today.day} {today:%B %Y}",
        "date_iso": today.isoformat(),
    }


#: Placeholder values a template is tried with when it is saved.
SAMPLE = {
    "patient_name": "Alex Example",
    "external_id": "MRN-0000",
    "clinician": "dr-example",
    "organisation": "Clinic",
}


def _line_of(exc: BaseException) -> int | None:
    """The template line an error came from: Jinja2 rewrites tracebacks to point into the template."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return exc.lineno
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == TEMPLATE_NAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _refusal(field: str, exc: BaseException) -> Problem:
    line = _line_of(exc)
    where = f"line {line} of the {field}" if line else f"the {field}"
    if isinstance(exc, jinja2.TemplateSyntaxError):
        why = f"it is not valid template syntax ({exc.message})" if exc.message else "it is not valid template syntax"
    elif isinstance(exc, jinja2.UndefinedError):
        why = f"it uses something that is not defined; templates may use {', '.join(VARIABLES)}"
    elif isinstance(exc, SecurityError):
        why = "it does something templates may not do"
    elif isinstance(exc, _Deadline):
        why = f"it takes longer than {RENDER_SECONDS:g} s to fill in"
    else:
        why = f"it cannot be filled in ({type(exc).__name__})"
    # The template's own text is clinic data, not patient data; the message keeps to Jinja2's words.
    return Problem(TEMPLATE_INVALID, f"The letter template cannot be used: {where}: {why}.", field=field, line=line)


def render_text(source: str, context: dict[str, Any], *, field: str) -> str:
    """Fill in one template text (``field`` is ``subject`` or ``body``), or raise ``template-invalid``."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise Problem(
            TEMPLATE_INVALID, f"The {field} is longer than {MAX_TEMPLATE_CHARS:,} characters.", field=field, line=None
        )
    env = LetterEnvironment()
    try:
        template = env.from_string(source)
        env.deadline = time.monotonic() + RENDER_SECONDS
        parts: list[str] = []
        size = 0
        for chunk in template.generate(**context):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise SecurityError("output too long")
            env._tick()
            parts.append(chunk)
    except Problem:
        raise
    except RecursionError as exc:
        raise _refusal(field, exc) from None
    except Exception as exc:  # any failure of a template is the template's, never a 500
        raise _refusal(field, exc) from None
    return "".join(parts)


def check_template(subject: str, body: str, today: date) -> None:
    """Refuse a template that does not parse or does not fill in with sample values."""
    context = template_context(today=today, **SAMPLE)
    render_text(subject, context, field="subject")
    render_text(body, context, field="body")
