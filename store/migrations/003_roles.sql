-- 003: every version gets a PostgreSQL role of its own, so that its handlers, folds, tables
-- statements and checks can write only in its schema (see store/role.go). Role names are
-- cluster-wide: they start with kr_<id>_, where <id> is this catalog's random id, so that two
-- databases (or installations) on one server never take each other's roles.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND (rolcreaterole OR rolsuper)) THEN
        RAISE EXCEPTION 'kreplay''s database user % cannot create roles', current_user
            USING ERRCODE = '42501',
                  HINT = 'kreplay creates a role per version to confine its handlers: ALTER ROLE ' || quote_ident(current_user) || ' CREATEROLE (see the README, "PostgreSQL privileges")';
    END IF;
END $$;

-- This catalog's id, as it names the roles (kr_<id>_...): the first 8 hex digits of its catalog id
-- (002: kreplay.installation), the identity serve announces on the status topic.
CREATE VIEW kreplay.catalog AS
    SELECT true AS one, substr(replace(catalog_id::text, '-', ''), 1, 8) AS id FROM kreplay.installation;

-- A version's role (kr_<id>_<key>) and its password: its appliers, its tables statements and its
-- checks log in as it. Only kreplay's own role reads this table (no grants). NULL for a version
-- created before 003 until serve gives it a role at start.
ALTER TABLE kreplay.versions ADD COLUMN role text UNIQUE, ADD COLUMN role_password text;

-- The group of the versions' roles (kr_<id>__versions): it may call kreplay.advance, nothing else
-- of kreplay's. A group, so that creating a version grants nothing on schema kreplay (two
-- concurrent grants on one schema conflict).
DO $$
DECLARE
    grp text := 'kr_' || (SELECT id FROM kreplay.catalog) || '__versions';
BEGIN
    EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT', grp);
    EXECUTE format('GRANT %I TO current_user', grp); -- so that kreplay's role may drop what it holds (DropRoles)
    EXECUTE format('GRANT USAGE ON SCHEMA kreplay TO %I', grp);
END $$;

-- Nobody but kreplay's own role runs its functions; the group runs advance (below).
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA kreplay FROM PUBLIC;
ALTER DEFAULT PRIVILEGES IN SCHEMA kreplay REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- advance now runs with its owner's rights (the versions' roles cannot write the checkpoints
-- themselves), with a fixed search_path, and only for the caller's own version: session_user
-- must be the version's role (a login, which RESET ROLE or set_config('role', ...) cannot
-- change), so a handler can move no other version's checkpoints. A version without a role yet
-- is advanced by kreplay's own role only, never by a version's role. Otherwise as in 001.
CREATE OR REPLACE FUNCTION kreplay.advance(p_version text, p_generation integer,
                                           p_topics text[], p_partitions integer[], p_next bigint[],
                                           p_applied bigint[], p_skipped bigint[])
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n_in       integer := coalesce(array_length(p_topics, 1), 0);
    n_moved    integer;
    v_state    text;
    v_caughtup timestamptz;
    v_role     text;
BEGIN
    SELECT v.state, v.caught_up_at, v.role INTO v_state, v_caughtup, v_role FROM kreplay.versions AS v WHERE v.key = p_version;
    IF (v_role IS NOT NULL AND v_role <> session_user::text)
       OR (v_role IS NULL AND EXISTS (SELECT 1 FROM kreplay.versions AS v WHERE v.role = session_user::text)) THEN
        RAISE EXCEPTION 'kreplay: role % may not advance version %: a version advances only its own checkpoints', session_user, p_version
            USING ERRCODE = '42501';
    END IF;
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

DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION kreplay.advance(text, integer, text[], integer[], bigint[], bigint[], bigint[]) TO %I',
                   'kr_' || (SELECT id FROM kreplay.catalog) || '__versions');
END $$;
