-- Stored Responses API objects; see the PostgreSQL migration. Times are Unix microseconds.
CREATE TABLE stored_responses (
    id           text PRIMARY KEY,
    workspace_id text NOT NULL,
    response     blob NOT NULL,
    input_items  blob NOT NULL,
    created_at   integer NOT NULL,
    expires_at   integer NOT NULL
);
CREATE INDEX stored_responses_expires ON stored_responses (expires_at);
