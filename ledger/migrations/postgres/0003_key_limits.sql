-- The key record: which key minted a key (a child never outlives its parent, and revoking a
-- parent revokes its children) and what a key may do: a model allow-list, requests and
-- tokens per minute, and a spend cap per period. Zero means "no limit", '{}' "any model".
ALTER TABLE api_keys
    ADD COLUMN parent_id     text REFERENCES api_keys (id),
    ADD COLUMN models        text[] NOT NULL DEFAULT '{}',
    ADD COLUMN rpm           bigint NOT NULL DEFAULT 0,
    ADD COLUMN tpm           bigint NOT NULL DEFAULT 0,
    ADD COLUMN budget_micros bigint NOT NULL DEFAULT 0,
    ADD COLUMN budget_period text NOT NULL DEFAULT '';
CREATE INDEX api_keys_parent ON api_keys (parent_id) WHERE parent_id IS NOT NULL;

-- Workspace-wide rate limits, set by the owner.
ALTER TABLE workspaces
    ADD COLUMN rpm bigint NOT NULL DEFAULT 0,
    ADD COLUMN tpm bigint NOT NULL DEFAULT 0;

-- A key's spend per budget period is summed from its rows, never kept in a hot counter.
CREATE INDEX ledger_rows_key_ts ON ledger_rows (key_id, ts);

-- Rate-limit counters shared by the nodes: what all nodes together have taken from a bucket
-- (a key's or workspace's requests or tokens) in one UTC minute. Nodes take slices of the
-- allowance, so a request rarely waits for the database; old windows are purged.
CREATE TABLE rate_windows (
    bucket       text NOT NULL,
    window_start timestamptz NOT NULL,
    used         bigint NOT NULL,
    PRIMARY KEY (bucket, window_start)
);
