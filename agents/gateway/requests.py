"""What every request body of the gateway's API is held to, beyond its own fields."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, model_validator

# Every endpoint with a JSON body answers 400 when the body cannot be read at all (not JSON, not UTF-8)
BAD_BODY: dict[int | str, dict[str, Any]] = {400: {"description": "the body is not JSON (or not UTF-8 text)"}}


def has_nul(value: Any) -> bool:
    """Whether a NUL character hides anywhere in the value: PostgreSQL text and jsonb cannot hold one, so an
    event carrying it would be refused by every read model it reaches."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(has_nul(v) for v in value)
    return False


def _json_integer(value: Any) -> Any:
    # JSON Schema's integer: 3 and 3.0, not true, not "3" (pydantic's lax int takes all four)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected an integer")
    return value


# The field types of request bodies, each exactly what its JSON Schema says (no silent coercion): text
# without NUL, an integer, a number that is no boolean, a boolean that is no number.
Text = Annotated[str, Field(pattern=r"^[^\x00]*$")]
Flag = StrictBool


def integer(**bounds: int) -> Any:
    """An integer field type with bounds (ge, le) that its JSON Schema shows as minimum/maximum."""
    return Annotated[Annotated[int, Field(**bounds)], BeforeValidator(_json_integer)]


def number(**bounds: float) -> Any:
    return Annotated[float, Field(strict=True, allow_inf_nan=False, **bounds)]


class RequestModel(BaseModel):
    """Unknown fields are an error, not ignored; no text may carry a NUL character (the field types say so
    in the schema; this says it again for any text nested deeper)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if has_nul(data):
            raise ValueError("text may not contain NUL (\\u0000) characters")
        return data
