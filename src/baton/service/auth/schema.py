"""Request and response bodies of the authentication endpoints."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=64, examples=["disp1"])
    password: str = Field(min_length=1, max_length=1024)


class Me(BaseModel):
    """Who the caller is and what the role allows."""

    user: str
    name: str
    role: str
    permissions: list[str]
    max_priority: int
    max_priority_name: str
    via: str
    position: bool
    scope: str = Field(
        description="whom the caller may act for: self, groups, centre or all (docs/service.md)"
    )
    acts_for: list[str] | None = Field(
        description="the user ids the caller may act for; null: everyone"
    )


class LoginResponse(Me):
    token: str = Field(description="the session token (also set as the baton_session cookie)")
    expires_in: float


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str | None = Field(default=None, max_length=128)
    expires_in_days: float | None = Field(default=90, gt=0, le=3650, description="null: never")


class TokenView(BaseModel):
    id: str
    user: str
    kind: str
    label: str | None
    created_at: str = Field(description="ISO 8601 with the zone, like every time in the API")
    expires_at: str | None = Field(description="null: the token never expires")
    revoked_at: str | None


class NewToken(TokenView):
    token: str = Field(description="shown once: store it now")
