package topology

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Arg is a value of an event that a handler can use as a named argument.
type Arg int

// The handler arguments, named @event_id, @type, @aggregate_id, @version,
// @created_at, @data, @topic, @partition and @offset in SQL.
const (
	ArgEventID Arg = iota
	ArgType
	ArgAggregateID
	ArgVersion
	ArgCreatedAt
	ArgData
	ArgTopic
	ArgPartition
	ArgOffset
)

// Args lists every handler argument, in the order above.
var Args = []Arg{ArgEventID, ArgType, ArgAggregateID, ArgVersion, ArgCreatedAt, ArgData, ArgTopic, ArgPartition, ArgOffset}

var argNames = [...]string{"event_id", "type", "aggregate_id", "version", "created_at", "data", "topic", "partition", "offset"}

// Name returns the argument's name without the @, such as "event_id".
func (a Arg) Name() string {
	if a < 0 || int(a) >= len(argNames) {
		return "Arg(" + strconv.Itoa(int(a)) + ")"
	}
	return argNames[a]
}

// String returns the argument as written in SQL, such as "@event_id".
func (a Arg) String() string { return "@" + a.Name() }

func argByName(name string) (Arg, bool) {
	for i, n := range argNames {
		if n == name {
			return Arg(i), true
		}
	}
	return 0, false
}

var validArgs = func() string {
	s := make([]string, len(argNames))
	for i, n := range argNames {
		s[i] = "@" + n
	}
	return strings.Join(s, ", ")
}()

// Handler is the statement that applies one event type, ready to execute.
type Handler struct {
	EventType string
	// SQL is the statement as written, with @named arguments.
	SQL string
	// Positional is SQL with each named argument replaced by a positional
	// parameter, $1, $2, ... numbered by first appearance; @data becomes
	// ($n::jsonb).
	Positional string
	// Args are the values of the parameters: Args[i] is the value of $(i+1).
	Args []Arg
}

// ParseHandler checks the statement of the handler for eventType and
// rewrites its pgx-style named arguments (@aggregate_id) into positional
// parameters. Every distinct name gets one parameter, numbered by first
// appearance. @data, the payload, becomes ($n::jsonb); the others stay plain
// $n, so that PostgreSQL infers their types from the context.
//
// ParseHandler follows PostgreSQL's lexical rules far enough to leave alone
// what is not an argument: string constants ('...', E'...' with backslash
// escapes, $$...$$ and $tag$...$tag$), quoted identifiers, -- and /* */
// comments (nested), and the @ of operators: an @ is an argument only when
// a letter or _ follows it and neither a letter, digit, _, $, @ nor < precedes
// it, so @>, <@, @@, @? and x <@ y stay operators.
//
// A statement is refused when it is empty, uses positional parameters ($1),
// names an unknown argument, leaves a string, identifier or comment
// unterminated, or holds more than one statement.
func ParseHandler(eventType, sql string) (Handler, error) {
	positional, args, err := rewriteArgs(sql, "the statement that applies the event", "handler", func(a Arg, n int) string {
		if a == ArgData {
			return "($" + strconv.Itoa(n) + "::jsonb)"
		}
		return "$" + strconv.Itoa(n)
	})
	if err != nil {
		return Handler{}, fmt.Errorf("handler %q: %w", eventType, err)
	}
	return Handler{EventType: eventType, SQL: sql, Positional: positional, Args: args}, nil
}

// RewriteExpr checks an SQL expression that may use the @named arguments (a fold's key or
// aggregate) and replaces each argument with replace(arg). It returns the arguments used, in
// order of first appearance. Like ParseHandler it refuses positional parameters, unknown
// arguments, unterminated strings and anything after a ';'.
func RewriteExpr(expr string, replace func(Arg) string) (string, []Arg, error) {
	return rewriteArgs(expr, "an expression", "expression", func(a Arg, _ int) string { return replace(a) })
}

// rewriteArgs lexes sql, replaces each named argument with replace(arg, n) (n: the argument's
// number by first appearance) and returns the rewritten SQL and the arguments in that order.
// what and unit name the statement in error messages.
func rewriteArgs(sql, what, unit string, replace func(Arg, int) string) (string, []Arg, error) {
	if strings.TrimSpace(sql) == "" {
		return "", nil, fmt.Errorf("empty SQL; write %s", what)
	}
	var (
		out      strings.Builder
		args     []Arg
		last     int             // sql[last:] is not copied to out yet
		numbers  = map[Arg]int{} // number of each argument used
		unknown  []string
		semi     = -1 // offset of the first ';' ending the statement
		content  bool // the statement has something besides comments
		trailing = -1 // offset of a token after the statement's ';'
	)
	out.Grow(len(sql) + 16)
	err := lexSQL(sql, func(t sqlToken) error {
		switch t.kind {
		case tokComment:
			return nil
		case tokPositional:
			return fmt.Errorf("positional parameter %s at %s; use @named arguments (%s)", sql[t.start:t.end], position(sql, t.start), validArgs)
		}
		if semi >= 0 {
			if trailing < 0 {
				trailing = t.start
			}
			return nil
		}
		switch t.kind {
		case tokSemicolon:
			semi = t.start
			return nil
		case tokNamed:
			name := sql[t.start+1 : t.end]
			a, ok := argByName(name)
			if !ok {
				unknown = append(unknown, "@"+name)
				return nil
			}
			n, ok := numbers[a]
			if !ok {
				args = append(args, a)
				n = len(args)
				numbers[a] = n
			}
			out.WriteString(sql[last:t.start])
			out.WriteString(replace(a, n))
			last = t.end
		}
		content = true
		return nil
	})
	if err != nil {
		return "", nil, err
	}
	if !content {
		return "", nil, fmt.Errorf("no statement, only comments; write %s", what)
	}
	if trailing >= 0 {
		if unit == "handler" {
			return "", nil, fmt.Errorf("more than one statement (a second one starts at %s); one statement per handler, so move it to its own handler or combine them with a CTE", position(sql, trailing))
		}
		return "", nil, fmt.Errorf("more than one statement (a second one starts at %s); write a single %s", position(sql, trailing), unit)
	}
	if semi >= 0 && unit != "handler" {
		return "", nil, fmt.Errorf("';' at %s: write a single %s, without ';'", position(sql, semi), unit)
	}
	if len(unknown) > 0 {
		s := "argument"
		if len(unknown) > 1 {
			s = "arguments"
		}
		return "", nil, fmt.Errorf("unknown %s %s (valid: %s)", s, strings.Join(dedupe(unknown), ", "), validArgs)
	}
	out.WriteString(sql[last:])
	return out.String(), args, nil
}

// checkStatement catches the mistakes in a table or check statement that
// show without a database: an unterminated string or comment, and unbalanced
// parentheses, which is what a YAML flow list such as
// [CREATE TABLE t (a int, b int)] makes of a statement by splitting it at
// its commas.
func checkStatement(sql string) error {
	depth := 0
	err := lexSQL(sql, func(t sqlToken) error {
		if t.kind != tokOther {
			return nil
		}
		switch sql[t.start] {
		case '(':
			depth++
		case ')':
			depth--
			if depth < 0 {
				return fmt.Errorf("unbalanced parentheses: a ')' at %s closes nothing", position(sql, t.start))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if depth > 0 {
		return fmt.Errorf("unbalanced parentheses in %q; in a YAML flow list [a, b] commas split entries, so write statements as a block list (- CREATE TABLE ...)", preview([]byte(sql)))
	}
	return nil
}

func dedupe(s []string) []string {
	var out []string
	for _, v := range s {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// position describes a byte offset of sql as "line L column C".
func position(sql string, off int) string {
	line := 1 + strings.Count(sql[:off], "\n")
	col := off - strings.LastIndexByte(sql[:off], '\n')
	return fmt.Sprintf("line %d column %d", line, col)
}

type tokenKind int

const (
	tokOther      tokenKind = iota // any other character outside strings and comments
	tokString                      // a string constant or a quoted identifier
	tokComment                     // a -- or /* */ comment
	tokNamed                       // @name
	tokPositional                  // $1
	tokSemicolon                   // ;
)

// sqlToken is a piece of a statement, sql[start:end]. White space is not
// reported.
type sqlToken struct {
	kind       tokenKind
	start, end int
}

// lexSQL reports the pieces of sql that ParseHandler cares about to visit,
// in order, and stops at the first error of visit or of the lexer.
func lexSQL(sql string, visit func(sqlToken) error) error {
	n := len(sql)
	for i := 0; i < n; {
		c := sql[i]
		start := i
		kind := tokOther
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
			continue
		case c == '-' && i+1 < n && sql[i+1] == '-':
			kind = tokComment
			if j := strings.IndexByte(sql[i:], '\n'); j >= 0 {
				i += j + 1
			} else {
				i = n
			}
		case c == '/' && i+1 < n && sql[i+1] == '*':
			kind = tokComment
			depth := 0
			for {
				if i+1 >= n {
					return fmt.Errorf("unterminated /* comment at %s; close it with */", position(sql, start))
				}
				switch {
				case sql[i] == '/' && sql[i+1] == '*':
					depth++
					i += 2
				case sql[i] == '*' && sql[i+1] == '/':
					depth--
					i += 2
				default:
					i++
				}
				if depth == 0 {
					break
				}
			}
		case c == '\'':
			kind = tokString
			escapes := i > 0 && (sql[i-1] == 'e' || sql[i-1] == 'E') && (i == 1 || !isIdentByte(sql[i-2]))
			end, ok := quoted(sql, i, '\'', escapes)
			if !ok {
				return fmt.Errorf("unterminated string at %s; close it with '", position(sql, start))
			}
			i = end
		case c == '"':
			kind = tokString
			end, ok := quoted(sql, i, '"', false)
			if !ok {
				return fmt.Errorf("unterminated quoted identifier at %s; close it with \"", position(sql, start))
			}
			i = end
		case c == '$' && (i == 0 || !isIdentByte(sql[i-1])):
			switch j := i + 1; {
			case j < n && isDigit(sql[j]):
				for j < n && isDigit(sql[j]) {
					j++
				}
				kind, i = tokPositional, j
			default:
				for j < n && (isIdentByte(sql[j]) && sql[j] != '$' && (j > i+1 || !isDigit(sql[j]))) {
					j++
				}
				if j < n && sql[j] == '$' {
					tag := sql[i : j+1]
					k := strings.Index(sql[j+1:], tag)
					if k < 0 {
						return fmt.Errorf("unterminated dollar-quoted string at %s; close it with %s", position(sql, start), tag)
					}
					kind, i = tokString, j+1+k+len(tag)
				} else {
					i++
				}
			}
		case c == '@' && i+1 < n && isIdentStart(sql[i+1]) && (i == 0 || !isIdentByte(sql[i-1]) && sql[i-1] != '<' && sql[i-1] != '@'):
			j := i + 1
			for j < n && isIdentByte(sql[j]) && sql[j] != '$' {
				j++
			}
			kind, i = tokNamed, j
		case c == ';':
			kind = tokSemicolon
			i++
		default:
			i++
		}
		if err := visit(sqlToken{kind, start, i}); err != nil {
			return err
		}
	}
	return nil
}

// quoted returns the end of the quoted text that starts at sql[i] == q, in
// which a doubled q stands for itself and, when escapes is true, a backslash
// escapes the next byte.
func quoted(sql string, i int, q byte, escapes bool) (int, bool) {
	for i++; i < len(sql); i++ {
		switch sql[i] {
		case '\\':
			if escapes {
				i++
			}
		case q:
			if i+1 < len(sql) && sql[i+1] == q {
				i++
				continue
			}
			return i + 1, true
		}
	}
	return 0, false
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// isIdentStart reports whether c can start a named argument.
func isIdentStart(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_'
}

// isIdentByte reports whether c can be part of a PostgreSQL identifier
// (non-ASCII letters included).
func isIdentByte(c byte) bool {
	return isIdentStart(c) || isDigit(c) || c == '$' || c >= 0x80
}
