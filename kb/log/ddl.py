"""The SQLite schema of the newest version; kb.log.migrations upgrades older databases to it."""
from __future__ import annotations

#: the newest schema this code reads and writes; kb.migrations upgrades older databases to it
SCHEMA_VERSION = 5

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users(name TEXT PRIMARY KEY, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS relations(name TEXT PRIMARY KEY, single_valued INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS aliases(alias TEXT PRIMARY KEY, canonical TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entities(name TEXT PRIMARY KEY, display TEXT NOT NULL, first_seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS facts(
    vid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    key TEXT NOT NULL,
    user TEXT NOT NULL,
    subject TEXT NOT NULL,
    relation TEXT NOT NULL,
    object TEXT NOT NULL,
    text TEXT NOT NULL,
    confidence REAL NOT NULL,
    status TEXT NOT NULL,
    stated_at REAL NOT NULL,
    valid_from REAL NOT NULL,
    valid_to REAL,
    superseded_by TEXT,
    vector BLOB
);
CREATE INDEX IF NOT EXISTS facts_key ON facts(key);
CREATE INDEX IF NOT EXISTS facts_usr ON facts(user, subject, relation);
CREATE INDEX IF NOT EXISTS facts_subject ON facts(subject);
CREATE INDEX IF NOT EXISTS facts_object ON facts(object);
CREATE TABLE IF NOT EXISTS episodes(
    vid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    user TEXT NOT NULL,
    speaker TEXT NOT NULL,
    text TEXT NOT NULL,
    source_id TEXT,
    time REAL NOT NULL,
    status TEXT NOT NULL,
    vector BLOB,
    session TEXT,
    position INTEGER,
    role TEXT NOT NULL DEFAULT 'user'
);
CREATE INDEX IF NOT EXISTS episodes_user ON episodes(user);
CREATE TABLE IF NOT EXISTS sources(
    seq INTEGER PRIMARY KEY,
    fact_id TEXT NOT NULL,
    source_id TEXT,
    user TEXT,
    time REAL NOT NULL,
    episode_id TEXT,
    note TEXT
);
CREATE INDEX IF NOT EXISTS sources_fact ON sources(fact_id);
CREATE INDEX IF NOT EXISTS sources_episode ON sources(episode_id);
CREATE TABLE IF NOT EXISTS history(
    seq INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    fact_id TEXT NOT NULL,
    event TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS history_fact ON history(fact_id);
-- covering indexes of the scope filter's columns by row id (kb.log.queries names them: INDEXED BY)
CREATE INDEX IF NOT EXISTS episodes_scope ON episodes(vid, status, user, time);
CREATE INDEX IF NOT EXISTS facts_scope ON facts(vid, status, user, valid_from, valid_to);
CREATE VIRTUAL TABLE IF NOT EXISTS facts_fts USING fts5(text, content='', tokenize='porter unicode61');
CREATE VIRTUAL TABLE IF NOT EXISTS episodes_fts USING fts5(text, content='', tokenize='porter unicode61');
"""

# indexes on columns that migrations add: created after the upgrade has run
INDEXES = """
CREATE INDEX IF NOT EXISTS episodes_session ON episodes(user, session, position);
"""

