"""A recording's tables (docs/recording.md says what each column holds).

Kept apart, with nothing imported, for the writer process, which must start fast.
"""

SCHEMA_VERSION = 1
"""Bumped with every change to the tables below; a reader refuses versions it does not know."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workers (id INTEGER PRIMARY KEY, source TEXT NOT NULL, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS journal (
    t REAL NOT NULL, op INTEGER NOT NULL, worker INTEGER, seq INTEGER, a REAL, b REAL, c REAL, args TEXT
);
CREATE TABLE IF NOT EXISTS transitions (
    t REAL NOT NULL, worker INTEGER NOT NULL, from_state TEXT NOT NULL, to_state TEXT NOT NULL,
    reason TEXT NOT NULL, silence_s REAL, episode_start REAL, episode_s REAL, missed INTEGER, probe TEXT,
    main_blocked_ms REAL, blocked_s REAL, native TEXT, culprit TEXT, stack TEXT
);
CREATE INDEX IF NOT EXISTS transitions_by_time ON transitions (t);
"""
