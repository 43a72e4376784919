-- tlsguard: the senders policy in PostgreSQL (senders_file = pgsql:FILE).
--
-- The settings page writes tlsguard.senders with plain INSERT, UPDATE and
-- DELETE; nothing else is needed. A trigger keeps tlsguard.sender_changes,
-- which tlsguardd reads: one row per sender ever written, with the sequence
-- number of its last change, a deleted sender kept as a tombstone
-- (live = false) so that a host that missed the change removes exactly
-- what was removed. Sequence numbers are given in commit order (writers
-- take one transaction-level advisory lock, so a change's number is never
-- visible after a higher one), and every change NOTIFYs tlsguard_senders.
--
--   psql -d mail -f schema.sql
--
-- Roles: tlsguardd's needs SELECT on sender_changes and source, and
-- nothing else (LISTEN needs no grant); the settings page's needs
-- SELECT, INSERT, UPDATE, DELETE on senders. Both are below, without
-- passwords: set them, or use certificates (sslmode=verify-full).

BEGIN;

CREATE SCHEMA IF NOT EXISTS tlsguard;

-- What the settings page writes. sender: "user@domain" (one address),
-- "@domain" (every address of the domain), or, for kind exempt only,
-- "SRS0=" / "SRS1=" (every sender a forwarder rewrote with SRS). Entries
-- are matched without regard to case and without a "+extension", as in
-- a senders file: so an entry has no "+extension", and two entries that
-- differ only in case are one.
CREATE TABLE IF NOT EXISTS tlsguard.senders (
    sender     text PRIMARY KEY,
    kind       text NOT NULL DEFAULT 'guaranteed'
               CHECK (kind IN ('guaranteed', 'exempt')),
    changed_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((sender ~ '^[^[:space:]@#<>]*@[^[:space:]@#<>]+$'
            AND sender !~ '^[^@]*\+[^@]*@')
           OR (upper(sender) IN ('SRS0=', 'SRS1=') AND kind = 'exempt'))
);
CREATE UNIQUE INDEX IF NOT EXISTS senders_lower
    ON tlsguard.senders (lower(sender));

-- What tlsguardd reads (written by the trigger only).
CREATE TABLE IF NOT EXISTS tlsguard.sender_changes (
    sender     text PRIMARY KEY,          -- lower(senders.sender)
    kind       text NOT NULL,
    live       boolean NOT NULL,
    seq        bigint NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS sender_changes_seq
    ON tlsguard.sender_changes (seq);
CREATE SEQUENCE IF NOT EXISTS tlsguard.sender_seq;

-- One row: the database's identity (a host synced with another database
-- reads everything again) and the horizon below which tombstones were
-- pruned (a host behind it reads everything again).
CREATE TABLE IF NOT EXISTS tlsguard.source (
    id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    horizon bigint NOT NULL DEFAULT 0,
    one     boolean NOT NULL DEFAULT true UNIQUE CHECK (one)
);
INSERT INTO tlsguard.source DEFAULT VALUES ON CONFLICT DO NOTHING;

CREATE OR REPLACE FUNCTION tlsguard.sender_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, tlsguard AS $$
BEGIN
    -- Commit order: the next writer waits for this transaction's end.
    PERFORM pg_advisory_xact_lock(7467, 1);
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE'
                            AND lower(OLD.sender) <> lower(NEW.sender)) THEN
        INSERT INTO tlsguard.sender_changes AS c (sender, kind, live, seq)
        VALUES (lower(OLD.sender), OLD.kind, false,
                nextval('tlsguard.sender_seq'))
        ON CONFLICT (sender) DO UPDATE
            SET live = false, seq = EXCLUDED.seq, changed_at = now();
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO tlsguard.sender_changes AS c (sender, kind, live, seq)
        VALUES (lower(NEW.sender), NEW.kind, true,
                nextval('tlsguard.sender_seq'))
        ON CONFLICT (sender) DO UPDATE
            SET kind = EXCLUDED.kind, live = true, seq = EXCLUDED.seq,
                changed_at = now();
    END IF;
    PERFORM pg_notify('tlsguard_senders', '');
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS senders_changed ON tlsguard.senders;
CREATE TRIGGER senders_changed
    AFTER INSERT OR UPDATE OR DELETE ON tlsguard.senders
    FOR EACH ROW EXECUTE FUNCTION tlsguard.sender_changed();

-- Tombstones older than keep go; the horizon says how far, so that a host
-- that was away longer reads every sender again rather than miss one.
CREATE OR REPLACE FUNCTION tlsguard.prune(keep interval DEFAULT '30 days')
RETURNS bigint LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM tlsguard.sender_changes
        WHERE NOT live AND changed_at < now() - keep
        RETURNING seq)
    UPDATE tlsguard.source
    SET horizon = greatest(horizon, (SELECT coalesce(max(seq), 0) FROM gone))
    RETURNING horizon;
$$;

-- The roles (created here without a password; LOGIN needs one, or a
-- certificate, in pg_hba.conf's terms).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tlsguard') THEN
        CREATE ROLE tlsguard LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tlsguard_page') THEN
        CREATE ROLE tlsguard_page LOGIN;
    END IF;
END $$;
GRANT USAGE ON SCHEMA tlsguard TO tlsguard, tlsguard_page;
GRANT SELECT ON tlsguard.sender_changes, tlsguard.source TO tlsguard;
GRANT SELECT, INSERT, UPDATE, DELETE ON tlsguard.senders TO tlsguard_page;

COMMIT;
