-- The key store as the first versions of g2p-kms made it; IF NOT EXISTS so that a store
-- made before migrations were versioned is adopted as it is.
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    alias TEXT PRIMARY KEY,
    application_id TEXT NOT NULL,
    reference_id TEXT NOT NULL,
    key_id TEXT NOT NULL UNIQUE,
    unique_identifier TEXT NOT NULL UNIQUE,
    thumbprint TEXT NOT NULL UNIQUE,
    certificate BLOB NOT NULL,
    private_key BLOB,
    generated_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    kind TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS keys_by_app_ref ON keys (application_id, reference_id, generated_at);
INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', 1);
