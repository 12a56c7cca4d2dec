-- The key store shared by the replicas of `kms serve`: the same rows as the SQLite store,
-- private keys wrapped under the key-encryption key.
CREATE TABLE g2p_kms_meta (
    name TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
CREATE TABLE g2p_kms_keys (
    alias TEXT PRIMARY KEY,
    -- Insertion order: ties of generated_at (keys made in the same second) in the order made.
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    application_id TEXT NOT NULL,
    reference_id TEXT NOT NULL,
    key_id TEXT NOT NULL UNIQUE,
    unique_identifier TEXT NOT NULL UNIQUE,
    thumbprint TEXT NOT NULL UNIQUE,
    certificate BYTEA NOT NULL,
    private_key BYTEA,
    generated_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('root', 'master', 'sign', 'base', 'partner')),
    -- Partner certificates carry no private key; every other kind does.
    CHECK ((kind = 'partner') = (private_key IS NULL))
);
CREATE INDEX g2p_kms_keys_by_pair ON g2p_kms_keys (application_id, reference_id, generated_at);
-- Token realms' signing keys, wrapped under the key-encryption key, so that a token one
-- replica issued is accepted by every other.
CREATE TABLE g2p_kms_realm_keys (
    name TEXT PRIMARY KEY,
    wrapped BYTEA NOT NULL
);
-- Every change to the keys is announced to the replicas, which empty their caches.
CREATE FUNCTION g2p_kms_keys_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('g2p_kms_keys', TG_OP);
    RETURN NULL;
END;
$$;
CREATE TRIGGER g2p_kms_keys_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON g2p_kms_keys
    FOR EACH STATEMENT EXECUTE FUNCTION g2p_kms_keys_changed();
