package store

// Confinement: every version has a PostgreSQL role of its own, and everything that runs a
// definition's SQL (its tables statements, handlers, folds and checks) runs on connections that
// log in as that role.
//
// Why a login and not SET ROLE: on a connection of kreplay's own role, SET ROLE is no boundary.
// A handler (or a function it calls, or a DO block) runs RESET ROLE, or
// SELECT set_config('role', 'none', false), and goes on as kreplay's role, which may write
// everything: the live views, other versions' tables, the catalog. Checked on PostgreSQL 15:
//
//	SET ROLE v1;  SELECT current_user;                        -- v1
//	RESET ROLE;   SELECT current_user;                        -- kreplay's role again
//	SET ROLE v1;  SELECT set_config('role', 'none', false);   -- likewise, from SQL a handler runs
//
// On a connection that logged in as the version's role, both return to that same role: the
// session user is fixed at login, and a role without SUPERUSER cannot SET SESSION AUTHORIZATION
// or SET ROLE to a role it is not a member of. Running the DDL inside a SECURITY DEFINER function
// owned by the version's role (where SET ROLE is refused) was ruled out too: the rest of the
// transaction and the session would still be kreplay's, and a deferred constraint trigger, a
// temporary table shadowing pg_class or a session-level search_path left behind by the DDL would
// run or resolve as kreplay's role after the function returned.
//
// The roles:
//
//	kr_<id>_<key>         a version's role (LOGIN, random password kept in kreplay.versions): owns
//	                      the version's schema; member of the group below. kreplay's role is a
//	                      member of it (to read, verify, swap views and drop).
//	kr_<id>__versions     the group of the versions' roles: USAGE on schema kreplay and EXECUTE on
//	                      kreplay.advance (SECURITY DEFINER; it lets a session advance only the
//	                      version whose role it logged in as).
//	kr_<id>__check_<hex>  a scratch role of ValidateDefinition, dropped when it returns.
//
// <id> is the first 8 hex digits of the catalog's random id (kreplay.catalog, a view of
// kreplay.installation), so that two databases or installations on one server never collide:
// roles are cluster-wide.

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/kreplay/kreplay/internal/retry"
)

// scratchLockKey is the advisory lock that validations hold shared while their scratch role
// exists; sweeping leftover scratch roles takes it exclusively.
const scratchLockKey = 0x6b72636865636b // "krcheck"

// catalogID is this catalog's random id (8 hex digits), which names its roles.
func (s *Store) catalogID(ctx context.Context) (string, error) {
	s.idMu.Lock()
	defer s.idMu.Unlock()
	if s.id != "" {
		return s.id, nil
	}
	if err := s.pool.QueryRow(ctx, "SELECT id FROM kreplay.catalog").Scan(&s.id); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
			return "", fmt.Errorf("the catalog is not migrated (run kreplay migrate): %w", errNotMigrated)
		}
		return "", fmt.Errorf("catalog id: %w", err)
	}
	return s.id, nil
}

// errNotMigrated: the database has no kreplay catalog (yet).
var errNotMigrated = errors.New("no kreplay catalog in this database")

// RolePrefix is the prefix of every role of this catalog (kr_<id>_).
func (s *Store) RolePrefix(ctx context.Context) (string, error) {
	id, err := s.catalogID(ctx)
	if err != nil {
		return "", err
	}
	return "kr_" + id + "_", nil
}

func versionRole(id, key string) string { return "kr_" + id + "_" + key }
func groupRole(id string) string        { return "kr_" + id + "__versions" }
func scratchPrefix(id string) string    { return "kr_" + id + "__check_" }

// newPassword returns a random password and its SCRAM-SHA-256 verifier, which is what
// PostgreSQL stores: the password itself never travels to the server in a statement (nor into
// its log with log_statement = ddl).
func newPassword() (password, verifier string) {
	var b, salt [16]byte
	_, _ = rand.Read(b[:])
	_, _ = rand.Read(salt[:])
	password = hex.EncodeToString(b[:])
	return password, scramVerifier(password, salt[:], 4096)
}

// scramVerifier is PostgreSQL's SCRAM-SHA-256 verifier of a password (RFC 5802, RFC 7677):
// SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>. The password must be ASCII
// (PostgreSQL applies SASLprep, which leaves ASCII as it is).
func scramVerifier(password string, salt []byte, iterations int) string {
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		panic(fmt.Sprintf("store: pbkdf2: %v", err)) // only for parameters FIPS mode refuses
	}
	mac := func(msg string) []byte {
		h := hmac.New(sha256.New, salted)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	stored := sha256.Sum256(mac("Client Key"))
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, b64(salt), b64(stored[:]), b64(mac("Server Key")))
}

// loginConfig is the connection config of kreplay's URL with another user: role, logging in
// with its password, search_path set to schema.
func (s *Store) loginConfig(role, password, schema, app string) *pgx.ConnConfig {
	cfg := s.connConfig()
	cfg.User = role
	cfg.Password = password
	cfg.RuntimeParams["search_path"] = ident(schema)
	cfg.RuntimeParams["application_name"] = app
	return cfg
}

// versionLogin is the connection config of a version's own role, search_path set to its schema.
// A version created before roles existed (see EnsureRoles) that has none yet runs on kreplay's
// own role, as it always did.
func (s *Store) versionLogin(ctx context.Context, key, app string) (*pgx.ConnConfig, error) {
	var role, password *string
	err := s.pool.QueryRow(ctx, "SELECT role, role_password FROM kreplay.versions WHERE key = $1", key).Scan(&role, &password)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, refuse(ErrNotFound, "no version %q", key)
	}
	if err != nil {
		return nil, err
	}
	if role == nil || password == nil {
		cfg := s.connConfig()
		cfg.RuntimeParams["search_path"] = ident(key)
		cfg.RuntimeParams["application_name"] = app
		return cfg, nil
	}
	return s.loginConfig(*role, *password, key, app), nil
}

// createRole creates a login role with a new password, owning a new schema: a version's role
// (in the versions' group) or a validation's scratch role (in it too, so that it sees what a
// version sees), with SELECT on the definition's read-only lookups. It commits, so that the role
// can log in, and returns the password.
func (s *Store) createRole(ctx context.Context, role, schema string, reads []string) (string, error) {
	id, err := s.catalogID(ctx)
	inCatalog := err == nil
	if err != nil && !errors.Is(err, errNotMigrated) {
		return "", err
	}
	password, verifier := newPassword()
	err = s.conflictRetry(ctx, func() error {
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			statements := []string{
				"CREATE ROLE " + ident(role) + " LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT NOREPLICATION NOBYPASSRLS PASSWORD " + quoteLiteral(verifier),
				// kreplay's role reads, verifies, repoints views and drops through membership.
				"GRANT " + ident(role) + " TO CURRENT_USER",
			}
			if inCatalog { // a validation without a catalog (kreplay validate) needs no checkpoints
				statements = append(statements, "GRANT "+ident(groupRole(id))+" TO "+ident(role))
			}
			for _, st := range append(statements, "CREATE SCHEMA "+ident(schema)+" AUTHORIZATION "+ident(role)) {
				if _, err := tx.Exec(ctx, st); err != nil {
					return roleError(st, err)
				}
			}
			// A database whose CONNECT was revoked from PUBLIC: the role needs its own.
			var db string
			var connect bool
			if err := tx.QueryRow(ctx, "SELECT current_database(), has_database_privilege($1, current_database(), 'CONNECT')", role).Scan(&db, &connect); err != nil {
				return err
			}
			if !connect {
				if _, err := tx.Exec(ctx, "GRANT CONNECT ON DATABASE "+ident(db)+" TO "+ident(role)); err != nil {
					return roleError("grant connect on database "+db, err)
				}
			}
			return grantReads(ctx, tx, role, reads)
		})
	})
	if err != nil {
		return "", err
	}
	return password, nil
}

// roleError explains a refused role statement: kreplay's database user lacks a privilege.
func roleError(what string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42501" {
		if i := strings.Index(what, " PASSWORD "); i >= 0 {
			what = what[:i] // the verifier is no business of a log
		}
		return fmt.Errorf("%s: %s; kreplay's database user needs CREATEROLE and CREATE on the database (see the README, \"PostgreSQL privileges\"): %w",
			strings.ToLower(what), pgErr.Message, err)
	}
	return err
}

// grantReads gives role USAGE on the schema and SELECT on each of reads (schema.table names
// that topology validated). kreplay's database user must be able to grant them.
func grantReads(ctx context.Context, tx pgx.Tx, role string, reads []string) error {
	for _, r := range reads {
		schema, table, _ := strings.Cut(r, ".")
		var version string
		err := tx.QueryRow(ctx, "SELECT key FROM kreplay.versions WHERE key = $1", schema).Scan(&version)
		if err == nil {
			return fmt.Errorf("reads: %s is a table of version %s; read the projection's live view instead", r, version)
		} else if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = $2)`, schema, table).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			return fmt.Errorf("reads: %s does not exist; create it, or remove it from the projection's reads", r)
		}
		// GRANT without the grant option warns and grants nothing: check the outcome.
		for _, g := range []struct{ grant, check, what, on string }{
			{"GRANT USAGE ON SCHEMA " + ident(schema) + " TO " + ident(role), "SELECT has_schema_privilege($1, $2, 'USAGE')", "USAGE on schema " + schema, schema},
			{"GRANT SELECT ON " + ident(schema, table) + " TO " + ident(role), "SELECT has_table_privilege($1, $2, 'SELECT')", "SELECT on " + r, ident(schema, table)},
		} {
			var has bool
			if err := tx.QueryRow(ctx, g.check, role, g.on).Scan(&has); err != nil {
				return err
			}
			if has {
				continue
			}
			if _, err := tx.Exec(ctx, g.grant); err != nil {
				return fmt.Errorf("reads: grant %s: %s; kreplay's database user must own it or hold it WITH GRANT OPTION", g.what, pgMessage(err))
			}
			if err := tx.QueryRow(ctx, g.check, role, g.on).Scan(&has); err != nil {
				return err
			}
			if !has {
				return fmt.Errorf("reads: kreplay's database user cannot grant %s; it must own it or hold it WITH GRANT OPTION", g.what)
			}
		}
	}
	return nil
}

// dropRole drops a role of this catalog and everything it owns in this database (its schema, and
// anything its DDL created), and revokes what was granted to it.
func dropRole(ctx context.Context, tx pgx.Tx, role string) error {
	var exists bool
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", role).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		return nil
	}
	if _, err := tx.Exec(ctx, "DROP OWNED BY "+ident(role)+" CASCADE"); err != nil {
		return fmt.Errorf("drop what role %s owns: %w", role, err)
	}
	if _, err := tx.Exec(ctx, "DROP ROLE "+ident(role)); err != nil {
		return fmt.Errorf("drop role %s: %w", role, err)
	}
	return nil
}

// dropRoleNow drops a role in a transaction of its own, waiting at most 2s for each lock attempt
// and retrying for a minute; it is for cleaning up, so it runs even when ctx was canceled.
func (s *Store) dropRoleNow(ctx context.Context, role string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	return transient(ctx, func(ctx context.Context) error {
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '2s'"); err != nil {
				return err
			}
			return dropRole(ctx, tx, role)
		})
	})
}

// conflictRetry runs fn again, a few times, while PostgreSQL refuses it for a concurrent
// transaction (see isConflict).
func (s *Store) conflictRetry(ctx context.Context, fn func() error) error {
	err := retry.Policy{Min: 20 * time.Millisecond, Max: time.Second, Attempts: createAttempts, Retryable: isConflict}.Do(ctx, func(context.Context) error {
		return fn()
	})
	if errors.Is(err, retry.ErrExhausted) {
		return errors.Unwrap(errors.Unwrap(err)) // the last conflict, as the caller knows it
	}
	return err
}

// lockConn is a connection of kreplay's role of its own (not the pool's: what runs under the
// lock uses the pool, which may have a single connection) for session advisory locks, which end
// with it.
func (s *Store) lockConn(ctx context.Context) (*pgx.Conn, error) {
	cfg := s.connConfig()
	cfg.RuntimeParams["application_name"] = s.cfg.ApplicationName + ":lock"
	return pgx.ConnectConfig(ctx, cfg)
}

// keyLock is the advisory lock of a version's key (hashtextextended of this text).
const keyLock = "kreplay version "

// withKeyLock runs fn holding a session advisory lock for key: creating a version, giving it a
// role and sweeping the leftovers of one are serialised between instances.
func (s *Store) withKeyLock(ctx context.Context, key string, fn func() error) error {
	conn, err := s.lockConn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx)) // and with the session, the lock
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(hashtextextended($1, 0))", keyLock+key); err != nil {
		return err
	}
	return fn()
}

// tryKeyLock is withKeyLock that does not wait: fn does not run (and ok is false) when another
// session holds the lock.
func (s *Store) tryKeyLock(ctx context.Context, key string, fn func() error) (ok bool, err error) {
	conn, err := s.lockConn(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", keyLock+key).Scan(&ok); err != nil || !ok {
		return false, err
	}
	return true, fn()
}

// leftover removes what an interrupted CreateVersion of key left (its role and the schema the
// role owns), if it left anything: a schema named key that another role owns is not kreplay's,
// and is refused. The caller holds the key's lock and checked that no version has the key.
func (s *Store) leftover(ctx context.Context, key string) error {
	id, err := s.catalogID(ctx)
	if err != nil {
		return err
	}
	role := versionRole(id, key)
	var owner *string
	err = s.pool.QueryRow(ctx, "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = $1", key).Scan(&owner)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	if owner != nil && *owner != role {
		return refuse(ErrExists, "replay key %q: a schema of that name already exists in the database and kreplay does not own it; choose another key", key)
	}
	var exists bool
	if err := s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", role).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		return nil
	}
	s.logger.Info("dropping what an interrupted create left", "version", key, "role", role)
	return s.dropRoleNow(ctx, role)
}

// EnsureRoles runs at serve start, after Migrate: it gives the versions created before roles
// existed a role each (see adopt), and drops the roles that interrupted validations and creates
// left behind.
func (s *Store) EnsureRoles(ctx context.Context) error {
	id, err := s.catalogID(ctx)
	if err != nil {
		return err
	}
	if err := s.sweepScratch(ctx, id); err != nil {
		return err
	}
	rows, err := s.pool.Query(ctx, `SELECT substr(r.rolname, length($1) + 1) FROM pg_roles r
		WHERE starts_with(r.rolname, $1) AND r.rolname <> $2 AND NOT starts_with(r.rolname, $3)
		  AND NOT EXISTS (SELECT 1 FROM kreplay.versions v WHERE v.role = r.rolname)`, "kr_"+id+"_", groupRole(id), scratchPrefix(id))
	if err != nil {
		return err
	}
	orphans, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, key := range orphans {
		if _, err := s.tryKeyLock(ctx, key, func() error {
			var n int
			if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM kreplay.versions WHERE key = $1", key).Scan(&n); err != nil || n > 0 {
				return err
			}
			return s.leftover(ctx, key)
		}); err != nil {
			s.logger.Warn("could not drop what an interrupted create left", "version", key, "err", err)
		}
	}
	rows, err = s.pool.Query(ctx, "SELECT key FROM kreplay.versions WHERE role IS NULL AND state <> 'removed' ORDER BY key")
	if err != nil {
		return err
	}
	legacy, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, key := range legacy {
		if err := s.withKeyLock(ctx, key, func() error { return s.adopt(ctx, id, key) }); err != nil {
			if ctx.Err() != nil || IsTransient(err) {
				return err
			}
			s.logger.Warn("a version created before roles could not be given one: it keeps running unconfined, as kreplay's own role; replace it with a new replay",
				"version", key, "err", err)
		}
	}
	return nil
}

// sweepScratch drops the scratch roles of validations that did not finish (a crash), when no
// validation is running.
func (s *Store) sweepScratch(ctx context.Context, id string) error {
	conn, err := s.lockConn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", int64(scratchLockKey)).Scan(&ok); err != nil || !ok {
		return err
	}
	rows, err := conn.Query(ctx, "SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)", scratchPrefix(id))
	if err != nil {
		return err
	}
	roles, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, r := range roles {
		if err := s.dropRoleNow(ctx, r); err != nil {
			s.logger.Warn("could not drop the scratch role of an interrupted validation", "role", r, "err", err)
		}
	}
	return nil
}

// adopt gives a version created before roles existed its role: the role takes over the
// version's schema and everything in it, in one transaction. If something in the schema cannot
// change owner, nothing changes and the version keeps running as kreplay's own role.
func (s *Store) adopt(ctx context.Context, id, key string) error {
	var role *string
	if err := s.pool.QueryRow(ctx, "SELECT role FROM kreplay.versions WHERE key = $1", key).Scan(&role); err != nil || role != nil {
		return err // gone, or another instance was first
	}
	name := versionRole(id, key)
	password, verifier := newPassword()
	err := s.conflictRetry(ctx, func() error {
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			for _, st := range []string{
				"CREATE ROLE " + ident(name) + " LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT NOREPLICATION NOBYPASSRLS PASSWORD " + quoteLiteral(verifier),
				"GRANT " + ident(name) + " TO CURRENT_USER",
				"GRANT " + ident(groupRole(id)) + " TO " + ident(name),
				"ALTER SCHEMA " + ident(key) + " OWNER TO " + ident(name),
			} {
				if _, err := tx.Exec(ctx, st); err != nil {
					return roleError(st, err)
				}
			}
			// Every object that depends on the schema and has an owner of its own; sequences of
			// identity and serial columns follow their tables (and refuse to change alone).
			rows, err := tx.Query(ctx, `SELECT upper(o.type), o.identity
				FROM pg_depend d, pg_identify_object(d.classid, d.objid, 0) AS o
				WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid = $1::regnamespace AND d.deptype = 'n'
				  AND o.type IN ('table', 'view', 'materialized view', 'foreign table', 'sequence', 'function', 'procedure',
				                 'aggregate', 'type', 'collation', 'conversion', 'operator', 'operator class', 'operator family',
				                 'text search dictionary', 'text search configuration', 'statistics object')
				  AND NOT (o.type = 'sequence' AND EXISTS (SELECT 1 FROM pg_depend l WHERE l.classid = 'pg_class'::regclass
				           AND l.objid = d.objid AND l.refclassid = 'pg_class'::regclass AND l.deptype IN ('a', 'i')))
				ORDER BY 1, 2`, ident(key))
			if err != nil {
				return err
			}
			type object struct{ kind, identity string }
			objects, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (object, error) {
				var o object
				err := r.Scan(&o.kind, &o.identity)
				return o, err
			})
			if err != nil {
				return err
			}
			for _, o := range objects {
				if _, err := tx.Exec(ctx, "ALTER "+o.kind+" "+o.identity+" OWNER TO "+ident(name)); err != nil {
					return fmt.Errorf("%s %s: %w", strings.ToLower(o.kind), o.identity, err)
				}
			}
			var left []string
			rows, err = tx.Query(ctx, `SELECT relname::text FROM pg_class WHERE relnamespace = $1::regnamespace AND relowner <> $2::regrole
				UNION ALL SELECT proname::text FROM pg_proc WHERE pronamespace = $1::regnamespace AND proowner <> $2::regrole
				UNION ALL SELECT typname::text FROM pg_type WHERE typnamespace = $1::regnamespace AND typowner <> $2::regrole`, ident(key), ident(name))
			if err != nil {
				return err
			}
			if left, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
				return err
			}
			if len(left) > 0 {
				return fmt.Errorf("objects of schema %s still owned by another role: %s", key, strings.Join(left, ", "))
			}
			_, err = tx.Exec(ctx, "UPDATE kreplay.versions SET role = $2, role_password = $3 WHERE key = $1", key, name, password)
			return err
		})
	})
	if err != nil {
		return err
	}
	s.logger.Info("a version created before roles now runs as a role of its own", "version", key, "role", name)
	return nil
}

// DropRoles drops every role of this catalog, and what they own in this database: the versions'
// schemas go with them. It is for a database about to be dropped (see DropDatabase): the catalog
// is left without its versions' tables.
func (s *Store) DropRoles(ctx context.Context) error {
	prefix, err := s.RolePrefix(ctx)
	if err != nil {
		return err
	}
	rows, err := s.pool.Query(ctx, "SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1) ORDER BY rolname = $2, rolname", prefix, prefix+"_versions")
	if err != nil {
		return err
	}
	roles, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, r := range roles {
		if err := s.dropRoleNow(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// catalogRoles lists the roles of the kreplay catalog of conn's database (none without one).
func catalogRoles(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	var migrated bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('kreplay.catalog') IS NOT NULL").Scan(&migrated); err != nil || !migrated {
		return nil, err
	}
	rows, err := conn.Query(ctx, "SELECT rolname FROM pg_roles WHERE starts_with(rolname, 'kr_' || (SELECT id FROM kreplay.catalog) || '_')")
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// DropDatabase drops database name on the server of serverURL (WITH (FORCE): its sessions are
// ended) and then every role of the kreplay catalog it held (roles are the server's, not the
// database's, and would outlive it). Tests and the demo use it for their databases.
func DropDatabase(ctx context.Context, serverURL, name string) error {
	u, err := url.Parse(serverURL)
	if err != nil {
		return fmt.Errorf("database url: %w", err)
	}
	db := *u
	db.Path = "/" + name
	var roles []string
	conn, err := pgx.Connect(ctx, db.String())
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "3D000": // no such database
	case err != nil:
		return fmt.Errorf("drop database %s: %w", name, err)
	default:
		roles, err = catalogRoles(ctx, conn)
		_ = conn.Close(ctx)
		if err != nil {
			return fmt.Errorf("drop database %s: its roles: %w", name, err)
		}
	}
	admin, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	var errs []error
	for _, r := range roles {
		if _, err := admin.Exec(ctx, "DROP ROLE IF EXISTS "+ident(r)); err != nil {
			errs = append(errs, fmt.Errorf("drop role %s: %w", r, err))
		}
	}
	return errors.Join(errs...)
}
