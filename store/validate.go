package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kreplay/kreplay/topology"
)

// sampleArgs are values of the Go types an Applier passes for each named argument, used to
// check that PostgreSQL's inferred parameter types can be filled from them.
var sampleArgs = map[topology.Arg]any{
	topology.ArgEventID:     "e-1",
	topology.ArgType:        "Sample",
	topology.ArgAggregateID: "a-1",
	topology.ArgVersion:     int64(1),
	topology.ArgCreatedAt:   time.Unix(0, 0).UTC(),
	topology.ArgData:        []byte(`{}`),
	topology.ArgTopic:       "t",
	topology.ArgPartition:   int32(0),
	topology.ArgOffset:      int64(0),
}

// ValidateDefinition checks a definition against PostgreSQL before anything runs, with the
// rights a version of it would have: a scratch role (see role.go) creates its tables in a scratch
// schema, every handler, fold and check is prepared there, and the transaction is rolled back;
// then the role is dropped. A handler naming a missing table or column, or using an argument
// where PostgreSQL infers a type kreplay cannot fill, is refused with the projection, the event
// type and PostgreSQL's message; one that names a relation or calls a function outside the
// version's schema (other than the lookups under reads: and PostgreSQL's own) is refused naming
// it (see outside). All problems are returned, joined. A failure of the connection or the
// server (IsTransient) is returned as is, not as a refusal: the caller may retry.
func (s *Store) ValidateDefinition(ctx context.Context, def topology.Definition) error {
	handlers, err := def.ParseHandlers()
	if err != nil {
		return err
	}
	id, err := s.catalogID(ctx)
	switch {
	case errors.Is(err, errNotMigrated):
		// kreplay validate against a database without a catalog: a scratch role of its own name.
		var b [4]byte
		_, _ = rand.Read(b[:])
		id = hex.EncodeToString(b[:])
	case err != nil:
		return fmt.Errorf("validate projection %q: %w", def.Projection, err)
	}
	var suffix [6]byte
	_, _ = rand.Read(suffix[:])
	scratch := "kreplay_check_" + hex.EncodeToString(suffix[:])
	role := scratchPrefix(id) + hex.EncodeToString(suffix[:])

	// While the scratch role exists, hold the lock that keeps serve's start from sweeping it.
	lock, err := s.lockConn(ctx)
	if err != nil {
		return fmt.Errorf("validate projection %q: %w", def.Projection, err)
	}
	defer lock.Close(context.WithoutCancel(ctx)) // after the role is dropped (defers run last first)
	if _, err := lock.Exec(ctx, "SELECT pg_advisory_lock_shared($1)", int64(scratchLockKey)); err != nil {
		return fmt.Errorf("validate projection %q: %w", def.Projection, err)
	}
	password, err := s.createRole(ctx, role, scratch, def.Reads)
	if err != nil {
		return fmt.Errorf("validate projection %q: %w", def.Projection, err)
	}
	defer func() {
		if err := s.dropRoleNow(ctx, role); err != nil {
			s.logger.Warn("could not drop a validation's scratch role; serve's next start drops it", "role", role, "err", err)
		}
	}()
	conn, err := pgx.ConnectConfig(ctx, s.loginConfig(role, password, scratch, "kreplay:validate"))
	if err != nil {
		return fmt.Errorf("validate projection %q: connect as a scratch role: %w", def.Projection, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("validate projection %q: %w", def.Projection, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // nothing of a validation is ever committed

	if err := runDDL(ctx, tx, scratch, def); err != nil {
		return withConfinementHint(err)
	}
	if _, err := tx.Exec(ctx, "SELECT set_config('search_path', $1, true)", ident(scratch)); err != nil {
		return err
	}
	types := make([]string, 0, len(handlers))
	for t := range handlers {
		types = append(types, t)
	}
	sort.Strings(types)
	var errs []error
	pg := conn.PgConn()
	tm := conn.TypeMap()
	uses := &usesChecker{tx: tx, schema: scratch, reads: def.Reads, atomic: serverMajor(pg) >= 14}
	// Each statement is prepared under a savepoint: a statement PostgreSQL refuses aborts the
	// transaction, and every statement after it would be reported as failing too.
	prepare := func(what, sql string) (sd *pgconn.StatementDescription, refused, err error) {
		if _, err := tx.Exec(ctx, "SAVEPOINT kreplay_check"); err != nil {
			return nil, nil, err
		}
		sd, refused = pg.Prepare(ctx, "", sql, nil)
		if refused != nil && IsTransient(refused) {
			return nil, nil, refused // the connection, not the config: the caller retries
		}
		if refused != nil {
			if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT kreplay_check"); err != nil {
				return nil, refused, fmt.Errorf("validate projection %q: %w", def.Projection, err)
			}
			return nil, fmt.Errorf("projection %q: %s: %s%s", def.Projection, what, pgMessage(refused), confinementHint(refused)), nil
		}
		out, err := uses.outside(ctx, sql, sd.ParamOIDs)
		if err != nil {
			return nil, nil, fmt.Errorf("validate projection %q: %w", def.Projection, err)
		}
		if len(out) > 0 {
			return sd, fmt.Errorf("projection %q: %s: %s", def.Projection, what, strings.Join(out, "; ")), nil
		}
		return sd, nil, nil
	}
	for _, t := range types {
		h := handlers[t]
		sd, refused, err := prepare(fmt.Sprintf("handler %q", t), h.Positional)
		if err != nil {
			return err
		}
		if refused != nil {
			errs = append(errs, refused)
			continue
		}
		for i, oid := range sd.ParamOIDs {
			if i >= len(h.Args) {
				break
			}
			arg := h.Args[i]
			if !encodable(tm, oid, sampleArgs[arg]) {
				typ := fmt.Sprintf("type %d", oid)
				if dt, ok := tm.TypeForOID(oid); ok {
					typ = dt.Name
				}
				errs = append(errs, fmt.Errorf("projection %q: handler %q: PostgreSQL reads @%s as %s here, which kreplay cannot fill from a %T; add a cast, e.g. @%s::%s",
					def.Projection, t, arg.Name(), typ, sampleArgs[arg], arg.Name(), naturalType(arg)))
			}
		}
	}
	folds, err := compileFolds(def)
	if err != nil {
		errs = append(errs, err)
	}
	for _, f := range folds {
		_, refused, err := prepare(fmt.Sprintf("fold %q", f.table), f.sql)
		if err != nil {
			return err
		}
		if refused != nil {
			errs = append(errs, refused)
		}
	}
	for i, q := range def.Checks {
		_, refused, err := prepare(fmt.Sprintf("checks[%d]", i), q)
		if err != nil {
			return err
		}
		if refused != nil {
			errs = append(errs, refused)
		}
	}
	return errors.Join(errs...)
}

// serverMajor is the server's major version (15 for "15.20 (Debian ...)"), 0 if unknown.
func serverMajor(pg *pgconn.PgConn) int {
	v := pg.ParameterStatus("server_version")
	end := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(v)
	}
	n, _ := strconv.Atoi(v[:end])
	return n
}

// confinementHint is what to add to PostgreSQL's refusal of a statement for lack of a privilege:
// a version may use only its own schema and its reads.
func confinementHint(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42501" {
		return "; a version's statements may use only its own tables (named without a schema) and the read-only lookups declared under reads:"
	}
	return ""
}

// withConfinementHint adds confinementHint to a tables statement's error.
func withConfinementHint(err error) error {
	if h := confinementHint(err); h != "" {
		return fmt.Errorf("%w%s", err, h)
	}
	return err
}

// usesChecker finds what a statement uses outside the version's schema, from PostgreSQL's own
// record of it, not by reading the SQL.
type usesChecker struct {
	tx     pgx.Tx
	schema string   // the scratch schema
	reads  []string // schema.table names a version may read
	atomic bool     // the server compiles BEGIN ATOMIC function bodies (PostgreSQL 14 and later)
	n      int
}

// outside compiles sql (with parameters of types params) as the body of a SQL function with a
// BEGIN ATOMIC body in the scratch schema, for which PostgreSQL records in pg_depend every
// relation and function the statement names, and returns, as messages, the relations outside the
// schema that are not under reads: and the functions outside it that are neither PostgreSQL's own
// (pg_catalog) nor an extension's. The function is rolled back. A statement that cannot be such a
// body (a utility statement such as DO, an argument of an unknown type), and PostgreSQL before
// 14, are not checked here: the version's role stops what they do at apply time.
func (u *usesChecker) outside(ctx context.Context, sql string, params []uint32) ([]string, error) {
	if !u.atomic {
		return nil, nil
	}
	u.n++
	fn := fmt.Sprintf("kreplay_uses_%d", u.n)
	var types []string
	if err := u.tx.QueryRow(ctx, "SELECT coalesce(array_agg(format_type(t, NULL) ORDER BY i), '{}') FROM unnest($1::oid[]) WITH ORDINALITY AS p (t, i)", params).Scan(&types); err != nil {
		return nil, err
	}
	if _, err := u.tx.Exec(ctx, "SAVEPOINT kreplay_uses"); err != nil {
		return nil, err
	}
	defer u.tx.Exec(ctx, "ROLLBACK TO SAVEPOINT kreplay_uses") //nolint:errcheck // the transaction is rolled back anyway
	if _, err := u.tx.Exec(ctx, "CREATE FUNCTION "+ident(u.schema, fn)+"("+strings.Join(types, ", ")+") RETURNS void LANGUAGE sql BEGIN ATOMIC\n"+checkBody(sql)+";\nEND"); err != nil {
		return nil, nil //nolint:nilerr // not a possible body: see above
	}
	rows, err := u.tx.Query(ctx, `WITH f AS (SELECT p.oid FROM pg_proc p WHERE p.pronamespace = $1::regnamespace AND p.proname = $2)
		SELECT DISTINCT 'relation', n.nspname::text, c.relname::text, format('%I.%I', n.nspname, c.relname)
		FROM pg_depend d JOIN pg_class c ON c.oid = d.refobjid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE d.classid = 'pg_proc'::regclass AND d.objid = (SELECT oid FROM f) AND d.refclassid = 'pg_class'::regclass
		  AND n.nspname NOT IN ($3, 'information_schema')
		UNION
		SELECT DISTINCT 'function', n.nspname::text, p.proname::text, p.oid::regprocedure::text
		FROM pg_depend d JOIN pg_proc p ON p.oid = d.refobjid JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE d.classid = 'pg_proc'::regclass AND d.objid = (SELECT oid FROM f) AND d.refclassid = 'pg_proc'::regclass
		  AND n.nspname NOT IN ($3, 'pg_catalog')
		  AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid AND e.deptype = 'e')
		ORDER BY 1, 4`, ident(u.schema), fn, u.schema)
	if err != nil {
		return nil, err
	}
	var out []string
	var kind, schema, name, qualified string
	_, err = pgx.ForEachRow(rows, []any{&kind, &schema, &name, &qualified}, func() error {
		switch {
		case schema == "kreplay" && kind == "function":
			out = append(out, fmt.Sprintf("calls %s, which only kreplay itself may call", qualified))
		case schema == "kreplay":
			out = append(out, fmt.Sprintf("uses %s, kreplay's catalog, which a version may not use", qualified))
		case kind == "function":
			out = append(out, fmt.Sprintf("calls %s, outside the version's schema; create the function in the projection's tables statements", qualified))
		case !slices.Contains(u.reads, schema+"."+name):
			out = append(out, fmt.Sprintf("uses %s, outside the version's schema; name the version's own tables without a schema, or, to read it as a lookup, declare it under reads: [%s.%s]", qualified, schema, name))
		}
		return nil
	})
	return out, err
}

func encodable(tm *pgtype.Map, oid uint32, v any) bool {
	if _, ok := tm.TypeForOID(oid); !ok {
		return true // unknown to pgx (e.g. an enum or domain): sent as text, PostgreSQL decides
	}
	// A plan, not a value: an aggregate id "42" fits a bigint column, "a-1" fails per event.
	return tm.PlanEncode(oid, pgtype.BinaryFormatCode, v) != nil || tm.PlanEncode(oid, pgtype.TextFormatCode, v) != nil
}

func naturalType(a topology.Arg) string {
	switch a {
	case topology.ArgVersion, topology.ArgOffset:
		return "bigint"
	case topology.ArgPartition:
		return "int"
	case topology.ArgCreatedAt:
		return "timestamptz"
	case topology.ArgData:
		return "jsonb"
	}
	return "text"
}
