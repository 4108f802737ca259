"""The institutions a code location serves, and the rules their settings follow.

A vendor names them in the YAML file ``CANVAS_INSTITUTIONS_FILE`` (the contract below); without
the file, the code location serves the one institution of the ``CANVAS_*`` settings, as it always
did. Each institution becomes its own assets, partitions, schema and Canvas pool
(``defs/namespace.py``); adding one is an entry and its secret, never code.

.. code-block:: yaml

    institutions:
      - name: north                # [a-z][a-z0-9_]*: asset keys north/canvas/..., partitions
                                   # semester_north, schema canvas_north, pool canvas_api_north
        base_url: https://north.instructure.com
        account_id: self           # optional
        root_account_uuid: VicYj3cu5BIFpoZhDVU4DZumnlBrWi1grgJEzADs   # routes its Live Events
        token_env: NORTH_CANVAS_TOKEN   # the environment variable holding its token, or a
        # developer key (OAuth2) instead: the variables holding its client id, client secret
        # and the refresh token of its authorisation (canvas-assets canvas connect)
        # client_id_env: NORTH_CANVAS_CLIENT_ID
        # client_secret_env: NORTH_CANVAS_CLIENT_SECRET
        # refresh_token_env: NORTH_CANVAS_REFRESH_TOKEN
        target_semesters: "2026*"  # optional, as CANVAS_TARGET_SEMESTERS
        auto_import: true          # optional, as CANVAS_AUTO_IMPORT_SEMESTERS
        schema: canvas_north       # optional
        queue_url: null            # optional: a queue of its own instead of the shared one

A bad file stops the code location at load with a message naming the entry and the field: an
unknown key, a missing one, a duplicate name, uuid or schema, a token variable that is not set,
both a token and a developer key (or only part of a key), or a bad semester pattern. Tokens and
keys stay in the environment (read by ``dg.EnvVar``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

DEFAULT_ACCOUNT_ID = "self"
DEFAULT_WAREHOUSE_SCHEMA = "canvas"
INSTITUTIONS_FILE_ENV = "CANVAS_INSTITUTIONS_FILE"
CANVAS_API_TOKEN_ENV = "CANVAS_API_TOKEN"
CANVAS_CLIENT_ID_ENV = "CANVAS_CLIENT_ID"
CANVAS_CLIENT_SECRET_ENV = "CANVAS_CLIENT_SECRET"
CANVAS_REFRESH_TOKEN_ENV = "CANVAS_REFRESH_TOKEN"
# A developer key's three variables (an entry's fields, or the single institution's names).
KEY_FIELDS = ("client_id_env", "client_secret_env", "refresh_token_env")


class SettingError(ValueError):
    """A setting has a value we cannot use; the message names the variable or the entry."""


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_IDENTIFIER_RULE = (
    "must be a plain PostgreSQL identifier (letters, digits, underscores, not starting with a "
    "digit)"
)
_INSTITUTION = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# What a semester key is made of (SIS term ids, term-<id>), and a pattern's glob syntax on top.
_KEY_CHARS = "A-Za-z0-9_.:/ -"
_PATTERN = re.compile(rf"^(?:[{_KEY_CHARS}*?]|\[!?[{_KEY_CHARS}]+\])+$")


def validate_schema_name(schema: str) -> str:
    """The schema name, if it is a plain PostgreSQL identifier; else a ValueError saying the
    rule (whoever reads the setting names it: CANVAS_WAREHOUSE_SCHEMA, an entry's ``schema``)."""
    if not _IDENTIFIER.match(schema):
        raise ValueError(f"{_IDENTIFIER_RULE}, got {schema!r}")
    return schema


def _institution_name(value: str) -> str:
    if not _INSTITUTION.match(value):
        raise ValueError(
            "must be a short lowercase name (letters, digits, underscores, starting with a "
            "letter), e.g. state_u"
        )
    return value


def _semester_pattern(value: str) -> str:
    """A semester key or a shell pattern (``2026*``, ``202[56]FA``) that can match one; a
    pattern that can match no semester key (an unclosed ``[``, a stray character) is refused
    rather than silently matching nothing."""
    if not _PATTERN.match(value):
        raise ValueError(
            f"{value!r} is not a semester key or pattern: use the term's SIS id or term-<id>, "
            "with * and ? as wildcards and [...] for one of a set of characters"
        )
    return value


def _comma_list(value: object) -> object:
    """A comma-separated variable as a tuple; empty parts are dropped."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise ValueError("must be the name of an environment variable, e.g. NORTH_CANVAS_TOKEN")
    return value


_ACCOUNT = re.compile(r"^(self|\d+|sis_account_id:\S+)$")


def _account_id(value: str) -> str:
    if not _ACCOUNT.match(value.strip()):
        raise ValueError("must be self, a Canvas account id, or sis_account_id:<id>")
    return value.strip()


def _base_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://, e.g. https://school.instructure.com")
    return value.rstrip("/")


SemesterPatterns = Annotated[
    tuple[Annotated[str, AfterValidator(_semester_pattern)], ...], BeforeValidator(_comma_list)
]
InstitutionName = Annotated[str, AfterValidator(_institution_name)]
AccountId = Annotated[str, AfterValidator(_account_id)]
SchemaName = Annotated[str, AfterValidator(validate_schema_name)]
EnvName = Annotated[str, AfterValidator(_env_name)]
BaseUrl = Annotated[str, AfterValidator(_base_url)]


def semester_matches(key: str, patterns: tuple[str, ...]) -> bool:
    """True when ``key`` is wanted by Target Semesters (no patterns means every semester)."""
    return not patterns or any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)


class Institution(BaseModel):
    """One institution the code location serves. ``name`` None is the single institution of
    the CANVAS_* settings, whose Canvas address is CANVAS_BASE_URL (``base_url`` None)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: InstitutionName | None = None
    base_url: BaseUrl | None = None
    account_id: AccountId = DEFAULT_ACCOUNT_ID
    root_account_uuid: str | None = Field(None, min_length=1)
    token_env: EnvName | None = CANVAS_API_TOKEN_ENV
    # A developer key instead of a token: the variables of its client id, client secret and
    # refresh token (all three, and token_env None).
    client_id_env: EnvName | None = None
    client_secret_env: EnvName | None = None
    refresh_token_env: EnvName | None = None
    target_semesters: SemesterPatterns = ()
    auto_import: bool = True
    schema_name: SchemaName = Field(DEFAULT_WAREHOUSE_SCHEMA, alias="schema")
    queue_url: str | None = None

    @property
    def label(self) -> str:
        """How messages and run configs name it: its name, or ``canvas`` for the single one."""
        return self.name or DEFAULT_WAREHOUSE_SCHEMA

    @property
    def developer_key(self) -> bool:
        """Whether Canvas is reached with a developer key's tokens (else with token_env)."""
        return self.client_id_env is not None


_ENTRY_KEYS = set(Institution.model_fields) - {"schema_name"} | {"schema"}
_REQUIRED = ("name", "base_url")


def _entry_error(index: int, entry: object, message: str) -> SettingError:
    name = entry.get("name") if isinstance(entry, dict) else None
    where = f"institutions[{index}]" + (f" ({name})" if isinstance(name, str) else "")
    return SettingError(f"{INSTITUTIONS_FILE_ENV}: {where}: {message}")


def _entry(
    index: int, entry: object, environ: Mapping[str, str], defaults: Mapping[str, object]
) -> Institution:
    """One entry of the file, checked field by field; ``defaults`` fill the optional fields it
    leaves out (the deployment's CANVAS_TARGET_SEMESTERS and CANVAS_AUTO_IMPORT_SEMESTERS)."""
    if not isinstance(entry, dict):
        raise _entry_error(index, entry, "must be a mapping of the fields in the README")
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise _entry_error(index, entry, f"unknown key {unknown[0]!r}")
    missing = [key for key in _REQUIRED if not entry.get(key)]
    if missing:
        raise _entry_error(index, entry, f"{missing[0]} is missing")
    _one_credential(index, entry)
    values = {**defaults, **{k: v for k, v in entry.items() if v is not None}}
    values.setdefault("schema", f"canvas_{entry['name']}")
    if entry.get("client_id_env"):
        values["token_env"] = None
    try:
        institution = Institution.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        raise _entry_error(index, entry, f"{field} {message}") from None
    if not institution.queue_url and not institution.root_account_uuid:
        raise _entry_error(
            index, entry, "root_account_uuid is missing (it routes the institution's Live "
            "Events from the shared queue; or give it a queue_url of its own)",
        )  # fmt: skip
    for key in ("token_env", *KEY_FIELDS):
        variable = getattr(institution, key)
        if variable is not None and not environ.get(variable, "").strip():
            raise _entry_error(index, entry, f"{key} {variable} is not set")
    return institution


def _one_credential(index: int, entry: dict) -> None:
    """An entry reaches Canvas one way: a token (token_env), or a developer key (its three
    variables, all of them)."""
    given = [key for key in KEY_FIELDS if entry.get(key)]
    if entry.get("token_env") and given:
        raise _entry_error(
            index, entry, f"token_env and {given[0]} are both given: name a token or a "
            "developer key, not both",
        )  # fmt: skip
    if not entry.get("token_env") and not given:
        raise _entry_error(
            index, entry, "token_env is missing (or, for a developer key, client_id_env, "
            "client_secret_env and refresh_token_env)",
        )  # fmt: skip
    missing = [key for key in KEY_FIELDS if not entry.get(key)]
    if given and missing:
        raise _entry_error(
            index, entry, f"{missing[0]} is missing (a developer key needs client_id_env, "
            "client_secret_env and refresh_token_env)",
        )  # fmt: skip


def single_credentials(
    token: bool, key: tuple[bool, bool, bool], base_url: bool
) -> dict[str, str | None]:
    """How the single institution reaches Canvas, from which of its variables are set: a token
    (``token``: CANVAS_API_TOKEN) or a developer key (``key``: CANVAS_CLIENT_ID,
    CANVAS_CLIENT_SECRET, CANVAS_REFRESH_TOKEN), exactly one of them. With neither, a token
    (the dev stack's sandbox sets it), unless CANVAS_BASE_URL names a Canvas."""
    names = (CANVAS_CLIENT_ID_ENV, CANVAS_CLIENT_SECRET_ENV, CANVAS_REFRESH_TOKEN_ENV)
    key_names = ", ".join(names[:2]) + f" and {names[2]}"
    if token and any(key):
        raise SettingError(
            f"{CANVAS_API_TOKEN_ENV} and {key_names} are both set: reach Canvas one way, with "
            "a token or with a developer key, and unset the other."
        )
    if any(key) and not all(key):
        missing = next(name for name, present in zip(names, key, strict=True) if not present)
        raise SettingError(
            f"{missing} is not set: a developer key needs {key_names} (`canvas-assets canvas "
            "connect` prints the refresh token)."
        )
    if not token and not any(key) and base_url:
        raise SettingError(
            f"CANVAS_BASE_URL is set but not how to reach it: set {CANVAS_API_TOKEN_ENV}, or "
            f"{key_names}."
        )
    if not all(key):
        return {"token_env": CANVAS_API_TOKEN_ENV}
    return {"token_env": None, **dict(zip(KEY_FIELDS, names, strict=True))}


def _unique(institutions: list[Institution]) -> None:
    for field in ("name", "root_account_uuid", "schema_name"):
        seen: dict[object, int] = {}
        for index, institution in enumerate(institutions):
            value = getattr(institution, field)
            if value is None:
                continue
            if value in seen:
                shown = "schema" if field == "schema_name" else field
                raise SettingError(
                    f"{INSTITUTIONS_FILE_ENV}: institutions[{index}] ({institution.name}): "
                    f"{shown} {value!r} is already used by institutions[{seen[value]}]"
                )
            seen[value] = index


def load_institutions(
    path: Path, environ: Mapping[str, str], defaults: Mapping[str, object] | None = None
) -> tuple[Institution, ...]:
    """The institutions of the file at ``path``; a SettingError names what is wrong."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingError(
            f"{INSTITUTIONS_FILE_ENV}: {path} cannot be read ({exc.strerror})."
        ) from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise SettingError(f"{INSTITUTIONS_FILE_ENV}: {path} is not YAML{line}.") from None
    entries = document.get("institutions") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise SettingError(
            f"{INSTITUTIONS_FILE_ENV}: {path} must hold a non-empty list under 'institutions'."
        )
    institutions = [
        _entry(index, entry, environ, defaults or {}) for index, entry in enumerate(entries)
    ]
    _unique(institutions)
    return tuple(institutions)
