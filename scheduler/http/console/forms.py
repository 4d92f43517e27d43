"""The console's form posts: url-encoded, small, one value per name.

Read here rather than through the framework's form support, which would need a multipart
parser the console never uses; every refusal is an `InvalidInput` the error pages show.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import parse_qsl

from starlette.requests import Request

from shared.errors import InvalidInput

FORM_TYPE: Final = "application/x-www-form-urlencoded"
MAX_FORM_BYTES: Final = 16 * 1024
MAX_FIELDS: Final = 20
MAX_REASON_CHARS: Final = 2000


class FormTooLarge(InvalidInput):
    """The form is larger than the console's forms can be (HTTP 413)."""


async def read_form(request: Request) -> dict[str, str]:
    """The posted fields; InvalidInput for anything that is not one of the console's forms."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        raise InvalidInput(f"expected a form ({FORM_TYPE})")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormTooLarge(f"the form is larger than {MAX_FORM_BYTES} bytes")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                          max_num_fields=MAX_FIELDS, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("the form is not valid UTF-8 form data") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise InvalidInput(f"the form field {name!r} is given more than once")
        fields[name] = value
    return fields


def optional_text(fields: dict[str, str], name: str, *,
                  max_chars: int = MAX_REASON_CHARS) -> str | None:
    """A free-text field: blank is absent; Postgres text takes no NUL."""
    value = fields.get(name, "").strip()
    if not value:
        return None
    if len(value) > max_chars:
        raise InvalidInput(f"{name}: at most {max_chars} characters")
    if "\x00" in value:
        raise InvalidInput(f"{name}: must not contain a NUL character")
    return value
