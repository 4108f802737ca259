"""User changes: a new person, a new name or email."""

from __future__ import annotations

from ..institution import FIRST, LAST
from .bodies import user_body
from .context import ChangeContext


def new_user(ctx: ChangeContext, now: str) -> dict:
    inst, rng = ctx.institution, ctx.rng
    uid = inst.next_id("user")
    first, last = rng.choice(FIRST), rng.choice(LAST)
    login = f"new.user{uid}"
    user = {
        "id": uid,
        "name": f"{first} {last}",
        "sortable_name": f"{last}, {first}",
        "short_name": f"{first} {last}",
        "first_name": first,
        "last_name": last,
        "sis_user_id": f"S{uid:07d}",
        "integration_id": None,
        "login_id": login,
        "email": f"{login}@sandbox.example.edu",
        "created_at": now,
        "updated_at": now,
        "workflow_state": "registered",
        "uuid": "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=40)),
    }
    inst.users[uid] = user
    return user


def update_user(ctx: ChangeContext) -> list[dict]:
    users = [u for u in ctx.live_users() if u["id"] != ctx.actor]
    if not users:
        return []
    user = ctx.rng.choice(users)
    user["updated_at"] = ctx.begin()
    if ctx.rng.random() < 0.5:
        first, last = ctx.rng.choice(FIRST), ctx.rng.choice(LAST)
        user.update(
            name=f"{first} {last}",
            sortable_name=f"{last}, {first}",
            short_name=f"{first} {last}",
            first_name=first,
            last_name=last,
        )
    else:
        local, domain = user["email"].split("@", 1)
        user["email"] = f"{local.split('+')[0]}+v{ctx.institution.version}@{domain}"
    return ctx.events([("user_updated", user_body(ctx, user), None)])
