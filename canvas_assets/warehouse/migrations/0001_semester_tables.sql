-- semester tables
CREATE TABLE {schema}.terms (
    institution_id bigint PRIMARY KEY,
    code text,
    name text NOT NULL,
    start_at timestamptz,
    end_at timestamptz,
    status text NOT NULL,
    semester text NOT NULL UNIQUE,
    source_updated_at timestamptz NOT NULL,
    deleted_at timestamptz
);
CREATE TABLE {schema}.courses (
    semester text NOT NULL,
    institution_id bigint NOT NULL,
    name text NOT NULL,
    description text,
    code text,
    total_students integer,
    departments jsonb NOT NULL DEFAULT '[]',
    status text NOT NULL,
    type text,
    term text,
    timezone text,
    account_id bigint,
    sis_course_id text,
    start_at timestamptz,
    end_at timestamptz,
    source_updated_at timestamptz NOT NULL,
    deleted_at timestamptz,
    PRIMARY KEY (semester, institution_id)
);
CREATE INDEX ON {schema}.courses (institution_id);
CREATE TABLE {schema}.sections (
    semester text NOT NULL,
    institution_id bigint NOT NULL,
    course_id bigint NOT NULL,
    name text NOT NULL,
    code text,
    status text,
    instruction_mode text,
    term text,
    school text,
    instructor text,
    instructor_email text,
    current_enrollments integer,
    timezone text,
    start_date timestamptz,
    end_date timestamptz,
    sis_section_id text,
    source_updated_at timestamptz NOT NULL,
    deleted_at timestamptz,
    PRIMARY KEY (semester, institution_id)
);
CREATE INDEX ON {schema}.sections (institution_id);
CREATE INDEX ON {schema}.sections (course_id);
CREATE TABLE {schema}.enrollments (
    semester text NOT NULL,
    institution_id bigint NOT NULL,
    course_id bigint NOT NULL,
    section_id bigint NOT NULL,
    user_id bigint NOT NULL,
    role text NOT NULL,
    enrollment_status text NOT NULL,
    current_grade_text text,
    current_grade_number double precision,
    final_grade_text text,
    final_grade_number double precision,
    last_lms_activity timestamptz,
    last_attended_date timestamptz,
    total_active_time bigint,
    source_updated_at timestamptz NOT NULL,
    deleted_at timestamptz,
    PRIMARY KEY (semester, institution_id)
);
CREATE INDEX ON {schema}.enrollments (institution_id);
CREATE INDEX ON {schema}.enrollments (user_id);
CREATE INDEX ON {schema}.enrollments (course_id);
CREATE TABLE {schema}.users (
    semester text NOT NULL,
    institution_id bigint NOT NULL,
    first_name text,
    last_name text,
    preferred_name text,
    email text,
    sis_user_id text,
    login_id text,
    source_type text NOT NULL DEFAULT 'LMS',
    source_name text NOT NULL DEFAULT 'Canvas',
    source_date date,
    source_updated_at timestamptz NOT NULL,
    deleted_at timestamptz,
    PRIMARY KEY (semester, institution_id)
);
CREATE INDEX ON {schema}.users (institution_id);
CREATE TABLE {schema}.semester_sync_status (
    semester text PRIMARY KEY,
    status text NOT NULL,
    added_at timestamptz,
    started_at timestamptz,
    last_sync_completed_at timestamptz,
    last_error text
);
