"""Live Event bodies built from sandbox records, as Canvas sends them."""

from __future__ import annotations

from .context import ChangeContext


def course_body(ctx: ChangeContext, c: dict) -> dict:
    return {
        "course_id": ctx.id(c["id"]),
        "uuid": c["uuid"],
        "account_id": ctx.id(c["account_id"]),
        "name": c["name"],
        "created_at": c["created_at"],
        "updated_at": c["updated_at"],
        "workflow_state": c["workflow_state"],
    }


def section_body(ctx: ChangeContext, s: dict) -> dict:
    inst = ctx.institution
    course = inst.courses[s["course_id"]]
    first = min(inst.sections_by_course.get(s["nonxlist_course_id"] or s["course_id"], [s["id"]]))
    return {
        "course_section_id": ctx.id(s["id"]),
        "sis_source_id": s["sis_section_id"],
        "sis_batch_id": None,
        "course_id": ctx.id(s["course_id"]),
        "root_account_id": ctx.id(inst.root_account_id),
        "enrollment_term_id": ctx.id(course["enrollment_term_id"]),
        "name": s["name"],
        "default_section": s["id"] == first,
        "accepting_enrollments": True,
        "can_manually_enroll": None,
        "start_at": s["start_at"],
        "end_at": s["end_at"],
        "workflow_state": s["workflow_state"],
        "restrict_enrollments_to_section_dates": s["restrict_enrollments_to_section_dates"],
        "nonxlist_course_id": ctx.id(s["nonxlist_course_id"]),
        "stuck_sis_fields": [],
        "integration_id": s["integration_id"],
    }


def enrollment_body(ctx: ChangeContext, e: dict) -> dict:
    return {
        "enrollment_id": ctx.id(e["id"]),
        "course_id": ctx.id(e["course_id"]),
        "user_id": ctx.id(e["user_id"]),
        "user_name": ctx.institution.users[e["user_id"]]["name"],
        "type": e["type"],
        "created_at": e["created_at"],
        "updated_at": e["updated_at"],
        "limit_privileges_to_course_section": e["limit_privileges_to_course_section"],
        "course_section_id": ctx.id(e["course_section_id"]),
        "associated_user_id": ctx.id(e.get("associated_user_id")),
        "workflow_state": e["enrollment_state"],
    }


def enrollment_state_body(ctx: ChangeContext, e: dict) -> dict:
    now = ctx.institution.now_iso()
    return {
        "enrollment_id": ctx.id(e["id"]),
        "state": e["enrollment_state"],
        "state_started_at": e["updated_at"],
        "state_is_current": True,
        "state_valid_until": None,
        "restricted_access": False,
        "access_is_current": True,
        "state_invalidated_at": None,
        "state_recalculated_at": now,
    }


def user_body(ctx: ChangeContext, u: dict) -> dict:
    return {
        "user_id": ctx.id(u["id"]),
        "uuid": u["uuid"],
        "name": u["name"],
        "short_name": u["short_name"],
        "workflow_state": u["workflow_state"],
        "created_at": u["created_at"],
        "updated_at": u.get("updated_at", u["created_at"]),
        "user_login": u["login_id"],
        "user_sis_id": u["sis_user_id"],
    }
