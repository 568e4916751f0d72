-- SQLite mirror of the PostgreSQL schema: times are integer Unix microseconds (UTC),
-- scopes a JSON array, booleans 0/1. The single writer connection serializes writers, which
-- stands in for PostgreSQL's row locks.
-- Workspaces carry granted/spent totals that only change in the same transaction as the
-- grant or ledger rows that justify them, so balance = granted - spent never drifts.
CREATE TABLE workspaces (
    id             text PRIMARY KEY,
    name           text NOT NULL,
    created_at     integer NOT NULL,
    granted_micros bigint NOT NULL DEFAULT 0,
    spent_micros   bigint NOT NULL DEFAULT 0
);

-- Only the SHA-256 of a secret is stored.
CREATE TABLE api_keys (
    id           text PRIMARY KEY,
    workspace_id text NOT NULL REFERENCES workspaces (id),
    name         text NOT NULL DEFAULT '',
    key_hash     blob NOT NULL UNIQUE,
    prefix       text NOT NULL,
    scopes       text NOT NULL,
    created_at   integer NOT NULL,
    expires_at   integer,
    revoked_at   integer
);
CREATE INDEX api_keys_workspace ON api_keys (workspace_id, created_at);
CREATE INDEX api_keys_revoked ON api_keys (revoked_at) WHERE revoked_at IS NOT NULL;

-- Append-only; the unique idempotency key makes webhook replays harmless.
CREATE TABLE credit_grants (
    id              integer PRIMARY KEY,
    workspace_id    text NOT NULL REFERENCES workspaces (id),
    amount_micros   bigint NOT NULL,
    source          text NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    created_at      integer NOT NULL
);
CREATE INDEX credit_grants_workspace ON credit_grants (workspace_id, created_at);

-- Per-node reservations of part of a workspace's balance.
-- Invariant (checked under the workspace row lock): granted - spent - sum(unexpired) >= 0.
CREATE TABLE credit_leases (
    workspace_id  text NOT NULL REFERENCES workspaces (id),
    node_id       text NOT NULL,
    amount_micros bigint NOT NULL CHECK (amount_micros >= 0),
    expires_at    integer NOT NULL,
    PRIMARY KEY (workspace_id, node_id)
);

-- No foreign keys: the ledger is an append-only log and a row must never be refused
-- (a refused row would wedge the writer's retry loop).
CREATE TABLE ledger_rows (
    request_id          text PRIMARY KEY,
    ts                  integer NOT NULL,
    workspace_id        text NOT NULL,
    key_id              text NOT NULL,
    node_id             text NOT NULL,
    requested_model     text NOT NULL,
    provider            text NOT NULL,
    upstream_model      text NOT NULL,
    input_uncached      bigint NOT NULL,
    cache_read          bigint NOT NULL,
    cache_write_5m      bigint NOT NULL,
    cache_write_1h      bigint NOT NULL,
    output_tokens       bigint NOT NULL,
    reasoning_tokens    bigint NOT NULL,
    cost_micros         bigint NOT NULL,
    baseline_micros     bigint NOT NULL,
    save_prompt_cache   bigint NOT NULL,
    save_response_cache bigint NOT NULL,
    save_coalesce       bigint NOT NULL,
    save_compression    bigint NOT NULL,
    save_dedupe         bigint NOT NULL,
    save_output_budget  bigint NOT NULL,
    save_routing        bigint NOT NULL,
    status              integer NOT NULL,
    cache_outcome       text NOT NULL,
    attempts            integer NOT NULL,
    latency_us          bigint NOT NULL,
    ttfb_us             bigint NOT NULL,
    stream              integer NOT NULL,
    error_code          text NOT NULL
);
CREATE INDEX ledger_rows_workspace_ts ON ledger_rows (workspace_id, ts, request_id);
