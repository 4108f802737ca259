-- enrollments by person and semester
-- "Has this person an active enrollment left in this semester?" is asked per person by every
-- Live Events apply. On (user_id) alone, with no statistics, the planner ANDed it with the
-- primary key's semester prefix and read the whole semester once per person: quadratic.
DROP INDEX IF EXISTS {schema}.enrollments_user_id_idx;
CREATE INDEX enrollments_user_semester ON {schema}.enrollments (user_id, semester);
