-- 002: a batch is applied at most once, also when the applier resends it after losing the
-- connection (and with it the acknowledgement of a commit that succeeded). kreplay.advance now
-- requires every partition of a batch to move forward, and says KR003 when the whole batch is
-- already applied (see store.ErrAlreadyApplied).

CREATE OR REPLACE FUNCTION kreplay.advance(p_version text, p_generation integer,
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
