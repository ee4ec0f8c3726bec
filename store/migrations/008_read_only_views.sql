-- 008: nothing writes through a live view. A routed live view (store/route.go) is a UNION ALL,
-- which PostgreSQL refuses to write through with "cannot update view" (SQLSTATE 55000) before
-- it checks privileges; with this INSTEAD OF trigger on every live view, the rewriter accepts the
-- write, the executor checks privileges first, and a role without them (a version's role) gets
-- "permission denied for view ..." (42501) as it did with a plain view; a role with them
-- (kreplay's own) gets this function's refusal.
CREATE FUNCTION kreplay.refuse_live_view_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the live view %.% is read-only: kreplay writes only the versions'' tables', TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = '42501';
END $$;
REVOKE EXECUTE ON FUNCTION kreplay.refuse_live_view_write() FROM PUBLIC;
