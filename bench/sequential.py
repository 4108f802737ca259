"""What a user writes today: a straightforward sequential canvasapi script reading one term,
one request at a time, 100 per page."""

from __future__ import annotations

import time
import warnings

from canvasapi import Canvas

from canvas_assets.canvas.fetch import COURSE_INCLUDES, COURSE_STATES_FETCHED
from canvas_assets.tables.registry import ENROLLMENT_STATES_FETCHED

ROOT_ACCOUNT_ID = 1  # the sandbox's root account; a script's author knows theirs


def read_term(url: str, token: str, semester: str) -> dict:
    """Courses, sections, enrollments and the account's users with email, as a script would."""
    started = time.perf_counter()
    with warnings.catch_warnings():  # "use HTTPS": the sandbox is local
        warnings.simplefilter("ignore")
        canvas = Canvas(url, token)
    account = canvas.get_account(ROOT_ACCOUNT_ID)
    term = next(t for t in account.get_enrollment_terms(per_page=100) if t.sis_term_id == semester)
    counts = {"courses": 0, "sections": 0, "enrollments": 0, "users": 0}
    courses = account.get_courses(
        enrollment_term_id=term.id,
        include=list(COURSE_INCLUDES),
        state=list(COURSE_STATES_FETCHED),
        per_page=100,
    )
    for course in courses:
        counts["courses"] += 1
        counts["sections"] += sum(
            1 for _ in course.get_sections(include=["total_students"], per_page=100)
        )
        counts["enrollments"] += sum(
            1 for _ in course.get_enrollments(state=list(ENROLLMENT_STATES_FETCHED), per_page=100)
        )
    counts["users"] = sum(1 for _ in account.get_users(include=["email"], per_page=100))
    return {"seconds": time.perf_counter() - started, **counts}
