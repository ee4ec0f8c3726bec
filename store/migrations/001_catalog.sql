-- 001: the kreplay catalog: projections, versions, checkpoints, fencing.
-- Applied by `kreplay migrate` and at `serve` start, once (recorded in kreplay.schema_migrations).

-- A projection is a name from the config file; live_version is the version its views point at.
CREATE TABLE kreplay.projections (
    name             text PRIMARY KEY,
    live_version     text,
    previous_version text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- A version (a replay) of a projection, in its own schema named after its key. It runs the
-- definition snapshot stored here, never the config file.
CREATE TABLE kreplay.versions (
    key             text PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_]{0,47}$'),
    projection      text NOT NULL REFERENCES kreplay.projections (name),
    state           text NOT NULL CHECK (state IN
                        ('created', 'replaying', 'tailing', 'live', 'retired', 'removed', 'paused', 'failed')),
    -- the state to return to on resume (from paused or failed)
    resume_state    text CHECK (resume_state IN ('replaying', 'tailing', 'live', 'retired')),
    definition      jsonb NOT NULL,
    definition_hash text NOT NULL,
    options         jsonb NOT NULL DEFAULT '{}',
    error           text,
    error_topic     text,
    error_partition integer,
    error_offset    bigint,
    -- verify: while set, runners apply nothing at or past these offsets ({"topic": {"0": 12}})
    hold            jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    caught_up_at    timestamptz,
    promoted_at     timestamptz,
    retired_at      timestamptz,
    removed_at      timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX versions_projection ON kreplay.versions (projection);

ALTER TABLE kreplay.projections
    ADD FOREIGN KEY (live_version) REFERENCES kreplay.versions (key),
    ADD FOREIGN KEY (previous_version) REFERENCES kreplay.versions (key);

-- The position of a version in one partition. The truth for where consumption resumes: written in
-- the same transaction as the projection rows. generation fences members that lost the partition.
CREATE TABLE kreplay.checkpoints (
    version        text NOT NULL REFERENCES kreplay.versions (key),
    topic          text NOT NULL,
    partition      integer NOT NULL,
    next_offset    bigint NOT NULL,            -- the next offset to apply
    start_offset   bigint NOT NULL,            -- where the version started (0, or --since)
    target_offset  bigint NOT NULL,            -- the high watermark when it started: replaying until reached
    applied_events bigint NOT NULL DEFAULT 0,  -- events consumed and committed (handled or not)
    skipped_events bigint NOT NULL DEFAULT 0,  -- poison events skipped or dead-lettered
    generation     integer NOT NULL DEFAULT -1, -- consumer-group generation of the owner
    member         text,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (version, topic, partition)
);

-- Switches of a projection's live version (promote and rollback).
CREATE TABLE kreplay.promotions (
    id           bigserial PRIMARY KEY,
    projection   text NOT NULL REFERENCES kreplay.projections (name),
    kind         text NOT NULL CHECK (kind IN ('bootstrap', 'promote', 'rollback')),
    from_version text REFERENCES kreplay.versions (key),
    to_version   text NOT NULL REFERENCES kreplay.versions (key),
    attempts     integer NOT NULL DEFAULT 1,
    duration_ms  double precision,
    at           timestamptz NOT NULL DEFAULT now()
);

-- Results of verify.
CREATE TABLE kreplay.verifications (
    id       bigserial PRIMARY KEY,
    version  text NOT NULL REFERENCES kreplay.versions (key),
    against  text NOT NULL REFERENCES kreplay.versions (key),
    passed   boolean NOT NULL,
    report   jsonb NOT NULL,
    offsets  jsonb NOT NULL,
    at       timestamptz NOT NULL DEFAULT now()
);

-- Control commands (at most one execution per id) and their outcomes. A command is claimed
-- (running) before it executes and done after; one left running was interrupted.
CREATE TABLE kreplay.commands (
    id          text PRIMARY KEY,
    command     text NOT NULL,
    replay      text,
    projection  text,
    state       text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done')),
    ok          boolean,
    error       text,
    result      jsonb,
    issued_by   text,
    issued_at   timestamptz,
    executed_by text,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

-- Where the control-topic reader resumes (one row per control topic).
CREATE TABLE kreplay.control_positions (
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

-- claim: a member that was assigned partitions of a version takes them over for its group
-- generation and learns where to resume. Missing rows (partitions created after the version
-- started) begin at offset 0. A claim from an older generation than the stored one is refused
-- (SQLSTATE KR001) unless forced (the caller checked that the group really is at p_generation,
-- e.g. after the group was deleted and its generations restarted).
CREATE FUNCTION kreplay.claim(p_version text, p_generation integer, p_member text,
                              p_topics text[], p_partitions integer[], p_force boolean)
RETURNS TABLE (topic text, partition integer, next_offset bigint, target_offset bigint)
LANGUAGE plpgsql AS $$
DECLARE
    n_in      integer := coalesce(array_length(p_topics, 1), 0);
    n_claimed integer;
BEGIN
    INSERT INTO kreplay.checkpoints AS c (version, topic, partition, next_offset, start_offset, target_offset)
    SELECT p_version, u.t, u.p, 0, 0, 0 FROM unnest(p_topics, p_partitions) AS u (t, p)
    ON CONFLICT DO NOTHING;

    UPDATE kreplay.checkpoints AS c SET generation = p_generation, member = p_member, updated_at = now()
    FROM unnest(p_topics, p_partitions) AS u (t, p)
    WHERE c.version = p_version AND c.topic = u.t AND c.partition = u.p
      AND (c.generation <= p_generation OR p_force);
    GET DIAGNOSTICS n_claimed = ROW_COUNT;
    IF n_claimed < n_in THEN
        RAISE EXCEPTION 'kreplay: claim of version % by generation % refused: a newer generation owns some of its partitions', p_version, p_generation
            USING ERRCODE = 'KR001';
    END IF;

    RETURN QUERY SELECT c.topic, c.partition, c.next_offset, c.target_offset FROM kreplay.checkpoints AS c
        JOIN unnest(p_topics, p_partitions) AS u (t, p) ON c.topic = u.t AND c.partition = u.p
        WHERE c.version = p_version;
END $$;

-- advance: called first in every apply transaction. Moves the checkpoints of the partitions the
-- batch touched, strictly forward; refuses (and so rolls back the whole batch) when the caller no
-- longer owns them (KR001: fenced), the version may not run (KR002), or the batch was applied
-- already (KR003: resent after a commit whose acknowledgement was lost); and flips replaying ->
-- tailing in the transaction that reaches the start watermarks. Returns the version's state.
CREATE FUNCTION kreplay.advance(p_version text, p_generation integer,
                                p_topics text[], p_partitions integer[], p_next bigint[],
                                p_applied bigint[], p_skipped bigint[])
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    n_in       integer := coalesce(array_length(p_topics, 1), 0);
    n_moved    integer;
    v_state    text;
    v_caughtup timestamptz;
BEGIN
    SELECT v.state, v.caught_up_at INTO v_state, v_caughtup FROM kreplay.versions AS v WHERE v.key = p_version;
    IF v_state IS NULL OR v_state NOT IN ('replaying', 'tailing', 'live', 'retired') THEN
        RAISE EXCEPTION 'kreplay: version % is %, not running', p_version, coalesce(v_state, 'missing')
            USING ERRCODE = 'KR002';
    END IF;

    -- A batch whose offsets this generation has all applied already: its commit succeeded but
    -- the acknowledgement was lost with the connection, and the applier sent it again. Refuse it
    -- before any handler runs, so that nothing is applied twice.
    IF n_in > 0 AND NOT EXISTS (
        SELECT 1 FROM unnest(p_topics, p_partitions, p_next) AS u (t, p, n)
        LEFT JOIN kreplay.checkpoints AS c
               ON c.version = p_version AND c.topic = u.t AND c.partition = u.p AND c.generation = p_generation
        WHERE c.next_offset IS NULL OR c.next_offset < u.n) THEN
        RAISE EXCEPTION 'kreplay: version % generation % has already applied this batch', p_version, p_generation
            USING ERRCODE = 'KR003';
    END IF;

    UPDATE kreplay.checkpoints AS c
    SET next_offset = u.n, applied_events = c.applied_events + u.a,
        skipped_events = c.skipped_events + u.s, updated_at = now()
    FROM unnest(p_topics, p_partitions, p_next, p_applied, p_skipped) AS u (t, p, n, a, s)
    WHERE c.version = p_version AND c.topic = u.t AND c.partition = u.p
      AND c.generation = p_generation AND u.n > c.next_offset;
    GET DIAGNOSTICS n_moved = ROW_COUNT;
    IF n_moved < n_in THEN
        RAISE EXCEPTION 'kreplay: version % generation % is fenced: its partitions were reassigned', p_version, p_generation
            USING ERRCODE = 'KR001';
    END IF;

    -- Catching up: once this batch's partitions have reached the start watermarks, check all of
    -- the version's partitions. Parallel appliers (ordering: partition) serialise on the version
    -- row here, so the last of them to commit sees every other one's rows and flips the state.
    IF (v_state = 'replaying' OR (v_state = 'live' AND v_caughtup IS NULL))
       AND NOT EXISTS (SELECT 1 FROM kreplay.checkpoints AS c
                       JOIN unnest(p_topics, p_partitions) AS u (t, p) ON c.topic = u.t AND c.partition = u.p
                       WHERE c.version = p_version AND c.next_offset < c.target_offset) THEN
        PERFORM 1 FROM kreplay.versions AS v WHERE v.key = p_version FOR UPDATE;
        IF NOT EXISTS (SELECT 1 FROM kreplay.checkpoints AS c
                       WHERE c.version = p_version AND c.next_offset < c.target_offset) THEN
            UPDATE kreplay.versions AS v
            SET state = CASE WHEN v.state = 'replaying' THEN 'tailing' ELSE v.state END,
                caught_up_at = coalesce(v.caught_up_at, now()), updated_at = now()
            WHERE v.key = p_version
            RETURNING v.state INTO v_state;
            PERFORM pg_notify('kreplay_catalog', p_version);
        END IF;
    END IF;
    RETURN v_state;
END $$;
