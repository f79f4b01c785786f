//! Versioned schema migrations. `PRAGMA user_version` holds the schema version; each step is one
//! file `migrations/vN_to_vN+1.sql` applied in its own transaction, so a crash mid-upgrade
//! leaves the previous version intact.

use rusqlite::Connection;

/// Step `i` upgrades from version `i` to `i + 1`.
const STEPS: &[&str] = &[
    include_str!("migrations/v0_to_v1.sql"),
    include_str!("migrations/v1_to_v2.sql"),
    include_str!("migrations/v2_to_v3.sql"),
    include_str!("migrations/v3_to_v4.sql"),
    include_str!("migrations/v4_to_v5.sql"),
    include_str!("migrations/v5_to_v6.sql"),
];

pub const SCHEMA_VERSION: u32 = STEPS.len() as u32;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("the database has schema version {found}, newer than this build's {SCHEMA_VERSION}; run a newer anytime")]
    TooNew { found: u32 },
    #[error("migration to schema version {to} failed: {source}")]
    Step { to: u32, source: rusqlite::Error },
    #[error("could not read the schema version: {0}")]
    Version(rusqlite::Error),
}

pub fn migrate(conn: &mut Connection) -> Result<u32, MigrateError> {
    let found: u32 = conn.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(MigrateError::Version)?;
    if found > SCHEMA_VERSION {
        return Err(MigrateError::TooNew { found });
    }
    for (from, sql) in STEPS.iter().enumerate().skip(found as usize) {
        let to = from as u32 + 1;
        let step = |conn: &mut Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", to)?;
            tx.commit()
        };
        step(conn).map_err(|source| MigrateError::Step { to, source })?;
        tracing::info!(version = to, "database schema migrated");
    }
    Ok(SCHEMA_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_from_empty_once_and_refuses_newer_schemas() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), SCHEMA_VERSION);
        // Running again is a no-op.
        assert_eq!(migrate(&mut conn).unwrap(), SCHEMA_VERSION);
        let tables: u32 =
            conn.query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0)).unwrap();
        assert!(tables >= 12, "{tables}");
        // A version-1 database (before device approval) upgrades and keeps its devices approved.
        let mut old = Connection::open_in_memory().unwrap();
        let tx = old.transaction().unwrap();
        tx.execute_batch(STEPS[0]).unwrap();
        tx.pragma_update(None, "user_version", 1).unwrap();
        tx.commit().unwrap();
        old.execute("INSERT INTO users VALUES (1, 'ann', 'h', 'Ann', NULL, 1, 0)", []).unwrap();
        old.execute("INSERT INTO devices VALUES (10, 1, 'd', x'00', 0, 99, 0)", []).unwrap();
        assert_eq!(migrate(&mut old).unwrap(), SCHEMA_VERSION);
        let approved: bool = old.query_row("SELECT approved FROM devices WHERE id = 10", [], |r| r.get(0)).unwrap();
        assert!(approved);
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        assert!(matches!(migrate(&mut conn), Err(MigrateError::TooNew { .. })));
    }
}
