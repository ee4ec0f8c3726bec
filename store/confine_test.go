package store_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/store/storetest"
)

// dump is every row that a version must never change but its own: the live version's tables
// (which the live views show), another version's, and kreplay's catalog (checkpoints and
// versions), each table's rows as text, sorted.
func dump(t *testing.T, s *store.Store) string {
	t.Helper()
	var b strings.Builder
	for _, table := range []string{"accounts_v1.balances", "accounts_v1.owners", "accounts_v2.balances", "accounts_v2.owners", "public.balances",
		"kreplay.checkpoints WHERE version IN ('accounts_v1', 'accounts_v2')",
		"kreplay.versions WHERE key IN ('accounts_v1', 'accounts_v2')",
		"kreplay.projections"} {
		var rows string
		from, where, _ := strings.Cut(table, " WHERE ")
		if where != "" {
			where = " WHERE " + where
		}
		require.NoError(t, s.Pool().QueryRow(context.Background(),
			"SELECT coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '') FROM "+from+" AS t"+where).Scan(&rows))
		b.WriteString(table + ":\n" + rows + "\n")
	}
	return b.String()
}

// confined sets up what a hostile handler would like to write: accounts_v1 live (public.balances
// is its view) and accounts_v2 tailing, each with rows, and returns the dump of both.
func confined(t *testing.T) (*store.Store, string) {
	t.Helper()
	s, _ := open(t)
	ctx := context.Background()
	liveAndTailing(t, s)
	tps := []store.TopicPartition{{Topic: "bank", Partition: 0}, {Topic: "bank", Partition: 1}}
	for _, key := range []string{"accounts_v1", "accounts_v2"} {
		_, err := s.Claim(ctx, key, 1, "m", tps, false)
		require.NoError(t, err)
		a, err := s.NewApplier(store.ApplierConfig{Key: key, Definition: definition(t, accountsYAML)})
		require.NoError(t, err)
		_, err = a.Apply(ctx, 1, []store.Item{
			item("Deposited", "x", `{"amount": 10}`, 0, 0),
			item("Deposited", "y", `{"amount": 7}`, 1, 0),
			item("Named", "x", `{"name": "Ada"}`, 1, 1),
		})
		require.NoError(t, err)
		a.Close(ctx)
	}
	require.Equal(t, int64(17), scalar(t, s, "SELECT sum(total) FROM public.balances"))
	return s, dump(t, s)
}

// hostileHandlers write outside their version's schema: the live view, another version's table,
// kreplay's checkpoints, another version's checkpoint through kreplay.advance, and, through a
// function of their own tables' DDL or a DO block (which no parsing of the handler sees), after
// leaving their role with RESET ROLE or set_config('role', ...).
var hostileHandlers = []struct {
	name, ddl, handler string
	validation         string // what validation says, "" if it cannot see it
}{
	{name: "live view", handler: "INSERT INTO public.balances VALUES (@aggregate_id || '-mallory', 1000)", validation: "public.balances"},
	{name: "live view update", handler: "UPDATE public.balances SET total = total * 2 WHERE account_id <> @aggregate_id", validation: "public.balances"},
	{name: "another version", handler: "UPDATE accounts_v2.balances SET total = 0 WHERE account_id <> @aggregate_id", validation: "accounts_v2"},
	{name: "checkpoints", handler: "UPDATE kreplay.checkpoints SET next_offset = 0 WHERE topic <> @topic", validation: "kreplay.checkpoints"},
	{name: "versions", handler: "UPDATE kreplay.versions SET state = 'failed' WHERE key <> @aggregate_id", validation: "kreplay.versions"},
	{name: "advance another version", validation: "kreplay.advance",
		handler: "SELECT kreplay.advance('accounts_v1', 1, ARRAY[@topic::text], ARRAY[0], ARRAY[90::bigint], ARRAY[0::bigint], ARRAY[0::bigint])"},
	{name: "reset role in a function",
		ddl: `CREATE FUNCTION escape(account text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  RESET ROLE;
  EXECUTE 'UPDATE public.balances SET total = total * 2 WHERE account_id <> $1' USING account;
END $$`,
		handler: "SELECT escape(@aggregate_id)"},
	{name: "set_config role in a function",
		ddl: `CREATE FUNCTION escape(account text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('role', 'none', false);
  EXECUTE 'DELETE FROM accounts_v2.balances WHERE account_id <> $1' USING account;
  EXECUTE 'DELETE FROM kreplay.checkpoints';
END $$`,
		handler: "SELECT escape(@aggregate_id)"},
	{name: "DO block", handler: `DO $$ BEGIN SET ROLE NONE; EXECUTE 'UPDATE public.balances SET total = 0'; END $$`},
}

// Handlers are confined to their version's schema by PostgreSQL: a handler that writes the live
// view, another version's table or kreplay's catalog, or calls kreplay.advance for another
// version, is refused by validation when the statement names the object (with the projection,
// the event type and the object), and by PostgreSQL at apply time in every case (SQLSTATE 42501,
// also after RESET ROLE or set_config('role', ...), which return to the version's own role);
// every row outside the version's schema stays as it was, byte for byte.
func TestHostileHandlersCannotWriteOutsideTheirVersion(t *testing.T) {
	t.Parallel()
	s, before := confined(t)
	ctx := context.Background()
	for i, h := range hostileHandlers {
		yaml := replaceOnce(t, accountsYAML, "INSERT INTO owners VALUES (@aggregate_id, @data->>'name') ON CONFLICT (account_id) DO UPDATE SET name = EXCLUDED.name",
			strings.ReplaceAll(h.handler, "\n", " "))
		if h.ddl != "" {
			yaml = replaceOnce(t, yaml, "    handlers:\n", "      - |\n        "+strings.ReplaceAll(h.ddl, "\n", "\n        ")+"\n    handlers:\n")
		}
		def := definition(t, yaml)
		err := s.ValidateDefinition(ctx, def)
		if h.validation != "" {
			require.ErrorContains(t, err, `projection "accounts": handler "Named"`, h.name)
			require.ErrorContains(t, err, h.validation, h.name)
		}
		require.Equal(t, before, dump(t, s), "%s: validation changed nothing", h.name)

		// Past validation (dynamic SQL, or a version created without it): PostgreSQL refuses.
		key := "hostile_" + string(rune('a'+i))
		_, err = s.CreateVersion(ctx, store.NewVersion{Key: key, Definition: def,
			Start: []store.PartitionStart{{Topic: "bank", Partition: 0, Target: 100}, {Topic: "bank", Partition: 1, Target: 100}}})
		require.NoError(t, err, h.name)
		_, err = s.Claim(ctx, key, 1, "m", []store.TopicPartition{{Topic: "bank", Partition: 0}, {Topic: "bank", Partition: 1}}, false)
		require.NoError(t, err)
		a, err := s.NewApplier(store.ApplierConfig{Key: key, Definition: def})
		require.NoError(t, err)
		_, err = a.Apply(ctx, 1, []store.Item{
			item("Deposited", "x", `{"amount": 1}`, 0, 0),
			item("Named", "x", `{"name": "Mallory"}`, 1, 0),
		})
		a.Close(ctx)
		// A privilege refused is the environment's by the SQLSTATE rule (only classes 22, 23 and
		// P0001 are an event's fault): the batch is retried without advancing, never skipped, and
		// the version fails after deniedBeforeFailing (processor/lane.go).
		var herr *store.HandlerError
		require.False(t, errors.As(err, &herr), "%s: not the event's fault: %v", h.name, err)
		require.True(t, store.IsPermissionDenied(err), "%s: %v", h.name, err)
		require.ErrorContains(t, err, `handler "Named"`, h.name)
		require.ErrorContains(t, err, "[SQLSTATE 42501]", h.name)
		require.Equal(t, int64(0), scalar(t, s, "SELECT count(*) FROM "+key+".balances"), "%s: the batch rolled back", h.name)
		require.Equal(t, before, dump(t, s), "%s: rows outside the version changed", h.name)
	}
}

// roles lists the roles of the store's catalog, sorted.
func roles(t *testing.T, s *store.Store) []string {
	t.Helper()
	prefix, err := s.RolePrefix(context.Background())
	require.NoError(t, err)
	rows, err := s.Pool().Query(context.Background(), "SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1) ORDER BY 1", prefix)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

// A version's role is created with it, owns its schema, logs in with a password PostgreSQL keeps
// only as a SCRAM verifier, and is dropped with the version; a validation's scratch role is gone
// when it returns; dropping the database drops every role of its catalog.
func TestVersionRolesLiveAndDieWithTheirVersions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := storetest.NewDatabase(t)
	s, err := store.Open(ctx, store.Config{URL: dbURL}, nil)
	require.NoError(t, err)
	defer s.Close()
	_, err = s.Migrate(ctx)
	require.NoError(t, err)
	prefix, err := s.RolePrefix(ctx)
	require.NoError(t, err)
	require.Regexp(t, `^kr_[0-9a-f]{8}_$`, prefix)

	require.NoError(t, s.ValidateDefinition(ctx, definition(t, accountsYAML)))
	require.Equal(t, []string{prefix + "_versions"}, roles(t, s), "the validation's scratch role is gone")
	liveAndTailing(t, s)
	require.Equal(t, []string{prefix + "_versions", prefix + "accounts_v1", prefix + "accounts_v2"}, roles(t, s))
	v, err := s.Version(ctx, "accounts_v2")
	require.NoError(t, err)
	require.Equal(t, prefix+"accounts_v2", v.Role)
	var owner, secret string
	require.NoError(t, s.Pool().QueryRow(ctx, `SELECT pg_get_userbyid(n.nspowner), a.rolpassword FROM pg_namespace n, pg_authid a
		WHERE n.nspname = 'accounts_v2' AND a.rolname = $1`, v.Role).Scan(&owner, &secret))
	require.Equal(t, v.Role, owner)
	require.True(t, strings.HasPrefix(secret, "SCRAM-SHA-256$"), "PostgreSQL keeps a verifier, not the password")
	require.Equal(t, int64(0), scalar(t, s, "SELECT count(*) FROM pg_class WHERE relnamespace = 'accounts_v2'::regnamespace AND relowner <> $1::regrole", v.Role))

	_, err = s.RemoveVersion(ctx, "accounts_v2")
	require.NoError(t, err)
	require.NoError(t, s.DropVersion(ctx, "accounts_v2"))
	dropped, err := s.Dropped(ctx, "accounts_v2")
	require.NoError(t, err)
	require.True(t, dropped)
	require.Equal(t, []string{prefix + "_versions", prefix + "accounts_v1"}, roles(t, s))
	require.Equal(t, int64(0), scalar(t, s, "SELECT count(*) FROM kreplay.versions WHERE role_password IS NOT NULL AND state = 'removed'"))

	s.Close()
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	require.NoError(t, store.DropDatabase(ctx, storetest.ServerURL(), strings.TrimPrefix(u.Path, "/")))
	admin := storetest.Conn(t, storetest.ServerURL())
	var left int
	require.NoError(t, admin.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE starts_with(rolname, $1)", prefix).Scan(&left))
	require.Zero(t, left, "no role of the catalog outlives its database")
}

// reads: lookups outside the version's schema that its handlers may read and never write.
func TestReadsAreReadOnlyLookups(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := context.Background()
	_, err := s.Pool().Exec(ctx, `CREATE TABLE public.currencies (code text PRIMARY KEY, cents bigint NOT NULL);
		INSERT INTO public.currencies VALUES ('EUR', 100), ('JPY', 1)`)
	require.NoError(t, err)
	lookup := "INSERT INTO owners SELECT @aggregate_id, code FROM public.currencies WHERE cents = (@data->>'cents')::bigint ON CONFLICT (account_id) DO UPDATE SET name = EXCLUDED.name"
	yaml := replaceOnce(t, accountsYAML, "INSERT INTO owners VALUES (@aggregate_id, @data->>'name') ON CONFLICT (account_id) DO UPDATE SET name = EXCLUDED.name", lookup)
	require.EqualError(t, s.ValidateDefinition(ctx, definition(t, yaml)), `projection "accounts": handler "Named": uses public.currencies, outside the version's schema; name the version's own tables without a schema, or, to read it as a lookup, declare it under reads: [public.currencies]`)

	yaml = replaceOnce(t, yaml, "    handlers:\n", "    reads: [public.currencies]\n    handlers:\n")
	def := definition(t, yaml)
	require.Equal(t, []string{"public.currencies"}, def.Reads)
	require.NoError(t, s.ValidateDefinition(ctx, def))
	_, err = s.CreateVersion(ctx, store.NewVersion{Key: "accounts_v1", Definition: def, Live: true,
		Start: []store.PartitionStart{{Topic: "bank", Partition: 0, Target: 100}}})
	require.NoError(t, err)
	_, err = s.Claim(ctx, "accounts_v1", 1, "m", []store.TopicPartition{{Topic: "bank", Partition: 0}}, false)
	require.NoError(t, err)
	a, err := s.NewApplier(store.ApplierConfig{Key: "accounts_v1", Definition: def})
	require.NoError(t, err)
	defer a.Close(ctx)
	_, err = a.Apply(ctx, 1, []store.Item{item("Named", "x", `{"cents": 100}`, 0, 0), item("Named", "y", `{"cents": 1}`, 0, 1)})
	require.NoError(t, err)
	require.Equal(t, map[string]int64{"x": 100, "y": 1}, storetest.Int64Map(t, s.Pool(),
		"SELECT o.account_id, c.cents FROM public.owners o JOIN public.currencies c ON c.code = o.name"))

	// Read, never written: a handler that writes it is refused by PostgreSQL.
	write := replaceOnce(t, yaml, lookup, "UPDATE public.currencies SET cents = cents * 2 WHERE code <> @aggregate_id")
	wdef := definition(t, write)
	_, err = s.CreateVersion(ctx, store.NewVersion{Key: "accounts_v2", Definition: wdef,
		Start: []store.PartitionStart{{Topic: "bank", Partition: 0, Target: 100}}})
	require.NoError(t, err)
	_, err = s.Claim(ctx, "accounts_v2", 1, "m", []store.TopicPartition{{Topic: "bank", Partition: 0}}, false)
	require.NoError(t, err)
	b, err := s.NewApplier(store.ApplierConfig{Key: "accounts_v2", Definition: wdef})
	require.NoError(t, err)
	defer b.Close(ctx)
	_, err = b.Apply(ctx, 1, []store.Item{item("Named", "x", `{}`, 0, 0)})
	require.ErrorContains(t, err, `handler "Named": permission denied for table currencies [SQLSTATE 42501]`)
	require.Equal(t, map[string]int64{"EUR": 100, "JPY": 1}, storetest.Int64Map(t, s.Pool(), "SELECT code, cents FROM public.currencies"))

	// A lookup that is a version's table is refused: read the live view.
	other := replaceOnce(t, yaml, "reads: [public.currencies]", "reads: [accounts_v1.owners]")
	require.ErrorContains(t, s.ValidateDefinition(ctx, definition(t, other)), "reads: accounts_v1.owners is a table of version accounts_v1; read the projection's live view instead")
}

// verify runs the checks on each version's own role, read-only: a check cannot read kreplay's
// catalog (where the versions' passwords are), not even after leaving its role.
func TestChecksRunAsTheVersionsRoles(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := context.Background()
	liveAndTailing(t, s)
	cmp, err := s.Compare(ctx, "accounts_v1", "accounts_v2", []string{"SELECT count(*) FROM balances", "SELECT current_user"})
	require.NoError(t, err)
	require.False(t, cmp.Passed, "each check ran as its version's role")
	require.Regexp(t, `^\{"current_user": "kr_[0-9a-f]{8}_accounts_v1"\}$`, cmp.Results[1].A)
	require.Regexp(t, `^\{"current_user": "kr_[0-9a-f]{8}_accounts_v2"\}$`, cmp.Results[1].B)

	_, err = s.Compare(ctx, "accounts_v1", "accounts_v2", []string{"SELECT role_password FROM kreplay.versions"})
	require.ErrorContains(t, err, "permission denied for table versions")
	_, err = s.Compare(ctx, "accounts_v1", "accounts_v2", []string{"SELECT set_config('role', 'none', true), (SELECT count(*) FROM accounts_v2.balances)"})
	require.ErrorContains(t, err, "permission denied for schema accounts_v2")
	_, err = s.Compare(ctx, "accounts_v1", "accounts_v2", []string{"SELECT nextval('audit_n_seq')"})
	require.ErrorContains(t, err, "read-only transaction")
}

// A version created before roles existed keeps running (as kreplay's own role) until serve's
// start gives it a role (EnsureRoles): the role takes over its schema and everything in it, and
// its appliers log in as it from then on. EnsureRoles also drops what crashes left: the roles of
// interrupted validations and creates; and a create of a key an interrupted create left behind
// goes through, while a schema kreplay does not own is still refused.
func TestVersionsCreatedBeforeRolesGetOneAtStart(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := context.Background()
	prefix, err := s.RolePrefix(ctx)
	require.NoError(t, err)
	started(t, s, "accounts_v1", true)
	role := prefix + "accounts_v1"
	exec := func(sql string) {
		t.Helper()
		_, err := s.Pool().Exec(ctx, sql)
		require.NoError(t, err, sql)
	}
	// As before 003: everything owned by kreplay's role, no role of its own; with objects of every
	// kind a tables statement may have made.
	exec(`REASSIGN OWNED BY "` + role + `" TO CURRENT_USER`)
	exec(`DROP OWNED BY "` + role + `"`)
	exec(`DROP ROLE "` + role + `"`)
	exec("UPDATE kreplay.versions SET role = NULL, role_password = NULL WHERE key = 'accounts_v1'")
	exec(`SET search_path = accounts_v1;
		CREATE FUNCTION twice(n bigint) RETURNS bigint LANGUAGE sql IMMUTABLE AS 'SELECT 2 * n';
		CREATE VIEW rich AS SELECT account_id FROM balances WHERE total > 100;
		CREATE TYPE mood AS ENUM ('calm', 'wild');
		CREATE DOMAIN cents AS bigint CHECK (VALUE >= 0);
		CREATE SEQUENCE tickets;
		RESET search_path`)

	// apply applies one event and returns the user the applier logged in as.
	apply := func(offset int64) string {
		t.Helper()
		_, err := s.Claim(ctx, "accounts_v1", 1, "m", []store.TopicPartition{{Topic: "bank", Partition: 0}}, false)
		require.NoError(t, err)
		a, err := s.NewApplier(store.ApplierConfig{Key: "accounts_v1", Definition: definition(t, accountsYAML), Worker: "w"})
		require.NoError(t, err)
		defer a.Close(ctx)
		_, err = a.Apply(ctx, 1, []store.Item{item("Deposited", "x", `{"amount": 10}`, 0, offset)})
		require.NoError(t, err)
		var user string
		require.NoError(t, s.Pool().QueryRow(ctx, "SELECT usename FROM pg_stat_activity WHERE application_name = 'kreplay:accounts_v1:w'").Scan(&user))
		return user
	}
	var me string
	require.NoError(t, s.Pool().QueryRow(ctx, "SELECT current_user").Scan(&me))
	require.Equal(t, me, apply(0), "unconfined, as it always ran")
	require.Equal(t, int64(10), scalar(t, s, "SELECT total FROM public.balances WHERE account_id = 'x'"))

	// Leftovers of crashes: a validation's scratch role, an interrupted create's role and schema.
	exec(`CREATE ROLE "` + prefix + `_check_0123456789ab" LOGIN`)
	exec(`CREATE ROLE "` + prefix + `ghost" LOGIN`)
	exec(`CREATE SCHEMA ghost AUTHORIZATION "` + prefix + `ghost"`)
	exec(`CREATE ROLE "` + prefix + `accounts_v3" LOGIN`)
	exec(`CREATE SCHEMA accounts_v3 AUTHORIZATION "` + prefix + `accounts_v3"`)
	exec(`CREATE TABLE accounts_v3.half_made (a int)`)

	require.NoError(t, s.EnsureRoles(ctx))
	require.NoError(t, s.EnsureRoles(ctx), "again: nothing left to do")
	v, err := s.Version(ctx, "accounts_v1")
	require.NoError(t, err)
	require.Equal(t, role, v.Role)
	require.Equal(t, int64(0), scalar(t, s, `SELECT count(*) FROM (
			SELECT relowner AS o FROM pg_class WHERE relnamespace = 'accounts_v1'::regnamespace
			UNION ALL SELECT proowner FROM pg_proc WHERE pronamespace = 'accounts_v1'::regnamespace
			UNION ALL SELECT typowner FROM pg_type WHERE typnamespace = 'accounts_v1'::regnamespace
			UNION ALL SELECT nspowner FROM pg_namespace WHERE nspname = 'accounts_v1') AS x
		WHERE o <> $1::regrole`, role), "the role owns the schema and everything in it")
	require.Equal(t, []string{prefix + "_versions", prefix + "accounts_v1"}, roles(t, s), "leftover roles are gone")
	require.Equal(t, int64(0), scalar(t, s, "SELECT count(*) FROM pg_namespace WHERE nspname IN ('ghost', 'accounts_v3')"))

	require.Equal(t, role, apply(1), "confined now")
	require.Equal(t, int64(20), scalar(t, s, "SELECT total FROM public.balances WHERE account_id = 'x'"))

	// A create interrupted after its role and schema were made is redone; a schema kreplay does
	// not own is refused.
	exec(`CREATE ROLE "` + prefix + `accounts_v3" LOGIN`)
	exec(`CREATE SCHEMA accounts_v3 AUTHORIZATION "` + prefix + `accounts_v3"`)
	started(t, s, "accounts_v3", false)
	require.Equal(t, int64(0), scalar(t, s, "SELECT count(*) FROM pg_class WHERE relname = 'half_made'"))
	exec("CREATE SCHEMA accounts_v4")
	_, err = s.CreateVersion(ctx, store.NewVersion{Key: "accounts_v4", Definition: definition(t, accountsYAML)})
	require.ErrorIs(t, err, store.ErrExists)
	require.ErrorContains(t, err, "a schema of that name already exists in the database and kreplay does not own it")
	require.Equal(t, []string{prefix + "_versions", prefix + "accounts_v1", prefix + "accounts_v3"}, roles(t, s), "a refused create leaves no role")
}

// kreplay's database user needs CREATEROLE and its database, not SUPERUSER: with such a user,
// the whole lifecycle works (migrate, validate, create, apply, verify, promote, remove), and its
// versions are confined just the same.
func TestKreplaysUserNeedsOnlyCreateRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var b [4]byte
	_, _ = rand.Read(b[:])
	user := "kreplay_test_user_" + hex.EncodeToString(b[:])
	admin := storetest.Conn(t, storetest.ServerURL())
	_, err := admin.Exec(ctx, "CREATE ROLE "+user+" LOGIN CREATEROLE")
	require.NoError(t, err)
	t.Cleanup(func() { // registered before the database's, so it runs after it was dropped
		c, err := pgx.Connect(context.Background(), storetest.ServerURL())
		require.NoError(t, err)
		defer c.Close(context.Background())
		_, err = c.Exec(context.Background(), "DROP ROLE "+user)
		require.NoError(t, err)
	})
	dbURL := storetest.NewDatabase(t)
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	_, err = admin.Exec(ctx, "ALTER DATABASE "+strings.TrimPrefix(u.Path, "/")+" OWNER TO "+user)
	require.NoError(t, err)
	u.User = url.User(user)
	s, err := store.Open(ctx, store.Config{URL: u.String(), LockTimeout: 100 * time.Millisecond}, nil)
	require.NoError(t, err)
	defer s.Close()
	_, err = s.Migrate(ctx)
	require.NoError(t, err)
	var super bool
	require.NoError(t, s.Pool().QueryRow(ctx, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&super))
	require.False(t, super)

	def := definition(t, accountsYAML)
	require.NoError(t, s.ValidateDefinition(ctx, def))
	liveAndTailing(t, s)
	tps := []store.TopicPartition{{Topic: "bank", Partition: 0}, {Topic: "bank", Partition: 1}}
	for _, key := range []string{"accounts_v1", "accounts_v2"} {
		_, err := s.Claim(ctx, key, 1, "m", tps, false)
		require.NoError(t, err)
		a, err := s.NewApplier(store.ApplierConfig{Key: key, Definition: def})
		require.NoError(t, err)
		_, err = a.Apply(ctx, 1, []store.Item{item("Deposited", "x", `{"amount": 10}`, 0, 0), item("Named", "x", `{"name": "Ada"}`, 1, 0)})
		require.NoError(t, err)
		a.Close(ctx)
	}
	cmp, err := s.Compare(ctx, "accounts_v1", "accounts_v2", def.Checks)
	require.NoError(t, err)
	require.True(t, cmp.Passed, "%+v", cmp.Results)
	_, err = s.Swap(ctx, "accounts_v2", store.SwapPromote, []store.State{store.StateTailing}, store.SwapOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(10), scalar(t, s, "SELECT total FROM public.balances WHERE account_id = 'x'"))

	// Confined as well: a handler of accounts_v3 cannot write the live view.
	hostile := definition(t, replaceOnce(t, accountsYAML, "INSERT INTO owners VALUES (@aggregate_id, @data->>'name') ON CONFLICT (account_id) DO UPDATE SET name = EXCLUDED.name",
		"DO $$ BEGIN RESET ROLE; EXECUTE 'UPDATE public.balances SET total = 0'; END $$"))
	_, err = s.CreateVersion(ctx, store.NewVersion{Key: "accounts_v3", Definition: hostile,
		Start: []store.PartitionStart{{Topic: "bank", Partition: 1, Target: 100}}})
	require.NoError(t, err)
	_, err = s.Claim(ctx, "accounts_v3", 1, "m", tps[1:], false)
	require.NoError(t, err)
	a, err := s.NewApplier(store.ApplierConfig{Key: "accounts_v3", Definition: hostile})
	require.NoError(t, err)
	_, err = a.Apply(ctx, 1, []store.Item{item("Named", "x", `{}`, 1, 0)})
	a.Close(ctx)
	require.ErrorContains(t, err, "permission denied for view balances [SQLSTATE 42501]")
	require.Equal(t, int64(10), scalar(t, s, "SELECT total FROM public.balances WHERE account_id = 'x'"))

	_, err = s.RemoveVersion(ctx, "accounts_v1")
	require.NoError(t, err)
	require.NoError(t, s.DropVersion(ctx, "accounts_v1"))
	prefix, err := s.RolePrefix(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{prefix + "_versions", prefix + "accounts_v2", prefix + "accounts_v3"}, roles(t, s))

	// Every role of the catalog, and what they own, for a database about to go.
	require.NoError(t, s.DropRoles(ctx))
	require.Empty(t, roles(t, s))
	require.Equal(t, int64(0), scalar(t, s, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'accounts_v%'"))
}
