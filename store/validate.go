package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"time"

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

// ValidateDefinition checks a definition against PostgreSQL before anything runs: its tables are
// created in a scratch schema, every handler and check is prepared there, and the transaction is
// rolled back. A handler naming a missing table or column, or using an argument where PostgreSQL
// infers a type kreplay cannot fill, is refused with the projection, the event type and
// PostgreSQL's message. All problems are returned, joined. A failure of the connection or the
// server (IsTransient) is returned as is, not as a refusal: the caller may retry.
func (s *Store) ValidateDefinition(ctx context.Context, def topology.Definition) error {
	handlers, err := def.ParseHandlers()
	if err != nil {
		return err
	}
	var suffix [6]byte
	_, _ = rand.Read(suffix[:])
	scratch := "kreplay_check_" + hex.EncodeToString(suffix[:])

	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("validate projection %q: %w", def.Projection, err)
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("validate projection %q: %w", def.Projection, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // the scratch schema must never be committed

	if err := createVersionSchema(ctx, tx, scratch, def); err != nil {
		return err
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
	pg := conn.Conn().PgConn()
	tm := conn.Conn().TypeMap()
	// Each statement is prepared under a savepoint: a statement PostgreSQL refuses aborts the
	// transaction, and every statement after it would be reported as failing too.
	prepare := func(sql string) (sd *pgconn.StatementDescription, refused, err error) {
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
		}
		return sd, refused, nil
	}
	for _, t := range types {
		h := handlers[t]
		sd, refused, err := prepare(h.Positional)
		if err != nil {
			return err
		}
		if refused != nil {
			errs = append(errs, fmt.Errorf("projection %q: handler %q: %s", def.Projection, t, pgMessage(refused)))
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
		_, refused, err := prepare(f.sql)
		if err != nil {
			return err
		}
		if refused != nil {
			errs = append(errs, fmt.Errorf("projection %q: fold %q: %s", def.Projection, f.table, pgMessage(refused)))
		}
	}
	for i, q := range def.Checks {
		_, refused, err := prepare(q)
		if err != nil {
			return err
		}
		if refused != nil {
			errs = append(errs, fmt.Errorf("projection %q: checks[%d]: %s", def.Projection, i, pgMessage(refused)))
		}
	}
	return errors.Join(errs...)
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
