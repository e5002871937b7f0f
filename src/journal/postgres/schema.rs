//! The PostgreSQL journal's schema, as numbered migrations applied on
//! first use.
//!
//! Each migration runs once, in order, in one transaction with the others
//! still to apply, under an advisory lock (several workers starting at once
//! apply them once). `orchestrate_migrations` says which are in; a journal
//! with a migration this build does not know was written by a newer
//! orchestrate, and is refused rather than misread. Never edit a migration
//! that has shipped: add the next one.

use deadpool_postgres::Pool;

use super::bridge::DbError;

/// (version, what it adds, SQL).
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "the journal: runs, events, hosts, steps, rollbacks, run files, leases",
        r#"
CREATE TABLE runs (
    run_id           TEXT PRIMARY KEY,
    position         BIGSERIAL,
    playbook         TEXT NOT NULL,
    inventory        TEXT NOT NULL,
    playbook_sha256  TEXT NOT NULL,
    inventory_sha256 TEXT NOT NULL,
    options          TEXT NOT NULL,
    started_at       TEXT NOT NULL,
    finished_at      TEXT,
    status           TEXT
);
CREATE TABLE events (
    run_id   TEXT NOT NULL,
    seq      BIGSERIAL,
    event_id TEXT NOT NULL UNIQUE,
    time     TEXT NOT NULL,
    kind     TEXT NOT NULL,
    data     TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE hosts (
    run_id            TEXT NOT NULL,
    client            TEXT NOT NULL,
    host              TEXT NOT NULL,
    wave              BIGINT,
    status            TEXT NOT NULL,
    error             TEXT,
    protection_gap_ms BIGINT,
    updated_at        TEXT NOT NULL,
    PRIMARY KEY (run_id, host)
);
CREATE TABLE steps (
    run_id      TEXT NOT NULL,
    host        TEXT NOT NULL,
    idx         BIGINT NOT NULL,
    phase       TEXT NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    exit_code   INTEGER,
    attempts    BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    detail      TEXT,
    stdout      TEXT,
    stderr      TEXT,
    finished_at TEXT NOT NULL
);
CREATE INDEX steps_by_host ON steps (run_id, host);
CREATE TABLE rollbacks (
    run_id      TEXT NOT NULL,
    host        TEXT NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    exit_code   INTEGER,
    detail      TEXT,
    finished_at TEXT NOT NULL
);
CREATE TABLE run_files (
    run_id   TEXT NOT NULL,
    position BIGSERIAL,
    path     TEXT NOT NULL,
    what     TEXT NOT NULL,
    sha256   TEXT NOT NULL,
    PRIMARY KEY (run_id, path)
);
CREATE TABLE leases (
    resource   TEXT PRIMARY KEY,
    token      TEXT NOT NULL,
    run_id     TEXT NOT NULL,
    command    TEXT NOT NULL,
    pid        BIGINT NOT NULL,
    machine    TEXT NOT NULL,
    since      TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
"#,
    ),
    (
        2,
        "the work queue: one row per client of a queued run; wave approvals",
        r#"
CREATE TABLE work (
    run_id     TEXT NOT NULL,
    client     TEXT NOT NULL,
    position   INTEGER NOT NULL,
    site       TEXT,
    state      TEXT NOT NULL DEFAULT 'queued',
    token      TEXT,
    worker     TEXT,
    pid        BIGINT,
    machine    TEXT,
    expires_at DOUBLE PRECISION,
    takes      INTEGER NOT NULL DEFAULT 0,
    status     TEXT,
    PRIMARY KEY (run_id, client)
);
CREATE INDEX work_waiting ON work (state, site);
CREATE TABLE approvals (
    run_id      TEXT NOT NULL,
    client      TEXT NOT NULL,
    wave        BIGINT NOT NULL,
    asked_at    TEXT,
    approved_at TEXT,
    approved_by TEXT,
    PRIMARY KEY (run_id, client, wave)
);
"#,
    ),
];

/// An arbitrary constant: the advisory lock migrations are applied under.
const MIGRATION_LOCK: i64 = 0x6f72_6368_6573;

/// Brings the database's schema up to this build's; an error if it is newer.
pub async fn migrate(pool: Pool) -> Result<Result<(), String>, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS orchestrate_migrations (
            version    INTEGER PRIMARY KEY,
            name       TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await?;
    let row = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM orchestrate_migrations",
            &[],
        )
        .await?;
    let applied: i32 = row.get(0);
    let latest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if applied > latest {
        return Ok(Err(format!(
            "its schema is version {applied}, written by a newer orchestrate (this one knows up to {latest}); upgrade orchestrate"
        )));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > applied) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO orchestrate_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Ok(()))
}
