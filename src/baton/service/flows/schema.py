"""Request bodies of the flow endpoints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class StartFlow(BaseModel):
    """Start a library flow. ``args`` are the flow's parameters by name (``GET /api/library``
    lists them with their kinds); ``priority`` (a level name or an integer) defaults to the
    flow's own and may not exceed the caller's cap."""

    model_config = ConfigDict(extra="forbid")

    flow: str = Field(min_length=1, max_length=64, examples=["call"])
    args: dict[str, Any] = Field(
        default_factory=dict, examples=[{"caller": "disp1", "callee": "unit1"}]
    )
    priority: str | int | None = Field(default=None, examples=["FLASH"])
    wait: bool = Field(
        default=False, description="answer when the flow has ended (with its outcome and value)"
    )

    @field_validator("priority", mode="before")
    @classmethod
    def _not_a_boolean(cls, v: object) -> object:
        # JSON ``true`` would otherwise be taken as priority 1.
        if isinstance(v, bool):
            raise ValueError("a priority is a level name or an integer, not a boolean")
        # Anything else (1.5, NaN, a list) is named here, not as the union's parts
        # ("priority.str: input should be a valid string").
        if v is not None and not isinstance(v, str | int):
            raise ValueError("a priority is a level name or an integer")
        return v


class SendCommand(BaseModel):
    """A command to a running flow (its ``commands``), with its arguments (``{"user": id}``)."""

    model_config = ConfigDict(extra="forbid")

    command: str = Field(min_length=1, max_length=64, examples=["add"])
    args: dict[str, Any] = Field(default_factory=dict, examples=[{"user": "unit2"}])


class CancelFlow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=256)
