"""The state store's schema, as numbered migrations for each backend.

A schema version means the same tables, columns and guarantees on SQLite and on PostgreSQL: the
audit log (`events`), the consent registry and the data-version history refuse UPDATE and DELETE in
the database itself, whoever connects. The types differ only where the engines do (PostgreSQL needs
BIGINT for budget units). Ids are assigned by the writer as max + 1 under the write lock, on both: a
PostgreSQL sequence would skip the ids of rolled-back transactions, and the log's projection numbers
consent statements and templates 1, 2, 3, ... (`enclave.audit.state`).

A store is brought to `SCHEMA_VERSION` by applying, in order, every migration above its current
version, each in the transaction that records it; a store written by a newer version is refused.
SQLite's history starts at 6 (the schema before migrations were numbered); PostgreSQL's starts at 7.
8 adds the asynchronous queries' jobs (enclave.jobs); 9 the log's Merkle frontier (enclave.audit.merkle);
10 the audit record of each release and the requests, as sent, that replay it (enclave.disclosure.replay),
and the log's complete Merkle subtrees that inclusion proofs read (enclave.audit.merkle.NODE_HEIGHT).
"""

from __future__ import annotations

SCHEMA_VERSION = 10

SQLITE: dict[int, str] = {
    6: """
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, hash TEXT NOT NULL, record TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS events_append_only_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_append_only_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS grants (
    researcher TEXT NOT NULL, dataset TEXT NOT NULL, epsilon_cap INTEGER NOT NULL, delta_cap INTEGER NOT NULL,
    purpose TEXT NOT NULL DEFAULT '', starts TEXT NOT NULL DEFAULT '', expires TEXT NOT NULL DEFAULT '',
    adhoc INTEGER NOT NULL DEFAULT 1, revoked INTEGER NOT NULL DEFAULT 0,
    seq INTEGER NOT NULL, PRIMARY KEY (researcher, dataset));
CREATE TABLE IF NOT EXISTS templates (
    id INTEGER PRIMARY KEY, body TEXT NOT NULL, proposer TEXT NOT NULL, status TEXT NOT NULL,
    approvals TEXT NOT NULL DEFAULT '[]', seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS template_runs (
    template_id INTEGER NOT NULL, researcher TEXT NOT NULL, query_id TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS principals (name TEXT PRIMARY KEY, roles TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY, principal TEXT NOT NULL, digest TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0,
    seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS charges (
    query_id TEXT PRIMARY KEY, researcher TEXT NOT NULL, dataset TEXT NOT NULL,
    epsilon INTEGER NOT NULL, delta INTEGER NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS data_versions (
    dataset TEXT NOT NULL, version INTEGER NOT NULL, build TEXT NOT NULL, database TEXT NOT NULL,
    reason TEXT NOT NULL, consent_seq INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (dataset, version));
CREATE TABLE IF NOT EXISTS consents (
    id INTEGER PRIMARY KEY, dataset TEXT NOT NULL, subject TEXT NOT NULL, purpose TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('give', 'revoke')), given TEXT, expires TEXT, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS consents_by_purpose ON consents (dataset, purpose, subject, id);
CREATE TRIGGER IF NOT EXISTS consents_append_only_update BEFORE UPDATE ON consents
    BEGIN SELECT RAISE(ABORT, 'the consent registry is append-only'); END;
CREATE TRIGGER IF NOT EXISTS consents_append_only_delete BEFORE DELETE ON consents
    BEGIN SELECT RAISE(ABORT, 'the consent registry is append-only'); END;
CREATE TRIGGER IF NOT EXISTS data_versions_append_only_update BEFORE UPDATE ON data_versions
    BEGIN SELECT RAISE(ABORT, 'data versions are append-only'); END;
CREATE TABLE IF NOT EXISTS releases (
    request_key TEXT PRIMARY KEY, query_id TEXT NOT NULL, researcher TEXT NOT NULL, status TEXT NOT NULL,
    payload TEXT, claimed_at REAL NOT NULL, seq INTEGER);
""",
    # 7: a template-run slot has an id of its own (it was SQLite's rowid, which PostgreSQL has no equal of)
    7: """
CREATE TABLE template_runs_v7 (
    id INTEGER PRIMARY KEY, template_id INTEGER NOT NULL, researcher TEXT NOT NULL, query_id TEXT NOT NULL,
    seq INTEGER NOT NULL);
INSERT INTO template_runs_v7 (id, template_id, researcher, query_id, seq)
    SELECT rowid, template_id, researcher, query_id, seq FROM template_runs;
DROP TABLE template_runs;
ALTER TABLE template_runs_v7 RENAME TO template_runs;
""",
    8: """
CREATE TABLE jobs (
    query_id TEXT PRIMARY KEY, researcher TEXT NOT NULL, dataset TEXT NOT NULL, sql TEXT NOT NULL,
    epsilon REAL, adhoc INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'executing', 'released', 'failed', 'cancelled')),
    request_key TEXT, charged INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
    deadline_seconds REAL NOT NULL, answer_at REAL, error_code TEXT, error_message TEXT,
    submitted_at REAL NOT NULL, updated_at REAL NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX jobs_by_state ON jobs (state);
""",
    9: """
CREATE TABLE merkle (id INTEGER PRIMARY KEY CHECK (id = 1), size INTEGER NOT NULL, frontier TEXT NOT NULL);
""",
    # 10: a release keeps its audit record, and a request as sent (its text, ε, or template and parameters)
    # names the release it replays, so a repeated request is answered before it is parsed again; the log
    # keeps its complete Merkle subtrees of 256 leaves and more, so an inclusion proof costs O(log n)
    10: """
ALTER TABLE releases ADD COLUMN record TEXT;
CREATE TABLE replay_aliases (alias TEXT PRIMARY KEY, request_key TEXT NOT NULL);
CREATE TABLE merkle_nodes (height INTEGER NOT NULL, position BIGINT NOT NULL, hash TEXT NOT NULL,
    PRIMARY KEY (height, position));
""",
}

POSTGRES: dict[int, str] = {
    7: """
CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the % is append-only', TG_ARGV[0] USING ERRCODE = 'integrity_constraint_violation';
END $$;
CREATE TABLE events (seq BIGINT PRIMARY KEY, hash TEXT NOT NULL, record TEXT NOT NULL);
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION refuse_change('audit log');
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change('audit log');
CREATE TABLE checkpoints (size BIGINT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE grants (
    researcher TEXT NOT NULL, dataset TEXT NOT NULL, epsilon_cap BIGINT NOT NULL, delta_cap BIGINT NOT NULL,
    purpose TEXT NOT NULL DEFAULT '', starts TEXT NOT NULL DEFAULT '', expires TEXT NOT NULL DEFAULT '',
    adhoc INTEGER NOT NULL DEFAULT 1, revoked INTEGER NOT NULL DEFAULT 0,
    seq BIGINT NOT NULL, PRIMARY KEY (researcher, dataset));
CREATE TABLE templates (
    id BIGINT PRIMARY KEY, body TEXT NOT NULL, proposer TEXT NOT NULL,
    status TEXT NOT NULL, approvals TEXT NOT NULL DEFAULT '[]', seq BIGINT NOT NULL);
CREATE TABLE template_runs (
    id BIGINT PRIMARY KEY, template_id BIGINT NOT NULL, researcher TEXT NOT NULL,
    query_id TEXT NOT NULL, seq BIGINT NOT NULL);
CREATE TABLE principals (name TEXT PRIMARY KEY, roles TEXT NOT NULL, seq BIGINT NOT NULL);
CREATE TABLE api_keys (
    key_id TEXT PRIMARY KEY, principal TEXT NOT NULL, digest TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0,
    seq BIGINT NOT NULL);
CREATE TABLE charges (
    query_id TEXT PRIMARY KEY, researcher TEXT NOT NULL, dataset TEXT NOT NULL,
    epsilon BIGINT NOT NULL, delta BIGINT NOT NULL, seq BIGINT NOT NULL);
CREATE INDEX charges_by_grant ON charges (researcher, dataset);
CREATE TABLE data_versions (
    dataset TEXT NOT NULL, version INTEGER NOT NULL, build TEXT NOT NULL, database TEXT NOT NULL,
    reason TEXT NOT NULL, consent_seq BIGINT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (dataset, version));
CREATE TRIGGER data_versions_append_only BEFORE UPDATE ON data_versions
    FOR EACH ROW EXECUTE FUNCTION refuse_change('data version history');
CREATE TABLE consents (
    id BIGINT PRIMARY KEY, dataset TEXT NOT NULL, subject TEXT NOT NULL,
    purpose TEXT NOT NULL, action TEXT NOT NULL CHECK (action IN ('give', 'revoke')), given TEXT, expires TEXT,
    seq BIGINT NOT NULL);
CREATE INDEX consents_by_purpose ON consents (dataset, purpose, subject, id);
CREATE TRIGGER consents_append_only BEFORE UPDATE OR DELETE ON consents
    FOR EACH ROW EXECUTE FUNCTION refuse_change('consent registry');
CREATE TABLE releases (
    request_key TEXT PRIMARY KEY, query_id TEXT NOT NULL, researcher TEXT NOT NULL, status TEXT NOT NULL,
    payload TEXT, claimed_at DOUBLE PRECISION NOT NULL, seq BIGINT);
CREATE INDEX releases_by_researcher ON releases (researcher, claimed_at);
""",
    # 8: the asynchronous queries' jobs (enclave.jobs)
    8: """
CREATE TABLE jobs (
    query_id TEXT PRIMARY KEY, researcher TEXT NOT NULL, dataset TEXT NOT NULL, sql TEXT NOT NULL,
    epsilon DOUBLE PRECISION, adhoc INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'executing', 'released', 'failed', 'cancelled')),
    request_key TEXT, charged INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
    deadline_seconds DOUBLE PRECISION NOT NULL, answer_at DOUBLE PRECISION, error_code TEXT, error_message TEXT,
    submitted_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL, seq BIGINT NOT NULL);
CREATE INDEX jobs_by_state ON jobs (state);
""",
    # 9: the Merkle frontier of the log, so that a checkpoint costs O(log n), not a pass over the log
    9: """
CREATE TABLE merkle (id INTEGER PRIMARY KEY CHECK (id = 1), size BIGINT NOT NULL, frontier TEXT NOT NULL);
""",
    # 10: a release keeps its audit record, and a request as sent (its text, ε, or template and parameters)
    # names the release it replays, so a repeated request is answered before it is parsed again; the log
    # keeps its complete Merkle subtrees of 256 leaves and more, so an inclusion proof costs O(log n)
    10: """
ALTER TABLE releases ADD COLUMN record TEXT;
CREATE TABLE replay_aliases (alias TEXT PRIMARY KEY, request_key TEXT NOT NULL);
CREATE TABLE merkle_nodes (height INTEGER NOT NULL, position BIGINT NOT NULL, hash TEXT NOT NULL,
    PRIMARY KEY (height, position));
""",
}

# What the enclave's own PostgreSQL role may do to each table. It owns none of them (the migrating role
# does), so it can neither drop nor disable the triggers above, and it has no UPDATE or DELETE on the
# append-only tables at all: the log, the consent registry and the data versions refuse changes twice.
APPEND_ONLY = ("events", "checkpoints", "consents", "data_versions", "charges", "merkle_nodes")
MUTABLE = ("grants", "templates", "template_runs", "principals", "api_keys", "releases", "jobs", "merkle",
           "replay_aliases")
