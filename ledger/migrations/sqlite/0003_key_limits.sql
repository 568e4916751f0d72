-- SQLite mirror of postgres/0003_key_limits.sql: models is a JSON array, times are integer
-- Unix microseconds.
ALTER TABLE api_keys ADD COLUMN parent_id text REFERENCES api_keys (id);
ALTER TABLE api_keys ADD COLUMN models text NOT NULL DEFAULT '[]';
ALTER TABLE api_keys ADD COLUMN rpm bigint NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN tpm bigint NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN budget_micros bigint NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN budget_period text NOT NULL DEFAULT '';
CREATE INDEX api_keys_parent ON api_keys (parent_id) WHERE parent_id IS NOT NULL;

ALTER TABLE workspaces ADD COLUMN rpm bigint NOT NULL DEFAULT 0;
ALTER TABLE workspaces ADD COLUMN tpm bigint NOT NULL DEFAULT 0;

CREATE INDEX ledger_rows_key_ts ON ledger_rows (key_id, ts);

CREATE TABLE rate_windows (
    bucket       text NOT NULL,
    window_start integer NOT NULL,
    used         bigint NOT NULL,
    PRIMARY KEY (bucket, window_start)
);
