//! The registry and event journal in SQLite (`state.db`): schema, migrations and the few
//! statements the persister runs. Only the persister thread holds a [`Store`]; everything here is
//! plain blocking rusqlite.
//!
//! - WAL mode, `synchronous=NORMAL`: a commit survives a crash of corral (the WAL is in the page
//!   cache); a power failure may lose the last commits but never corrupts the database.
//! - The schema version is `PRAGMA user_version`; [`MIGRATIONS`] are applied in order, each in its
//!   own transaction, so an interrupted upgrade is redone at the next open. A database newer than
//!   this binary is refused with a clear error rather than guessed at.
//! - Events are bounded by count and age ([`EventRetention`]), enforced after commits.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use uuid::Uuid;

use crate::event::{EventKind, SessionEvent};
use crate::persist::error::PersistError;
use crate::persist::journal::{SessionRecord, SessionRow};

/// Schema migrations; `user_version` = how many are applied.
const MIGRATIONS: &[&str] = &[
    // 1: registry and journal.
    "CREATE TABLE sessions (
        id                TEXT PRIMARY KEY,
        name              TEXT NOT NULL,
        spec              TEXT NOT NULL,   -- SessionSpec JSON
        row               TEXT NOT NULL,   -- SessionRow JSON: what recovery reads back
        state             TEXT NOT NULL,
        reason            TEXT,
        pid               INTEGER,         -- main process (= pgid = sid) while one runs
        pgid              INTEGER,
        starttime         INTEGER,         -- /proc/<pid>/stat field 22, clock ticks after boot
        boot_id           TEXT,
        restarts          INTEGER NOT NULL DEFAULT 0,
        last_exit         TEXT,            -- ExitStatus JSON
        agent_session_id  TEXT,
        created_ms        INTEGER NOT NULL,
        updated_ms        INTEGER NOT NULL,
        ended_ms          INTEGER
    );
    CREATE TABLE events (
        id       INTEGER PRIMARY KEY,
        session  TEXT NOT NULL,
        seq      INTEGER NOT NULL,
        time_ms  INTEGER NOT NULL,
        offset   INTEGER NOT NULL,
        kind     TEXT NOT NULL,
        payload  TEXT NOT NULL
    );
    CREATE INDEX events_by_session ON events(session, seq);
    CREATE INDEX events_by_time ON events(time_ms);",
    // 2: one kind of a session's events without reading the others (a reattached terminal's
    // sizes, an export's resizes).
    "CREATE INDEX events_by_kind ON events(session, kind, seq);",
];

/// How many events the journal keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRetention {
    /// Most events kept. Past it, the oldest of the session that holds the most go first (down
    /// to half the bound), then the oldest of all. Default 100,000.
    pub max_events: u64,
    /// Events older than this are deleted. Default 30 days.
    pub max_age: Duration,
}

impl Default for EventRetention {
    fn default() -> Self {
        Self {
            max_events: 100_000,
            max_age: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// One journal operation as the database sees it.
#[derive(Debug, Clone)]
pub(crate) enum DbOp {
    /// Insert (or replace) a session record.
    Create(Box<SessionRecord>),
    /// An event and the session row as of it.
    Event(Box<(SessionRow, SessionEvent)>),
    /// Delete a session's record and events.
    Remove(Uuid),
    /// `n` operations were lost before reaching the database.
    Lost(u64),
}

/// The open database.
pub struct Store {
    /// The connection (this thread only).
    conn: Connection,
    /// Events in the table (kept in memory so enforcing the bound costs nothing when under it).
    events: u64,
    /// Bound on events.
    retention: EventRetention,
    /// Rows were deleted since the last vacuum (see `enforce_retention`).
    freed: bool,
    /// Where it is, and which file that was when it was opened (device, inode): see
    /// [`Store::replaced`].
    path: std::path::PathBuf,
    file: Option<(u64, u64)>,
}

/// The (device, inode) of the file at `path`, if there is one.
fn file_at(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    to_ms(SystemTime::now())
}

pub(crate) fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Why the store could not do something (messages name the problem).
pub type StoreResult<T> = Result<T, PersistError>;

fn err(what: &str) -> impl FnOnce(rusqlite::Error) -> PersistError + '_ {
    PersistError::db(what)
}

/// Bytes the WAL is cut back to after a checkpoint.
const WAL_LIMIT: i64 = 4 << 20;

impl Store {
    /// Opens (creating it 0600 if needed) and migrates `state.db` at `path`.
    pub fn open(path: &Path, retention: EventRetention) -> StoreResult<Store> {
        let existed = path.exists();
        let conn = Connection::open(path).map_err(err("opening the database"))?;
        // Owner-only, also when it came back from a backup (`sqlite3 .backup` writes with the
        // umask: 0644 here, with the hook tokens in it).
        {
            use std::os::unix::fs::PermissionsExt;
            let loose = std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0);
            if loose || !existed {
                // One just made here has the umask's mode: made 0600 below, no news.
                if loose && existed {
                    tracing::warn!(path = %path.display(), "state.db was readable by others (it holds the hook tokens): made 0600");
                }
                if let Err(e) =
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                {
                    tracing::warn!(path = %path.display(), error = %e, "could not make state.db 0600");
                }
            }
        }
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(err("busy timeout"))?;
        if !existed {
            // Pages freed by deletions (ended sessions, events past retention) can be given
            // back to the file system (`incremental_vacuum` in `enforce_retention`); only a
            // database without tables can be set so.
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
                .map_err(err("auto_vacuum"))?;
        }
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(err("enabling WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(PersistError::Data(format!(
                "database refused WAL mode (got {mode})"
            )));
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err("synchronous"))?;
        // A burst of deletions grew the WAL to 14 MB, kept until the server stopped: it is
        // cut back to this after each checkpoint.
        conn.pragma_update(None, "journal_size_limit", WAL_LIMIT)
            .map_err(err("journal_size_limit"))?;
        let mut store = Store {
            conn,
            events: 0,
            retention,
            freed: false,
            path: path.to_path_buf(),
            file: file_at(path),
        };
        store.migrate()?;
        store.events = store
            .conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0))
            .map_err(err("counting events"))? as u64;
        Ok(store)
    }

    /// Whether `state.db` is no longer the file this store writes: removed (a cleanup's
    /// `rm state.db*`) or replaced while the server ran. Its writes then go to a file nobody
    /// will read again: the next server would find no record, and end every running session
    /// as a stray.
    pub fn replaced(&self) -> bool {
        file_at(&self.path) != self.file
    }

    /// Writes what this store holds to `state.db` again (a copy made whole beside it, then
    /// renamed over whatever is there) and goes on in that file.
    pub fn write_again(&mut self) -> StoreResult<()> {
        let copy = self.path.with_extension("db.again");
        if copy.exists() {
            std::fs::remove_file(&copy).map_err(|source| PersistError::Io {
                what: format!("removing {}", copy.display()),
                source,
            })?;
        }
        let target = copy
            .to_str()
            .ok_or_else(|| PersistError::Data(format!("{} is not UTF-8", copy.display())))?;
        self.conn
            .execute("VACUUM INTO ?1", [target])
            .map_err(err("copying the registry"))?;
        std::fs::rename(&copy, &self.path).map_err(|source| PersistError::Io {
            what: format!("putting {} back", self.path.display()),
            source,
        })?;
        *self = Store::open(&self.path, self.retention)?;
        Ok(())
    }

    fn migrate(&mut self) -> StoreResult<()> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err("reading the schema version"))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(PersistError::Data(format!(
                "state.db has schema version {version}, newer than this corral understands \
                 ({known}); run the newer corral or restore a backup"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.transaction().map_err(err("migration"))?;
            tx.execute_batch(sql).map_err(|e| PersistError::Db {
                what: format!("migration {}", i + 1),
                source: e,
            })?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(err("setting the schema version"))?;
            tx.commit().map_err(err("committing a migration"))?;
            tracing::info!(version = i + 1, "state.db migrated");
        }
        Ok(())
    }

    /// The schema version.
    pub fn version(&self) -> StoreResult<i64> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err("reading the schema version"))
    }

    /// Applies `ops` in one transaction: all or nothing.
    pub(crate) fn apply(&mut self, ops: &[DbOp]) -> StoreResult<()> {
        let tx = self.conn.transaction().map_err(err("begin"))?;
        let mut inserted = 0u64;
        let mut removed = 0u64;
        // A session's row is rewritten once per batch, with its last state: a burst of events
        // of one session costs one UPDATE, not one per event.
        let mut rows: HashMap<Uuid, (&SessionRow, u64)> = HashMap::new();
        for op in ops {
            match op {
                DbOp::Create(rec) => upsert_record(&tx, rec)?,
                DbOp::Event(ev) => {
                    let (row, event) = &**ev;
                    rows.insert(event.session, (row, to_ms(event.time)));
                    insert_event(&tx, event)?;
                    inserted += 1;
                }
                DbOp::Remove(id) => {
                    rows.remove(id);
                    let key = id.to_string();
                    tx.execute("DELETE FROM sessions WHERE id = ?1", params![key])
                        .map_err(err("deleting a session"))?;
                    removed += tx
                        .execute("DELETE FROM events WHERE session = ?1", params![key])
                        .map_err(err("deleting a session's events"))?
                        as u64;
                }
                DbOp::Lost(n) => {
                    let payload = serde_json::json!({ "lost": n }).to_string();
                    tx.execute(
                        "INSERT INTO events (session, seq, time_ms, offset, kind, payload)
                         VALUES ('', 0, ?1, 0, 'journal_lost', ?2)",
                        params![now_ms() as i64, payload],
                    )
                    .map_err(err("recording lost operations"))?;
                    inserted += 1;
                }
            }
        }
        for (id, (row, at)) in rows {
            update_row(&tx, id, row, at)?;
        }
        tx.commit().map_err(err("commit"))?;
        self.events = (self.events + inserted).saturating_sub(removed);
        // A removed session's rows (its events are counted in `removed`).
        self.freed |= ops.iter().any(|op| matches!(op, DbOp::Remove(_)));
        Ok(())
    }

    /// Deletes events beyond the count bound (oldest first) and, when `check_age`, older than the
    /// age bound. Returns how many were deleted.
    pub fn enforce_retention(&mut self, check_age: bool) -> StoreResult<u64> {
        let mut deleted = 0u64;
        if self.events > self.retention.max_events {
            // Down to the bound less a hundredth, so the session count below runs once per
            // that many events, not after every write at the bound.
            let mut excess =
                self.events - self.retention.max_events + self.retention.max_events / 100;
            // The oldest events of the sessions that hold the most go first, evened out (the
            // largest down to the next largest, then both, and so on, never below a floor of a
            // hundredth of the bound each): chatty sessions (stream-json agents, NDJSON
            // programs: an event a line) otherwise pushed every other session's history out,
            // lifecycle events and all — one of them, or two at half the bound each.
            let mut counts: Vec<(String, u64)> = {
                let mut stmt = self
                    .conn
                    .prepare("SELECT session, count(*) AS n FROM events GROUP BY session")
                    .map_err(err("counting events by session"))?;
                stmt.query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                })
                .map_err(err("counting events by session"))?
                .collect::<Result<_, _>>()
                .map_err(err("counting events by session"))?
            };
            counts.sort_by_key(|c| std::cmp::Reverse(c.1));
            let level = water_level(&counts, excess, self.retention.max_events / 100);
            for (session, n) in counts.iter().take_while(|(_, n)| *n > level) {
                let take = (n - level).min(excess);
                if take == 0 {
                    break;
                }
                let gone = self
                    .conn
                    .execute(
                        "DELETE FROM events WHERE id IN (SELECT id FROM events
                         WHERE session = ?1 ORDER BY seq LIMIT ?2)",
                        params![session, take as i64],
                    )
                    .map_err(err("enforcing the event bound"))? as u64;
                deleted += gone;
                excess -= gone.min(excess);
            }
            if excess > 0 {
                // Rowids grow with insertion, so the oldest are the smallest.
                deleted += self
                    .conn
                    .execute(
                        "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?1)",
                        params![excess as i64],
                    )
                    .map_err(err("enforcing the event bound"))? as u64;
            }
        }
        if check_age {
            let cutoff = now_ms().saturating_sub(self.retention.max_age.as_millis() as u64);
            deleted += self
                .conn
                .execute(
                    "DELETE FROM events WHERE time_ms < ?1",
                    params![cutoff as i64],
                )
                .map_err(err("enforcing the event age"))? as u64;
        }
        self.events = self.events.saturating_sub(deleted);
        // After deletions (a removed session, events past retention) at once — an idle server
        // kept an emptied file until its next write — and with each age check.
        if std::mem::take(&mut self.freed) || deleted > 0 || check_age {
            // Free pages back to the file system (a no-op for a database made before
            // `auto_vacuum` was set: `VACUUM` it offline).
            // Stepped to the end: each step frees one page.
            let mut vacuum = self
                .conn
                .prepare("PRAGMA incremental_vacuum")
                .map_err(err("incremental vacuum"))?;
            let mut steps = vacuum.query([]).map_err(err("incremental vacuum"))?;
            while steps.next().map_err(err("incremental vacuum"))?.is_some() {}
        }
        Ok(deleted)
    }

    /// Events in the journal.
    pub fn event_count(&self) -> u64 {
        self.events
    }

    /// Every session record.
    pub fn load(&self) -> StoreResult<Vec<SessionRecord>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, name, spec, row, created_ms, ended_ms FROM sessions ORDER BY created_ms")
            .map_err(err("reading sessions"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                ))
            })
            .map_err(err("reading sessions"))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, spec, srow, created, ended) = row.map_err(err("reading a session"))?;
            let parsed = (|| -> Result<SessionRecord, String> {
                Ok(SessionRecord {
                    id: Uuid::parse_str(&id).map_err(|e| format!("id: {e}"))?,
                    name: name.clone(),
                    spec: serde_json::from_str(&spec).map_err(|e| format!("spec: {e}"))?,
                    row: serde_json::from_str(&srow).map_err(|e| format!("row: {e}"))?,
                    created_ms: created as u64,
                    ended_ms: ended.map(|e| e as u64),
                })
            })();
            match parsed {
                Ok(rec) => out.push(rec),
                // One bad record must not keep every other session from coming back.
                Err(e) => {
                    tracing::error!(session = %id, %name, error = %e, "unreadable session record skipped")
                }
            }
        }
        Ok(out)
    }

    /// Up to `limit` events of `session` with `seq > after`, oldest first.
    pub fn events(
        &self,
        session: Uuid,
        after: u64,
        kind: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<SessionEvent>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, time_ms, offset, payload FROM events
                 WHERE session = ?1 AND seq > ?2 AND (?4 IS NULL OR kind = ?4)
                 ORDER BY seq LIMIT ?3",
            )
            .map_err(err("reading events"))?;
        let rows = stmt
            .query_map(
                // Past i64::MAX nothing can follow (`as` wrapped it negative: everything did).
                params![
                    session.to_string(),
                    i64::try_from(after).unwrap_or(i64::MAX),
                    i64::try_from(limit).unwrap_or(i64::MAX),
                    kind
                ],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                },
            )
            .map_err(err("reading events"))?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, time, offset, payload) = row.map_err(err("reading an event"))?;
            match serde_json::from_str::<EventKind>(&payload) {
                Ok(kind) => out.push(SessionEvent {
                    session,
                    seq: seq as u64,
                    time: from_ms(time as u64),
                    offset: offset as u64,
                    kind,
                }),
                Err(e) => tracing::warn!(%session, seq, error = %e, "unreadable event skipped"),
            }
        }
        Ok(out)
    }

    /// `PRAGMA integrity_check`: "ok" when the database is sound.
    pub fn integrity_check(&self) -> StoreResult<String> {
        let mut stmt = self
            .conn
            .prepare("PRAGMA integrity_check")
            .map_err(err("integrity check"))?;
        let lines: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(err("integrity check"))?
            .collect::<Result<_, _>>()
            .map_err(err("integrity check"))?;
        Ok(lines.join("\n"))
    }

    /// A checkpoint of the WAL into the main file (at shutdown, so the data dir is one file).
    pub fn checkpoint(&self) -> StoreResult<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(err("checkpoint"))
    }
}

fn upsert_record(tx: &Transaction<'_>, rec: &SessionRecord) -> StoreResult<()> {
    let spec = serde_json::to_string(&rec.spec).map_err(|e| format!("encoding a spec: {e}"))?;
    let row = serde_json::to_string(&rec.row).map_err(|e| format!("encoding a row: {e}"))?;
    let state = rec.row.state.as_str();
    tx.execute(
        "INSERT INTO sessions (id, name, spec, row, state, created_ms, updated_ms, ended_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)
         ON CONFLICT(id) DO UPDATE SET name = ?2, spec = ?3, row = ?4, state = ?5,
             updated_ms = ?6, ended_ms = ?7",
        params![
            rec.id.to_string(),
            rec.name,
            spec,
            row,
            state,
            rec.created_ms as i64,
            rec.ended_ms.map(|e| e as i64),
        ],
    )
    .map_err(err("writing a session"))?;
    update_row(tx, rec.id, &rec.row, rec.created_ms)
}

fn update_row(tx: &Transaction<'_>, id: Uuid, row: &SessionRow, at_ms: u64) -> StoreResult<()> {
    let json = serde_json::to_string(row).map_err(|e| format!("encoding a row: {e}"))?;
    let ended = row.state.is_final().then_some(at_ms as i64);
    let mut stmt = tx
        .prepare_cached(
            "UPDATE sessions SET row = ?2, state = ?3, updated_ms = ?4,
                 ended_ms = CASE WHEN ?5 IS NULL THEN NULL ELSE coalesce(ended_ms, ?5) END,
                 reason = ?6, pid = ?7, pgid = ?7, starttime = ?8, boot_id = ?9,
                 restarts = ?10, last_exit = ?11, agent_session_id = ?12
             WHERE id = ?1",
        )
        .map_err(err("updating a session"))?;
    let process = row.process.as_ref();
    let last_exit = row
        .last_exit
        .map(|e| serde_json::to_string(&e).unwrap_or_default());
    stmt.execute(params![
        id.to_string(),
        json,
        row.state.as_str(),
        at_ms as i64,
        ended,
        row.reason,
        process.map(|p| p.pid),
        process.map(|p| p.starttime as i64),
        process.map(|p| p.boot_id.as_str()),
        row.restarts as i64,
        last_exit,
        row.agent_session_id,
    ])
    .map_err(err("updating a session"))?;
    Ok(())
}

fn insert_event(tx: &Transaction<'_>, event: &SessionEvent) -> StoreResult<()> {
    let payload =
        serde_json::to_string(&event.kind).map_err(|e| format!("encoding an event: {e}"))?;
    let kind = event.kind.name();
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO events (session, seq, time_ms, offset, kind, payload)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(err("writing an event"))?;
    stmt.execute(params![
        event.session.to_string(),
        event.seq as i64,
        to_ms(event.time) as i64,
        event.offset as i64,
        kind,
        payload
    ])
    .map_err(err("writing an event"))?;
    Ok(())
}

/// Reads one session record (tests and tools).
pub fn read_record(conn: &Connection, id: Uuid) -> StoreResult<Option<SessionRecord>> {
    conn.query_row(
        "SELECT name, spec, row, created_ms, ended_ms FROM sessions WHERE id = ?1",
        params![id.to_string()],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<i64>>(4)?,
            ))
        },
    )
    .optional()
    .map_err(err("reading a session"))?
    .map(|(name, spec, row, created, ended)| {
        Ok(SessionRecord {
            id,
            name,
            spec: serde_json::from_str(&spec).map_err(|e| format!("spec: {e}"))?,
            row: serde_json::from_str(&row).map_err(|e| format!("row: {e}"))?,
            created_ms: created as u64,
            ended_ms: ended.map(|e| e as u64),
        })
    })
    .transpose()
}

/// The count the largest sessions (`counts`, largest first) are cut down to so that about
/// `excess` events go, none below `floor`: the largest down to the next largest, then both to
/// the one after, and so on (water-filling). At `floor` when even that frees less (the rest
/// then goes oldest first, whoever's).
fn water_level(counts: &[(String, u64)], excess: u64, floor: u64) -> u64 {
    let mut above = 0u64;
    for (k, (_, n)) in counts.iter().enumerate() {
        above += n;
        let k = k as u64 + 1;
        let next = counts.get(k as usize).map_or(0, |(_, n)| *n).max(floor);
        // Cutting the k largest to `next` frees this many.
        if above.saturating_sub(k * next) >= excess {
            // The level that frees `excess` among these k, rounded down (so at least
            // `excess`: the cuts stop at it), not below `next`.
            return (above.saturating_sub(excess) / k).max(next);
        }
        if next == floor {
            return floor;
        }
    }
    floor
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store bounded at `max_events` holding `sessions` (name, kind, how many events), after
    /// its retention ran (the temp dir must outlive it).
    fn retained(dir: &std::path::Path, max_events: u64, sessions: &[(&str, &str, u32)]) -> Store {
        let path = dir.join("state.db");
        let retention = EventRetention {
            max_events,
            max_age: Duration::from_secs(3600),
        };
        drop(Store::open(&path, retention).unwrap());
        {
            let conn = Connection::open(&path).unwrap();
            for (session, kind, n) in sessions {
                conn.execute(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?3)
                     INSERT INTO events (session, seq, time_ms, offset, kind, payload)
                     SELECT ?1, i, 0, 0, ?2, '{}' FROM n",
                    params![session, kind, n],
                )
                .unwrap();
            }
        }
        let mut store = Store::open(&path, retention).unwrap();
        store.enforce_retention(false).unwrap();
        store
    }

    /// How many events `session` has in `store`.
    fn count(store: &Store, session: &str) -> i64 {
        store
            .conn
            .query_row(
                "SELECT count(*) FROM events WHERE session = ?1",
                params![session],
                |r| r.get(0),
            )
            .unwrap()
    }

    /// A chatty session's oldest events go first at the bound: a quiet session's early
    /// lifecycle events (spawned, running) outlive another's stream of lines.
    #[test]
    fn the_session_with_the_most_events_gives_them_up_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = retained(
            dir.path(),
            100,
            &[("quiet", "state", 5), ("chatty", "json", 300)],
        );
        assert_eq!(count(&store, "quiet"), 5);
        assert!(count(&store, "chatty") <= 95, "{}", count(&store, "chatty"));
        assert!(store.event_count() <= 100);
        // Its newest stay.
        let newest: i64 = store
            .conn
            .query_row(
                "SELECT max(seq) FROM events WHERE session = 'chatty'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(newest, 300);
    }

    /// Two chatty sessions at the bound (each at half of it) give up their own oldest events,
    /// not a quiet session's lifecycle events (those went first: the oldest of all).
    #[test]
    fn two_chatty_sessions_do_not_push_out_a_quiet_ones_history() {
        let dir = tempfile::tempdir().unwrap();
        let sessions = [
            ("quiet", "state", 5),
            ("one", "json", 600),
            ("two", "json", 600),
        ];
        let store = retained(dir.path(), 1000, &sessions);
        assert_eq!(count(&store, "quiet"), 5);
        assert!(store.event_count() <= 1000, "{}", store.event_count());
        assert!(
            (count(&store, "one") - count(&store, "two")).abs() <= 1,
            "evened out"
        );
    }

    #[test]
    fn the_water_level_cuts_the_largest_first_and_stops_at_the_floor() {
        let c =
            |v: &[u64]| -> Vec<(String, u64)> { v.iter().map(|n| (String::new(), *n)).collect() };
        // The largest alone, down to what frees the excess.
        assert_eq!(water_level(&c(&[300, 5]), 100, 1), 200);
        // Not below the next largest: then both.
        assert_eq!(water_level(&c(&[300, 250, 5]), 100, 1), 225);
        // Ties are cut together.
        assert_eq!(water_level(&c(&[600, 600, 5]), 215, 10), 492);
        // Never below the floor.
        assert_eq!(water_level(&c(&[50, 40]), 1000, 10), 10);
    }

    /// Deleted events give their space back to the file system, and the WAL is cut back after
    /// a checkpoint: an emptied journal left a 25 MB `state.db` (99.9 % free pages) and a
    /// 14 MB WAL until the server stopped.
    #[test]
    fn deleted_events_give_their_space_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let retention = EventRetention {
            max_events: 10,
            max_age: Duration::from_secs(3600),
        };
        drop(Store::open(&path, retention).unwrap());
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
                 INSERT INTO events (session, seq, time_ms, offset, kind, payload)
                 SELECT 'x', i, 0, 0, 'hook', printf('%.1000c', 'y') FROM n;",
            )
            .unwrap();
        }
        let mut store = Store::open(&path, retention).unwrap();
        let mode: i64 = store
            .conn
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, 2, "incremental");
        store.checkpoint().unwrap();
        let full = std::fs::metadata(&path).unwrap().len();
        assert!(full > 20_000_000, "{full}");
        // Not waiting for the age check: deletions are vacuumed at once.
        assert!(store.enforce_retention(false).unwrap() >= 19_990);
        store.checkpoint().unwrap();
        let free: i64 = store
            .conn
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))
            .unwrap();
        assert_eq!(free, 0);
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(after < full / 10, "{after} of {full}");
        let wal = std::fs::metadata(dir.path().join("state.db-wal")).map_or(0, |m| m.len());
        assert!(wal <= WAL_LIMIT as u64, "{wal}");
    }
}
