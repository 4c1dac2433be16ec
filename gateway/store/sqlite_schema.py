"""The tables of the SQLite token store, their version and the purge of expired rows."""

from __future__ import annotations

import sqlite3
from typing import Final

from gateway.errors import StoreError

SCHEMA_VERSION: Final = 1
"""Schema version in ``PRAGMA user_version``. A higher one means a newer gateway wrote the file."""

# Times are Unix seconds. The key_version index lets re-encryption find the records of a
# retired master key without a full scan.
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS records (
    lookup_key BLOB PRIMARY KEY,
    blob BLOB NOT NULL,
    key_version INTEGER NOT NULL,
    expires_at REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_by_key_version ON records (key_version);
CREATE INDEX IF NOT EXISTS records_by_expiry ON records (expires_at)
    WHERE expires_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS index_entries (
    index_key BLOB PRIMARY KEY,
    lookup_key BLOB NOT NULL,
    sealed_token BLOB NOT NULL,
    expires_at REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS index_entries_by_lookup_key ON index_entries (lookup_key);
CREATE INDEX IF NOT EXISTS index_entries_by_expiry ON index_entries (expires_at)
    WHERE expires_at IS NOT NULL;
"""


def create_schema(connection: sqlite3.Connection) -> None:
    """Create the tables of a new file, or check that an existing file has a known version."""
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the SQLite store has schema version {version}, but this gateway knows only up to "
            f"{SCHEMA_VERSION}; upgrade the gateway"
        )
    connection.executescript(_SCHEMA)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def purge_expired_rows(connection: sqlite3.Connection, now: float) -> int:
    """Delete the records and index entries expired at ``now``, and return how many rows went."""
    # NOTE: each table is purged in one statement, so a large backlog of expired rows holds the
    # write lock, and delays every write, for the whole purge. Deleting in batches would bound it.
    purged = 0
    for table in ("records", "index_entries"):
        cursor = connection.execute(
            f"DELETE FROM {table} WHERE expires_at IS NOT NULL AND expires_at <= ?",  # noqa: S608 - fixed table names
            (now,),
        )
        purged += cursor.rowcount
    return purged
