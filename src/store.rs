//! Durable records: what must survive a restart or a crash of the gateway.
//!
//! An SQLite file (WAL, synchronous commits) holds idempotency records and
//! calls whose outcome was lost. A record is committed before the client hears
//! about it. Writes run on the blocking pool; each is one short transaction.
//! It also holds order/deposit/transaction → (owner, account) affinity.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused an operation.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The blocking task panicked or was cancelled.
    #[error("store task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// What a client's idempotency key stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdemState {
    /// Claimed; the call is queued or in flight (or the gateway died meanwhile).
    Pending,
    /// The upstream answered; replay this.
    Done(StoredAnswer),
    /// The call was sent and its answer lost.
    Unknown,
}

/// An upstream answer kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// HTTP status.
    pub status: u16,
    /// Content type, if any.
    pub content_type: Option<String>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// An idempotency record as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdemRecord {
    /// Hash of the call the key was first used with.
    pub request_hash: String,
    /// Where it stands.
    pub state: IdemState,
}

/// The result of claiming a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was free and is now pending for this call.
    Claimed,
    /// The key was already used; here is its record.
    Existing(IdemRecord),
}

/// A call whose answer was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownOutcome {
    /// The route template.
    pub route: String,
    /// Fingerprint (hex) of the key the call was sent with.
    pub key_fp: String,
    /// The key's balance as last known before the call, if known.
    pub balance_before: Option<i64>,
    /// When the call was sent, ms since the Unix epoch.
    pub at_ms: i64,
}

/// Who made an order, deposit or transaction, and on which account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affinity {
    /// The caller's identity (`client:NAME` or `key:FINGERPRINT`).
    pub owner: String,
    /// The account name, or the key fingerprint in pass-through mode.
    pub account: String,
    /// Last status seen, if any.
    pub last_status: Option<String>,
}

/// The durable store.
pub struct Store {
    connection: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = FULL;
    CREATE TABLE IF NOT EXISTS idempotency (
        client TEXT NOT NULL,
        idem_key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        state TEXT NOT NULL,
        status INTEGER,
        content_type TEXT,
        body BLOB,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        PRIMARY KEY (client, idem_key)
    );
    CREATE TABLE IF NOT EXISTS affinity (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        owner TEXT NOT NULL,
        account TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        last_status TEXT,
        PRIMARY KEY (kind, id)
    );
    CREATE TABLE IF NOT EXISTS unknown_outcomes (
        client TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        route TEXT NOT NULL,
        key_fp TEXT NOT NULL,
        balance_before INTEGER,
        at_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        PRIMARY KEY (client, request_hash)
    );
";

impl Store {
    /// Opens (creating if needed) the file at `path`; `:memory:` keeps nothing.
    pub fn open(path: &str) -> Result<Arc<Self>, StoreError> {
        let connection = if path == ":memory:" {
            Connection::open_in_memory()?
        } else {
            Connection::open(Path::new(path))?
        };
        connection.execute_batch(SCHEMA)?;
        Ok(Arc::new(Self {
            connection: Arc::new(Mutex::new(connection)),
        }))
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let connection = Arc::clone(&self.connection);
        let result = tokio::task::spawn_blocking(move || {
            let connection = connection.lock().expect("store lock");
            work(&connection)
        })
        .await?;
        Ok(result?)
    }

    /// Claims `idem_key` for `client`'s call `request_hash`, atomically; an
    /// expired record counts as free.
    pub async fn claim(
        &self,
        client: &str,
        idem_key: &str,
        request_hash: &str,
        ttl: Duration,
    ) -> Result<Claim, StoreError> {
        let (client, idem_key, hash) = (
            client.to_owned(),
            idem_key.to_owned(),
            request_hash.to_owned(),
        );
        let now = now_ms();
        let expires = now + ttl.as_millis() as i64;
        self.run(move |db| {
            db.execute(
                "DELETE FROM idempotency WHERE client = ?1 AND idem_key = ?2 AND expires_ms <= ?3",
                params![client, idem_key, now],
            )?;
            let inserted = db.execute(
                "INSERT OR IGNORE INTO idempotency
                 (client, idem_key, request_hash, state, created_ms, expires_ms)
                 VALUES (?1, ?2, ?3, 'pending', ?4, ?5)",
                params![client, idem_key, hash, now, expires],
            )?;
            if inserted == 1 {
                return Ok(Claim::Claimed);
            }
            let record = db.query_row(
                "SELECT request_hash, state, status, content_type, body FROM idempotency
                 WHERE client = ?1 AND idem_key = ?2",
                params![client, idem_key],
                |row| {
                    let state: String = row.get(1)?;
                    let state = match state.as_str() {
                        "done" => IdemState::Done(StoredAnswer {
                            status: row.get(2)?,
                            content_type: row.get(3)?,
                            body: row.get(4)?,
                        }),
                        "unknown" => IdemState::Unknown,
                        _ => IdemState::Pending,
                    };
                    Ok(IdemRecord {
                        request_hash: row.get(0)?,
                        state,
                    })
                },
            )?;
            Ok(Claim::Existing(record))
        })
        .await
    }

    /// Records how a claimed call ended.
    pub async fn settle(
        &self,
        client: &str,
        idem_key: &str,
        outcome: Option<StoredAnswer>,
    ) -> Result<(), StoreError> {
        let (client, idem_key) = (client.to_owned(), idem_key.to_owned());
        self.run(move |db| {
            let (state, status, content_type, body) = match outcome {
                Some(answer) => (
                    "done",
                    Some(answer.status),
                    answer.content_type,
                    Some(answer.body),
                ),
                None => ("unknown", None, None, None),
            };
            db.execute(
                "UPDATE idempotency SET state = ?3, status = ?4, content_type = ?5, body = ?6
                 WHERE client = ?1 AND idem_key = ?2",
                params![client, idem_key, state, status, content_type, body],
            )?;
            Ok(())
        })
        .await
    }

    /// Frees a claim whose call was never sent, so that the key can be used again.
    pub async fn release(&self, client: &str, idem_key: &str) -> Result<(), StoreError> {
        let (client, idem_key) = (client.to_owned(), idem_key.to_owned());
        self.run(move |db| {
            db.execute(
                "DELETE FROM idempotency WHERE client = ?1 AND idem_key = ?2 AND state = 'pending'",
                params![client, idem_key],
            )?;
            Ok(())
        })
        .await
    }

    /// Records a call whose answer was lost, held for `hold`.
    pub async fn record_unknown(
        &self,
        client: &str,
        request_hash: &str,
        outcome: UnknownOutcome,
        hold: Duration,
    ) -> Result<(), StoreError> {
        let (client, hash) = (client.to_owned(), request_hash.to_owned());
        let expires = outcome.at_ms + hold.as_millis() as i64;
        self.run(move |db| {
            // One hold per call: a later one replaces an earlier one (it
            // holds longer), never the other way round.
            db.execute(
                "INSERT INTO unknown_outcomes
                 (client, request_hash, route, key_fp, balance_before, at_ms, expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (client, request_hash) DO UPDATE SET
                   route = excluded.route, key_fp = excluded.key_fp,
                   balance_before = excluded.balance_before, at_ms = excluded.at_ms,
                   expires_ms = excluded.expires_ms
                 WHERE excluded.expires_ms >= unknown_outcomes.expires_ms",
                params![
                    client,
                    hash,
                    outcome.route,
                    outcome.key_fp,
                    outcome.balance_before,
                    outcome.at_ms,
                    expires
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// The unexpired lost-answer record for this client's identical call, if any.
    pub async fn unknown_outcome(
        &self,
        client: &str,
        request_hash: &str,
    ) -> Result<Option<UnknownOutcome>, StoreError> {
        let (client, hash) = (client.to_owned(), request_hash.to_owned());
        let now = now_ms();
        self.run(move |db| {
            db.query_row(
                "SELECT route, key_fp, balance_before, at_ms FROM unknown_outcomes
                 WHERE client = ?1 AND request_hash = ?2 AND expires_ms > ?3",
                params![client, hash, now],
                |row| {
                    Ok(UnknownOutcome {
                        route: row.get(0)?,
                        key_fp: row.get(1)?,
                        balance_before: row.get(2)?,
                        at_ms: row.get(3)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    /// Forgets the hold written at `at_ms` by a call that then settled; a
    /// hold another call wrote since is kept.
    pub async fn clear_unknown(
        &self,
        client: &str,
        request_hash: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let (client, hash) = (client.to_owned(), request_hash.to_owned());
        self.run(move |db| {
            db.execute(
                "DELETE FROM unknown_outcomes
                 WHERE client = ?1 AND request_hash = ?2 AND at_ms = ?3",
                params![client, hash, at_ms],
            )?;
            Ok(())
        })
        .await
    }

    /// Records who made `id` (of `kind`) on which account; committed before
    /// the caller hears of the id.
    pub async fn put_affinity(
        &self,
        kind: &str,
        id: &str,
        affinity: Affinity,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let (kind, id) = (kind.to_owned(), id.to_owned());
        let now = now_ms();
        let expires = now + ttl.as_millis() as i64;
        self.run(move |db| {
            db.execute(
                "INSERT OR REPLACE INTO affinity
                 (kind, id, owner, account, created_ms, expires_ms, last_status)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    kind,
                    id,
                    affinity.owner,
                    affinity.account,
                    now,
                    expires,
                    affinity.last_status
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Who made `id`, if it is recorded and unexpired.
    pub async fn affinity(&self, kind: &str, id: &str) -> Result<Option<Affinity>, StoreError> {
        let (kind, id) = (kind.to_owned(), id.to_owned());
        let now = now_ms();
        self.run(move |db| {
            db.query_row(
                "SELECT owner, account, last_status FROM affinity
                 WHERE kind = ?1 AND id = ?2 AND expires_ms > ?3",
                params![kind, id, now],
                |row| {
                    Ok(Affinity {
                        owner: row.get(0)?,
                        account: row.get(1)?,
                        last_status: row.get(2)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    /// Remembers the last status seen for `id`.
    pub async fn set_last_status(
        &self,
        kind: &str,
        id: &str,
        status: &str,
    ) -> Result<(), StoreError> {
        let (kind, id, status) = (kind.to_owned(), id.to_owned(), status.to_owned());
        self.run(move |db| {
            db.execute(
                "UPDATE affinity SET last_status = ?3 WHERE kind = ?1 AND id = ?2
                 AND (last_status IS NULL OR last_status != ?3)",
                params![kind, id, status],
            )?;
            Ok(())
        })
        .await
    }

    /// Deletes expired records; returns how many.
    pub async fn prune(&self) -> Result<usize, StoreError> {
        let now = now_ms();
        self.run(move |db| {
            let idem = db.execute("DELETE FROM idempotency WHERE expires_ms <= ?1", [now])?;
            let unknown =
                db.execute("DELETE FROM unknown_outcomes WHERE expires_ms <= ?1", [now])?;
            Ok(idem + unknown)
        })
        .await
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[tokio::test]
    async fn a_key_is_claimed_once_and_then_replays_its_outcome() {
        let store = Store::open(":memory:").unwrap();
        assert_eq!(
            store.claim("c", "k", "h1", DAY).await.unwrap(),
            Claim::Claimed
        );
        let pending = store.claim("c", "k", "h1", DAY).await.unwrap();
        assert!(matches!(
            pending,
            Claim::Existing(IdemRecord {
                state: IdemState::Pending,
                ..
            })
        ));

        let answer = StoredAnswer {
            status: 200,
            content_type: None,
            body: b"{}".to_vec(),
        };
        store.settle("c", "k", Some(answer.clone())).await.unwrap();
        let done = store.claim("c", "k", "h2", DAY).await.unwrap();
        let expected = IdemRecord {
            request_hash: "h1".into(),
            state: IdemState::Done(answer),
        };
        assert_eq!(done, Claim::Existing(expected));
    }

    #[tokio::test]
    async fn a_released_claim_frees_the_key_and_other_clients_never_share_it() {
        let store = Store::open(":memory:").unwrap();
        store.claim("c", "k", "h", DAY).await.unwrap();
        assert_eq!(
            store.claim("other", "k", "h", DAY).await.unwrap(),
            Claim::Claimed
        );
        store.release("c", "k").await.unwrap();
        assert_eq!(
            store.claim("c", "k", "h", DAY).await.unwrap(),
            Claim::Claimed
        );
    }

    #[tokio::test]
    async fn records_survive_reopening_the_file() {
        let path = std::env::temp_dir().join(format!("otpgate-store-{}.db", std::process::id()));
        let path = path.to_str().unwrap().to_owned();
        {
            let store = Store::open(&path).unwrap();
            store.claim("c", "k", "h", DAY).await.unwrap();
            let lost = UnknownOutcome {
                route: "/v2/orders".into(),
                key_fp: "-".into(),
                balance_before: Some(5),
                at_ms: now_ms(),
            };
            store.record_unknown("c", "h", lost, DAY).await.unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert!(matches!(
            store.claim("c", "k", "h", DAY).await.unwrap(),
            Claim::Existing(_)
        ));
        let lost = store.unknown_outcome("c", "h").await.unwrap().unwrap();
        assert_eq!(lost.balance_before, Some(5));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }
}
