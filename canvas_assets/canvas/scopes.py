"""The Canvas endpoints the project calls, and the developer key scope of each.

A scoped developer key admits a token only on the routes whose scope it holds: the scope is
``url:<VERB>|<route>``, the route written as Canvas's routes name it (``:account_id``,
``:course_id``, ``:id``). Any other route answers 401 "Insufficient scopes on access token.".
This list is what the README tells an admin to enter, what ``canvas-assets canvas check`` calls,
and how a refusal names the scope that is missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Endpoint:
    """One route the project reads, and what for."""

    route: str  # e.g. /api/v1/accounts/:account_id/courses
    purpose: str

    @property
    def scope(self) -> str:
        return f"url:GET|{self.route}"

    def matches(self, path: str) -> bool:
        """Whether ``path`` (``/api/v1/courses/12/sections``, no query) is this route."""
        pattern = re.sub(r":[a-z_]+", "[^/]+", self.route)
        return re.fullmatch(pattern, path) is not None


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("/api/v1/users/:id", "who the token is (users/self); people the account list lacks"),
    Endpoint("/api/v1/accounts/:account_id/terms", "the terms, which become the semesters"),
    Endpoint("/api/v1/accounts/:account_id/courses", "a semester's courses"),
    Endpoint("/api/v1/courses/:id", "single courses Live Events name"),
    Endpoint("/api/v1/courses/:course_id/sections", "each course's sections"),
    Endpoint("/api/v1/courses/:course_id/enrollments", "each course's enrollments"),
    Endpoint("/api/v1/accounts/:account_id/enrollments/:id", "enrollments Live Events name"),
    Endpoint("/api/v1/accounts/:account_id/users", "the people, with their e-mail"),
)
SCOPES: tuple[str, ...] = tuple(endpoint.scope for endpoint in ENDPOINTS)


def endpoint_for(path: str) -> Endpoint | None:
    """The endpoint a request path (no query) belongs to, when the project uses it."""
    return next((endpoint for endpoint in ENDPOINTS if endpoint.matches(path)), None)
