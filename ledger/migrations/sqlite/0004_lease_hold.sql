-- Leases now hold their money until the node gives it back or spends it: expiry only ends
-- the node's right to reserve more (a partitioned node may still have spooled rows charged
-- against it). Leases that had already expired under the old rule no longer counted
-- against the balance; drop them so the upgrade changes no balance that is free today.
DELETE FROM credit_leases
WHERE expires_at <= CAST(strftime('%s', 'now') AS INTEGER) * 1000000 OR amount_micros = 0;

-- Set when another node was refused while this lease held money: its node gives back
-- what it does not use (borrow and return on small balances).
ALTER TABLE credit_leases ADD COLUMN return_requested_at integer;
