-- Stored Responses API objects (POST /v1/responses with store=true), per workspace, so that
-- GET/DELETE /v1/responses/{id}, input_items and previous_response_id work on every provider.
-- The response and its effective input items are opaque JSON kept byte for byte (text, not
-- jsonb, which would reorder keys). Rows past expires_at are invisible and purged.
CREATE TABLE stored_responses (
    id           text PRIMARY KEY,
    workspace_id text NOT NULL,
    response     text NOT NULL,
    input_items  text NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);
CREATE INDEX stored_responses_expires ON stored_responses (expires_at);
