package topology

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
)

// Parse decodes a kreplay.yaml document. It does not apply the environment
// or the defaults, and does not validate: Load does all of that.
//
// The decoding is strict: an unknown key, a key given twice, a value of the
// wrong shape, an unknown ordering, on_error or format, and a duration
// without a unit are errors that name the line and the key, all of them at
// once. Durations are Go duration strings such as "1s" or "250ms". An empty
// file and a file with several YAML documents are errors too.
func Parse(data []byte) (*Config, error) {
	root, err := parseDocument(data)
	if err != nil {
		return nil, err
	}
	chk := yamlChecker{visited: map[aliasVisit]bool{}}
	chk.check(root, reflect.TypeFor[Config](), "")
	if len(chk.errs) > 0 {
		return nil, errors.Join(chk.errs...)
	}
	// The checker has reported everything the decoder would; decode with
	// KnownFields anyway, so that a gap in the checker cannot let an unknown
	// key through silently.
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, yamlError(err)
	}
	return &c, nil
}

var errEmptyConfig = errors.New("config is empty; it needs at least sources: and projections:")

// parseDocument returns the root node of the only document in data.
func parseDocument(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errEmptyConfig
		}
		return nil, yamlError(err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		if !isEmptyDocument(&next) {
			return nil, fmt.Errorf("config line %d: a second YAML document starts here; the config file holds exactly one (remove the \"---\" separator)", documentLine(&next))
		}
	case !errors.Is(err, io.EOF):
		return nil, yamlError(err)
	}
	if isEmptyDocument(&doc) {
		return nil, errEmptyConfig
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config line %d: want a mapping with the keys %s at the top, got %s", root.Line, strings.Join(yamlKeys(reflect.TypeFor[Config]()), ", "), nodeKind(root))
	}
	return root, nil
}

func isEmptyDocument(doc *yaml.Node) bool {
	return len(doc.Content) == 0 || (doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].ShortTag() == "!!null")
}

func documentLine(doc *yaml.Node) int {
	if len(doc.Content) > 0 {
		return doc.Content[0].Line
	}
	return doc.Line
}

var yamlLineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): `)

// yamlError rewrites an error of the YAML library as "config line N: ...".
func yamlError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		errs := make([]error, len(te.Errors))
		for i, e := range te.Errors {
			errs[i] = errors.New(configLine(e))
		}
		return errors.Join(errs...)
	}
	return errors.New(configLine(err.Error()))
}

func configLine(msg string) string {
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		return "config line " + m[1] + ": " + msg[len(m[0]):]
	}
	return "config: " + strings.TrimPrefix(msg, "yaml: ")
}

// yamlChecker walks a document beside the Go type it decodes into and
// reports, with line numbers, what the decoder would refuse, in words that
// say how to fix it.
type yamlChecker struct {
	errs []error
	// visited stops an alias from being checked twice as the same type, so
	// that a document built of aliases of aliases cannot make the walk
	// exponential.
	visited map[aliasVisit]bool
}

type aliasVisit struct {
	n *yaml.Node
	t reflect.Type
}

var (
	durationType    = reflect.TypeFor[time.Duration]()
	durationPtrType = reflect.TypeFor[*time.Duration]()
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
)

func (c *yamlChecker) fail(n *yaml.Node, label, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if label != "" {
		msg = fmt.Sprintf("%q: %s", label, msg)
	}
	c.errs = append(c.errs, fmt.Errorf("config line %d: %s", n.Line, msg))
}

func (c *yamlChecker) check(n *yaml.Node, t reflect.Type, label string) {
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return
		}
		v := aliasVisit{n.Alias, t}
		if c.visited[v] {
			return
		}
		c.visited[v] = true
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // the zero value, then the default
	}
	switch {
	case t == durationType, t == durationPtrType:
		c.duration(n, label)
		return
	case reflect.PointerTo(t).Implements(unmarshalerType):
		c.decodes(n, t, label)
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			c.fail(n, label, "want a mapping with the keys %s, got %s", strings.Join(yamlKeys(t), ", "), nodeKind(n))
			return
		}
		c.mapping(n, t, label, map[string]int{})
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			c.fail(n, label, "want a list, got %s", nodeKind(n))
			return
		}
		for i, item := range n.Content {
			c.check(item, t.Elem(), fmt.Sprintf("%s[%d]", label, i))
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			c.fail(n, label, "want a mapping, got %s", nodeKind(n))
			return
		}
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				c.fail(k, label, "want a name as the key, got %s", nodeKind(k))
				continue
			}
			if line, dup := seen[k.Value]; dup {
				c.fail(k, label, "key %q appears twice (first at line %d); keep one", k.Value, line)
			}
			seen[k.Value] = k.Line
			c.check(v, t.Elem(), k.Value)
		}
	default:
		c.decodes(n, t, label)
	}
}

// mapping checks the keys of a mapping decoded into the struct type t, and
// their values. seen holds the keys met so far, with their lines.
func (c *yamlChecker) mapping(n *yaml.Node, t reflect.Type, label string, seen map[string]int) {
	fields := yamlFields(t)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			c.merge(v, t, label)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			c.fail(k, label, "want a key name, got %s", nodeKind(k))
			continue
		}
		ft, ok := fields[k.Value]
		if !ok {
			keys := yamlKeys(t)
			msg := fmt.Sprintf("config line %d: unknown key %q (known keys here: %s)", k.Line, k.Value, strings.Join(keys, ", "))
			if s := suggest(k.Value, keys); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			}
			c.errs = append(c.errs, errors.New(msg))
			continue
		}
		if line, dup := seen[k.Value]; dup {
			c.fail(k, "", "key %q appears twice (first at line %d); keep one", k.Value, line)
		}
		seen[k.Value] = k.Line
		c.check(v, ft, k.Value)
	}
}

// merge checks the value of a "<<" merge key: a mapping, or a list of them.
func (c *yamlChecker) merge(n *yaml.Node, t reflect.Type, label string) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		v := aliasVisit{n.Alias, t}
		if c.visited[v] {
			return
		}
		c.visited[v] = true
		n = n.Alias
	}
	switch n.Kind {
	case yaml.MappingNode:
		c.mapping(n, t, label, map[string]int{})
	case yaml.SequenceNode:
		for _, m := range n.Content {
			c.merge(m, t, label)
		}
	default:
		c.fail(n, label, "a merge key (<<) wants a mapping or a list of mappings, got %s", nodeKind(n))
	}
}

func (c *yamlChecker) duration(n *yaml.Node, label string) {
	if n.Kind != yaml.ScalarNode {
		c.fail(n, label, "want a duration such as \"1s\" or \"250ms\", got %s", nodeKind(n))
		return
	}
	switch n.ShortTag() {
	case "!!int", "!!float":
		c.fail(n, label, "want a duration with a unit, such as \"%ss\" or \"%sms\", got %s", n.Value, n.Value, n.Value)
		return
	}
	if _, err := time.ParseDuration(n.Value); err != nil {
		c.fail(n, label, "want a duration such as \"1s\" or \"250ms\", got %q", n.Value)
	}
}

// decodes checks a scalar by decoding it on its own into a value of type t,
// which is how the YAML library decides.
func (c *yamlChecker) decodes(n *yaml.Node, t reflect.Type, label string) {
	if n.Kind != yaml.ScalarNode && !reflect.PointerTo(t).Implements(unmarshalerType) {
		c.fail(n, label, "want %s, got %s", typeWords(t), nodeKind(n))
		return
	}
	err := n.Decode(reflect.New(t).Interface())
	if err == nil {
		return
	}
	var te *yaml.TypeError
	if errors.As(err, &te) && reflect.PointerTo(t).Implements(unmarshalerType) {
		for _, e := range te.Errors {
			c.fail(n, label, "%s", yamlLineRE.ReplaceAllString(e, ""))
		}
		return
	}
	c.fail(n, label, "want %s, got %s", typeWords(t), nodeKind(n))
}

func typeWords(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64:
		return "an integer"
	case reflect.Int32:
		return "an integer that fits in 32 bits"
	case reflect.String:
		return "a string"
	}
	return t.String()
}

// nodeKind describes a node for "want X, got Y" messages.
func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		v := n.Value
		if len(v) > 64 {
			v = v[:64] + "..."
		}
		if n.ShortTag() == "!!str" {
			return fmt.Sprintf("%q", v)
		}
		return v
	}
	return "a document"
}

// fieldCache holds the yamlFields of each struct type met.
var fieldCache sync.Map // reflect.Type -> map[string]reflect.Type

// yamlFields maps the YAML keys of struct type t to the field types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	m := make(map[string]reflect.Type, t.NumField())
	for f := range t.Fields() {
		if name := yamlName(f); name != "" {
			m[name] = f.Type
		}
	}
	fieldCache.Store(t, m)
	return m
}

// yamlKeys lists the YAML keys of struct type t in declaration order.
func yamlKeys(t reflect.Type) []string {
	var keys []string
	for f := range t.Fields() {
		if name := yamlName(f); name != "" {
			keys = append(keys, name)
		}
	}
	return keys
}

func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	if name == "" {
		return strings.ToLower(f.Name)
	}
	return name
}

// suggest returns the key of keys closest to s, when it is close enough to
// be a typo.
func suggest(s string, keys []string) string {
	best, bestDist := "", 3
	for _, k := range keys {
		if d := editDistance(strings.ToLower(s), k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of two short strings.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
