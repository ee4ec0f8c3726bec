-- 004: what the engine and the leader check while versions run.

-- Why a running version is not advancing. The engine writes it when a batch fails for a
-- reason of the environment (a lost connection, a column renamed away, a privilege revoked)
-- and it retries, at most every half minute while that lasts, and clears it once the batch
-- commits; status shows it as the version's error while it is fresh.
ALTER TABLE kreplay.versions
    ADD COLUMN stalled    text,
    ADD COLUMN stalled_at timestamptz;

-- The Kafka topic id of each source topic of a version, as first seen: a topic deleted and
-- created again under the same name has a new id, and the records the version applied are gone.
CREATE TABLE kreplay.source_topics (
    version  text NOT NULL REFERENCES kreplay.versions (key),
    topic    text NOT NULL,
    topic_id text NOT NULL,
    seen_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (version, topic)
);
