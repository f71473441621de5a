//! The floor: raw rusqlite doing what a user would write by hand for the same rows, on a
//! connection with BlazeDB's pragmas and key. BlazeDB cannot be faster than SQLite under it,
//! so its figures are read as a fraction of these.
//!
//! The hand-written table has one typed column per field and the 16-byte UUIDv7 as the
//! primary key of a `WITHOUT ROWID` table (the same key BlazeDB uses):
//!
//! ```sql
//! CREATE TABLE bugs (id BLOB PRIMARY KEY, title TEXT NOT NULL, status TEXT NOT NULL,
//!     priority INTEGER NOT NULL, assignee TEXT NOT NULL, created INTEGER NOT NULL) WITHOUT ROWID
//! ```

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::workload::Bug;

/// The floor's schema.
pub const SCHEMA: &str = "CREATE TABLE bugs (id BLOB PRIMARY KEY, title TEXT NOT NULL, \
     status TEXT NOT NULL, priority INTEGER NOT NULL, assignee TEXT NOT NULL, \
     created INTEGER NOT NULL) WITHOUT ROWID";
/// The floor's table name (what `dbstat` is asked about).
pub const TABLE: &str = "bugs";
/// The floor's index for the indexed query.
pub const CREATE_INDEX: &str = "CREATE INDEX bugs_assignee ON bugs (assignee)";

const INSERT: &str = "INSERT INTO bugs (id, title, status, priority, assignee, created) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const SELECT_BY_ID: &str =
    "SELECT title, status, priority, assignee, created FROM bugs WHERE id = ?1";
const SELECT_BY_ASSIGNEE: &str =
    "SELECT id, title, status, priority, assignee, created FROM bugs WHERE assignee = ?1";
const UPDATE_STATUS: &str = "UPDATE bugs SET status = ?1 WHERE id = ?2";
const UPDATE_PRIORITY: &str = "UPDATE bugs SET priority = ?1 WHERE id = ?2";

/// A row read back: the id and the values, owned, as a user's struct would hold them.
pub type Row = ([u8; 16], String, String, i64, String, i64);

/// Open a connection the way BlazeDB's `store/open.rs` does: key and page HMAC
/// ([`blazedb::store::PAGE_HMAC`]) first, a first read (which derives the key and decrypts
/// page 1), then WAL, `synchronous=NORMAL`, in-memory temp
/// store, a 32 MB page cache, a 10 s busy timeout and a statement cache.
pub fn connect(path: &Path, password: Option<&str>) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .with_context(|| format!("opening {}", path.display()))?;
    if let Some(pw) = password {
        key(&conn, pw)?;
    }
    let _tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", -32_000)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Key `conn` as BlazeDB keys an encrypted file: the password, then the page HMAC.
fn key(conn: &Connection, password: &str) -> Result<()> {
    conn.pragma_update(None, "key", password)?;
    conn.pragma_update(None, "cipher_hmac_algorithm", blazedb::store::PAGE_HMAC)?;
    Ok(())
}

/// A side connection to any file (BlazeDB's too, or one [`connect`] made) for reading
/// `dbstat`: the key and the page HMAC both use, and nothing else, so it changes no setting
/// of the file.
pub fn inspect(path: &Path, password: Option<&str>) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {}", path.display()))?;
    if let Some(pw) = password {
        key(&conn, pw)?;
    }
    Ok(conn)
}

/// Copy a plain file into a new encrypted one under `password` (SQLCipher's
/// `sqlcipher_export`), as a user encrypting an existing database would, with the page HMAC
/// [`connect`] uses.
pub fn export_encrypted(plain: &Path, encrypted: &Path, password: &str) -> Result<()> {
    // Without SQLITE_OPEN_CREATE on the main database, ATTACH cannot create the new file.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(plain, flags)
        .with_context(|| format!("opening {}", plain.display()))?;
    conn.execute(
        "ATTACH DATABASE ?1 AS encrypted KEY ?2",
        params![encrypted.display().to_string(), password],
    )?;
    conn.execute_batch(&format!(
        "PRAGMA encrypted.cipher_hmac_algorithm = {}",
        blazedb::store::PAGE_HMAC
    ))?;
    conn.query_row("SELECT sqlcipher_export('encrypted')", [], |_| Ok(()))?;
    conn.execute_batch("DETACH DATABASE encrypted")?;
    Ok(())
}

/// Bytes of the b-tree pages of each named table or index, from SQLite's `dbstat` virtual
/// table (compiled into the bundled SQLCipher with `SQLITE_ENABLE_DBSTAT_VTAB`).
pub fn table_bytes(conn: &Connection, names: &[&str]) -> Result<u64> {
    let mut total = 0u64;
    for name in names {
        let bytes: Option<i64> = conn
            .query_row(
                "SELECT sum(pgsize) FROM dbstat WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .context("querying dbstat (is SQLITE_ENABLE_DBSTAT_VTAB compiled in?)")?;
        total += bytes.unwrap_or(0) as u64;
    }
    Ok(total)
}

/// The hand-written store.
#[derive(Debug)]
pub struct Floor {
    conn: Connection,
}

impl Floor {
    /// Create the table in a new file.
    pub fn create(path: &Path, password: Option<&str>) -> Result<Floor> {
        let conn = connect(path, password)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Floor { conn })
    }

    /// Open an existing file.
    pub fn open(path: &Path, password: Option<&str>) -> Result<Floor> {
        Ok(Floor {
            conn: connect(path, password)?,
        })
    }

    /// The connection (for `dbstat` and ad-hoc checks).
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Insert rows in one transaction.
    pub fn insert_batch(&mut self, ids: &[[u8; 16]], bugs: &[Bug]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(INSERT)?;
            for (id, b) in ids.iter().zip(bugs) {
                stmt.execute(params![
                    &id[..],
                    b.title,
                    b.status,
                    b.priority,
                    b.assignee,
                    b.created_us
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Insert one row in its own transaction (autocommit).
    pub fn insert_one(&self, id: &[u8; 16], b: &Bug) -> Result<()> {
        self.conn.prepare_cached(INSERT)?.execute(params![
            &id[..],
            b.title,
            b.status,
            b.priority,
            b.assignee,
            b.created_us
        ])?;
        Ok(())
    }

    /// A row by primary key.
    pub fn get(&self, id: &[u8; 16]) -> Result<Option<Row>> {
        Ok(self
            .conn
            .prepare_cached(SELECT_BY_ID)?
            .query_row([&id[..]], |r| {
                Ok((*id, r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()?)
    }

    /// Rows whose assignee equals `name` (using the index once [`Floor::create_index`] ran).
    pub fn by_assignee(&self, name: &str) -> Result<Vec<Row>> {
        let mut stmt = self.conn.prepare_cached(SELECT_BY_ASSIGNEE)?;
        let rows = stmt.query_map([name], |r| {
            let id: Vec<u8> = r.get(0)?;
            let id: [u8; 16] = id.try_into().unwrap_or([0; 16]);
            Ok((id, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<Row>>>()?)
    }

    /// Add the index on `assignee`.
    pub fn create_index(&self) -> Result<()> {
        self.conn.execute_batch(CREATE_INDEX)?;
        Ok(())
    }

    /// Set one field of one row, committed (autocommit).
    pub fn update_status(&self, id: &[u8; 16], status: &str) -> Result<()> {
        let n = self
            .conn
            .prepare_cached(UPDATE_STATUS)?
            .execute(params![status, &id[..]])?;
        anyhow::ensure!(n == 1, "floor update touched {n} rows");
        Ok(())
    }

    /// Set `priority` of several rows in one transaction.
    pub fn update_priority_batch(&mut self, rows: &[([u8; 16], i64)]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(UPDATE_PRIORITY)?;
            for (id, priority) in rows {
                let n = stmt.execute(params![priority, &id[..]])?;
                anyhow::ensure!(n == 1, "floor update touched {n} rows");
            }
        }
        tx.commit()?;
        Ok(())
    }
}
