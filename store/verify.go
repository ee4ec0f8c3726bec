package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// CheckResult is one comparison between two versions.
type CheckResult struct {
	Kind  string `json:"kind"` // check, row_count or checksum
	Name  string `json:"name"` // the check's query, or the table
	Equal bool   `json:"equal"`
	A     string `json:"a"` // the result on the first version (the live one)
	B     string `json:"b"` // the result on the second version (the candidate)
}

// Comparison is the outcome of comparing two versions in one snapshot.
type Comparison struct {
	A, B    string
	Offsets Hold // the offsets both had applied when compared
	Results []CheckResult
	Skipped []string // what could not be compared, and why
	Passed  bool
}

// Compare compares versions a and b in one snapshot (a REPEATABLE READ transaction): the
// checks (each run with search_path set to each version's schema; results compared as
// multisets of rows), the row count of every table both have, and, for tables with the same
// columns, a checksum of all rows. It first checks, in the same snapshot, that both have applied
// exactly the same offsets in every partition of the topics both consume (a partition without a
// checkpoint is at offset 0), and fails with ErrNotAligned if not.
//
// What reads a version's tables (its checks, and the counts and checksums, which run its
// functions and policies if it has any) runs on a read-only connection of the version's own role
// that imported the snapshot: a check can neither write nor read kreplay's catalog (the
// versions' passwords are there) nor another version's tables.
func (s *Store) Compare(ctx context.Context, a, b string, checks []string) (*Comparison, error) {
	cmp := &Comparison{A: a, B: b, Passed: true}
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		offsets, err := alignedOffsets(ctx, tx, a, b)
		if err != nil {
			return err
		}
		cmp.Offsets = offsets
		var snapshot string
		if err := tx.QueryRow(ctx, "SELECT pg_export_snapshot()").Scan(&snapshot); err != nil {
			return err
		}
		txa, err := s.snapshotOf(ctx, a, snapshot)
		if err != nil {
			return err
		}
		defer txa.Conn().Close(context.WithoutCancel(ctx))
		txb, err := s.snapshotOf(ctx, b, snapshot)
		if err != nil {
			return err
		}
		defer txb.Conn().Close(context.WithoutCancel(ctx))
		for _, q := range checks {
			ra, err := checkRows(ctx, txa, a, q)
			if err != nil {
				return fmt.Errorf("check %q on %s: %s", q, a, pgMessage(err))
			}
			rb, err := checkRows(ctx, txb, b, q)
			if err != nil {
				return fmt.Errorf("check %q on %s: %s", q, b, pgMessage(err))
			}
			cmp.add("check", q, ra, rb)
		}
		ta, err := columnsByTable(ctx, tx, a)
		if err != nil {
			return err
		}
		tb, err := columnsByTable(ctx, tx, b)
		if err != nil {
			return err
		}
		for _, t := range slices.Sorted(maps.Keys(ta)) {
			colsB, ok := tb[t]
			if !ok {
				cmp.Skipped = append(cmp.Skipped, fmt.Sprintf("table %s: only in %s", t, a))
				continue
			}
			var ca, cb string
			if err := txa.QueryRow(ctx, "SELECT count(*)::text FROM "+ident(a, t)).Scan(&ca); err != nil {
				return err
			}
			if err := txb.QueryRow(ctx, "SELECT count(*)::text FROM "+ident(b, t)).Scan(&cb); err != nil {
				return err
			}
			cmp.add("row_count", t, ca, cb)
			if ta[t] == colsB {
				sa, err := checksum(ctx, txa, a, t)
				if err != nil {
					return err
				}
				sb, err := checksum(ctx, txb, b, t)
				if err != nil {
					return err
				}
				cmp.add("checksum", t, sa, sb)
			} else {
				cmp.Skipped = append(cmp.Skipped, fmt.Sprintf("checksum %s: the versions' columns differ", t))
			}
		}
		for _, t := range slices.Sorted(maps.Keys(tb)) {
			if _, ok := ta[t]; !ok {
				cmp.Skipped = append(cmp.Skipped, fmt.Sprintf("table %s: only in %s", t, b))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return cmp, nil
}

// snapshotOf opens a read-only REPEATABLE READ transaction on a new connection of version key's
// role that sees exactly the exported snapshot. The caller closes its connection.
func (s *Store) snapshotOf(ctx context.Context, key, snapshot string) (pgx.Tx, error) {
	cfg, err := s.versionLogin(ctx, key, "kreplay:verify:"+key)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("verify: connect as %s's role: %w", key, err)
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err == nil {
		_, err = tx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+quoteLiteral(snapshot))
	}
	if err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("verify: %s's snapshot: %w", key, err)
	}
	return tx, nil
}

func (c *Comparison) add(kind, name, a, b string) {
	r := CheckResult{Kind: kind, Name: name, A: a, B: b, Equal: a == b}
	c.Passed = c.Passed && r.Equal
	c.Results = append(c.Results, r)
}

// ErrNotAligned: the two versions have not applied the same offsets.
var ErrNotAligned = errors.New("versions have not applied the same offsets")

// alignedOffsets returns the offsets a and b have both applied in every partition of the topics
// both consume, or ErrNotAligned. A partition one of them has no checkpoint for (added to a topic
// after it started, not claimed yet) is at offset 0 for it.
func alignedOffsets(ctx context.Context, tx pgx.Tx, a, b string) (Hold, error) {
	va, err := getVersion(ctx, tx, a, false)
	if err != nil {
		return nil, err
	}
	vb, err := getVersion(ctx, tx, b, false)
	if err != nil {
		return nil, err
	}
	pos, err := positions(ctx, tx, false, a, b)
	if err != nil {
		return nil, err
	}
	partitions := map[TopicPartition]bool{}
	for _, key := range []string{a, b} {
		for tp := range pos[key] {
			partitions[tp] = true
		}
	}
	out := Hold{}
	var diff []string
	for tp := range partitions {
		if !slices.Contains(va.Topics(), tp.Topic) || !slices.Contains(vb.Topics(), tp.Topic) {
			continue // a source only one of them consumes
		}
		na, nb := pos[a][tp], pos[b][tp]
		if na != nb {
			diff = append(diff, fmt.Sprintf("%s[%d] %d != %d", tp.Topic, tp.Partition, na, nb))
		}
		if out[tp.Topic] == nil {
			out[tp.Topic] = map[int32]int64{}
		}
		out[tp.Topic][tp.Partition] = na
	}
	if len(diff) > 0 {
		slices.Sort(diff)
		return nil, fmt.Errorf("%w: %s", ErrNotAligned, strings.Join(diff, ", "))
	}
	return out, nil
}

// checkRows runs a check with search_path set to schema and returns its rows as a sorted list of
// JSON texts, joined.
func checkRows(ctx context.Context, tx pgx.Tx, schema, q string) (string, error) {
	if _, err := tx.Exec(ctx, "SELECT set_config('search_path', $1, true)", ident(schema)); err != nil {
		return "", err
	}
	// The closing parenthesis on a line of its own: a comment the body may still end with (were
	// checkBody wrong) cannot swallow it.
	rows, err := tx.Query(ctx, "SELECT to_jsonb(q)::text FROM (\n"+checkBody(q)+"\n) AS q")
	if err != nil {
		return "", err
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", err
	}
	if _, err := tx.Exec(ctx, "RESET search_path"); err != nil {
		return "", err
	}
	slices.Sort(out)
	return strings.Join(out, "\n"), nil
}

// checkBody is a check's query without what may follow its last token (whitespace, comments and
// semicolons), which PostgreSQL accepts in a check on its own but not in the subquery verify runs
// it in. It follows PostgreSQL's lexer as far as that needs: quoted strings and identifiers
// (where "--", "/*" and ";" are text), E'...' strings with backslash escapes, dollar quoting, and
// nested /* */ comments.
func checkBody(q string) string {
	end := 0 // after the last character of a token
	for i := 0; i < len(q); {
		switch c := q[i]; {
		case strings.HasPrefix(q[i:], "--"):
			if nl := strings.IndexByte(q[i:], '\n'); nl >= 0 {
				i += nl + 1
			} else {
				i = len(q)
			}
			continue
		case strings.HasPrefix(q[i:], "/*"):
			i = blockCommentEnd(q, i)
			continue
		case c == ';' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
			continue
		case c == '\'':
			escapes := i > 0 && (q[i-1] == 'E' || q[i-1] == 'e') && (i == 1 || !identChar(q[i-2]))
			i = quotedEnd(q, i, '\'', escapes)
		case c == '"':
			i = quotedEnd(q, i, '"', false)
		case c == '$' && (i == 0 || !identChar(q[i-1])):
			if tag := dollarTag(q[i:]); tag != "" {
				if j := strings.Index(q[i+len(tag):], tag); j >= 0 {
					i += len(tag) + j + len(tag)
				} else {
					i = len(q)
				}
			} else {
				i++
			}
		default:
			i++
		}
		end = i
	}
	return q[:end]
}

// blockCommentEnd is the index after the /* */ comment (comments nest) that starts at i.
func blockCommentEnd(q string, i int) int {
	depth := 0
	for i < len(q) {
		switch {
		case strings.HasPrefix(q[i:], "/*"):
			depth++
			i += 2
		case strings.HasPrefix(q[i:], "*/"):
			depth--
			i += 2
			if depth == 0 {
				return i
			}
		default:
			i++
		}
	}
	return i
}

// quotedEnd is the index after the string or quoted identifier that starts at i with quote (a
// doubled quote is one quote character; with escapes, so is a backslash and the next character).
func quotedEnd(q string, i int, quote byte, escapes bool) int {
	for i++; i < len(q); i++ {
		switch {
		case escapes && q[i] == '\\':
			i++
		case q[i] == quote:
			if i+1 < len(q) && q[i+1] == quote {
				i++
				continue
			}
			return i + 1
		}
	}
	return len(q)
}

// dollarTag is the dollar-quote opening tag ($$ or $name$) that q starts with, or "".
func dollarTag(q string) string {
	for j := 1; j < len(q); j++ {
		switch c := q[j]; {
		case c == '$':
			return q[:j+1]
		case !identChar(c) || (j == 1 && c >= '0' && c <= '9'):
			return ""
		}
	}
	return ""
}

// identChar reports whether c may continue an identifier (non-ASCII bytes are letters).
func identChar(c byte) bool {
	return c == '_' || c == '$' || c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// columnsByTable maps each table of a schema to a signature of its columns (names and types).
func columnsByTable(ctx context.Context, tx pgx.Tx, schema string) (map[string]string, error) {
	rows, err := tx.Query(ctx, `SELECT c.relname, string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition GROUP BY c.relname`, schema)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	var t, cols string
	_, err = pgx.ForEachRow(rows, []any{&t, &cols}, func() error {
		out[t] = cols
		return nil
	})
	return out, err
}

// checksum is an order-independent checksum of all rows of a table.
func checksum(ctx context.Context, tx pgx.Tx, schema, table string) (string, error) {
	var sum string
	err := tx.QueryRow(ctx, "SELECT count(*) || ':' || coalesce(sum(hashtextextended(t::text, 0)::numeric), 0) FROM "+ident(schema, table)+" AS t").Scan(&sum)
	return sum, err
}

// Verification is a recorded verify.
type Verification struct {
	Version string
	Against string
	Passed  bool
	Report  json.RawMessage
	At      time.Time
}

// RecordVerification stores a verify's outcome.
func (s *Store) RecordVerification(ctx context.Context, cmp *Comparison, candidate string) error {
	against := cmp.A
	if candidate == cmp.A {
		against = cmp.B
	}
	report, err := json.Marshal(cmp.Results)
	if err != nil {
		return err
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO kreplay.verifications (version, against, passed, report, offsets) VALUES ($1, $2, $3, $4, $5)`,
		candidate, against, cmp.Passed, report, cmp.Offsets)
	return err
}

// LastVerification is the latest verify of a version (ErrNotFound if none).
func (s *Store) LastVerification(ctx context.Context, key string) (*Verification, error) {
	var v Verification
	err := s.pool.QueryRow(ctx, `SELECT version, against, passed, report, at FROM kreplay.verifications
		WHERE version = $1 ORDER BY id DESC LIMIT 1`, key).Scan(&v.Version, &v.Against, &v.Passed, &v.Report, &v.At)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, refuse(ErrNotFound, "no verify of %s", key)
	}
	return &v, err
}
