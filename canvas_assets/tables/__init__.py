"""The warehouse tables: one declaration per table (``registry``), their pandera models, the
Canvas → row mapping and partition validation. Depends on nothing else in the package."""

from canvas_assets.tables.registry import SEMESTER_TABLES, TERMS
from canvas_assets.tables.spec import PerCourse, SemesterSnapshot, TableSpec, semester_key
from canvas_assets.tables.validation import (
    ChunkedValidation,
    ValidationReport,
    semester_frames,
    validate_semester,
)

__all__ = [
    "SEMESTER_TABLES",
    "TERMS",
    "ChunkedValidation",
    "PerCourse",
    "SemesterSnapshot",
    "TableSpec",
    "ValidationReport",
    "semester_frames",
    "semester_key",
    "validate_semester",
]
