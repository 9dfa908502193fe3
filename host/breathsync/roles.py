"""The two people of a session, by the names used everywhere: straps, link, store, engine, exports."""

from __future__ import annotations

from typing import Literal, TypeGuard

Role = Literal["therapist", "client"]
ROLES: tuple[Role, Role] = ("therapist", "client")  # this order wherever both are listed


def is_role(name: str) -> TypeGuard[Role]:
    """Whether ``name`` (a user's or a file's text) is one of the two roles."""
    return name in ROLES
