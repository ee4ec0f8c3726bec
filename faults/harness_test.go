package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/internal/testkit"
	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/processor/kafkatest"
	"github.com/kreplay/kreplay/store/storetest"
	"github.com/kreplay/kreplay/topology"
)

// The fault suite drives kreplay the way production does (the real binary, killed and
// restarted; PostgreSQL and Kafka failing under it) and checks the values users care about,
// computed independently from the log: balances, event counts, checkpoints, which version the
// views point at. `make test` runs short versions; `make soak` (KREPLAY_SOAK=1) long ones and
// prints a table of the scenarios.

// binary is the kreplay binary built by TestMain.
var binary string

// soak reports whether the long versions run.
func soak() bool { return os.Getenv("KREPLAY_SOAK") != "" }

// pick returns short in `make test`, long in `make soak`.
func pick[T any](short, long T) T {
	if soak() {
		return long
	}
	return short
}

// row is one line of the scenario table.
type row struct {
	Scenario string
	Faults   string
	Events   int64
	Exact    bool
	Took     time.Duration
}

var (
	tableMu sync.Mutex
	table   []row
)

func record(t *testing.T, r row) {
	t.Helper()
	tableMu.Lock()
	defer tableMu.Unlock()
	table = append(table, r)
	t.Logf("%s: %s, %d events, exact=%v, %s", r.Scenario, r.Faults, r.Events, r.Exact, r.Took.Round(time.Millisecond))
}

// printTable prints the scenarios' table, and writes it to $KREPLAY_FAULTS_TABLE when set (go test
// shows a passing package's output only with -v; make soak prints that file).
func printTable() {
	tableMu.Lock()
	defer tableMu.Unlock()
	if len(table) == 0 {
		return
	}
	sort.Slice(table, func(i, j int) bool { return table[i].Scenario < table[j].Scenario })
	var b strings.Builder
	fmt.Fprintf(&b, "%-34s %-62s %10s %-6s %9s\n", "SCENARIO", "FAULTS INJECTED", "EVENTS", "RESULT", "TIME")
	for _, r := range table {
		res := "exact"
		if !r.Exact {
			res = "NOT"
		}
		fmt.Fprintf(&b, "%-34s %-62s %10d %-6s %9s\n", r.Scenario, r.Faults, r.Events, res, r.Took.Round(100*time.Millisecond))
	}
	fmt.Printf("\n%s\n", b.String())
	if path := os.Getenv("KREPLAY_FAULTS_TABLE"); path != "" {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "write the scenarios' table:", err)
		}
	}
}

const topic = "bank.accounts"

// env is a scenario's world: a kfake cluster, a database, the config file, the bank history.
type env struct {
	t       *testing.T
	kafka   *kafkatest.Cluster
	dbURL   string
	db      *pgxpool.Pool
	bank    *bankgen.Bank
	bankMu  sync.Mutex
	dir     string
	yaml    string
	serveMu sync.Mutex
	nserve  int
}

func newEnv(t *testing.T, partitions int32, projections string, opts ...kfake.Opt) *env {
	t.Helper()
	return newEnvOn(t, kafkatest.New(t, map[string]int32{topic: partitions}, opts...), partitions, projections)
}

// newEnvOn is newEnv on a given cluster.
func newEnvOn(t *testing.T, k *kafkatest.Cluster, partitions int32, projections string) *env {
	t.Helper()
	dbURL := storetest.NewDatabase(t)
	db, err := pgxpool.New(context.Background(), dbURL)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	e := &env{t: t, kafka: k, dbURL: dbURL, db: db, bank: bankgen.New(topic, partitions, 500, 2026), dir: t.TempDir()}
	brokers, _ := json.Marshal(k.Addrs) // a JSON list is a YAML flow list
	// Every serve listens on a port of its own (see tryServe), never on a fixed one.
	e.yaml = fmt.Sprintf(`http:
  listen: "127.0.0.1:0"
kafka:
  brokers: %s
  session_timeout: 3s
  rebalance_timeout: 5s
postgres:
  url: %q
  lock_timeout: 100ms
control:
  status_interval: 250ms
`, brokers, dbURL) + projections
	return e
}

// produce writes n more bank events.
func (e *env) produce(n int) {
	e.t.Helper()
	e.bankMu.Lock()
	recs := e.bank.Events(n)
	e.bankMu.Unlock()
	e.kafka.Produce(recs...)
}

// expected are the balances and event counts the log implies.
func (e *env) expected() (map[string]int64, map[string]int64, int) {
	e.bankMu.Lock()
	defer e.bankMu.Unlock()
	return e.bank.Balances(), e.bank.Counts(), e.bank.Total()
}

// serve is a `kreplay serve` process.
type serve struct {
	cmd  *exec.Cmd
	http string
	log  string
	done chan error
}

// startServe runs the real binary on the env's config, with an HTTP port of its own, and waits
// until it is ready (/readyz answers 200: set up, PostgreSQL and Kafka answering).
func (e *env) startServe() *serve {
	e.t.Helper()
	s, err := e.tryServe()
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// tryServe is startServe returning its error (for goroutines other than the test's).
func (e *env) tryServe() (*serve, error) {
	e.serveMu.Lock()
	e.nserve++
	n := e.nserve
	e.serveMu.Unlock()
	path := filepath.Join(e.dir, fmt.Sprintf("kreplay-%d.yaml", n))
	if err := os.WriteFile(path, []byte(e.yaml), 0o600); err != nil {
		return nil, err
	}
	logPath := filepath.Join(e.dir, fmt.Sprintf("serve-%d.log", n))
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, "serve", "-c", path, "--log-level", "info")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &serve{cmd: cmd, log: logPath, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait(); _ = logf.Close() }()
	e.t.Cleanup(func() {
		if e.t.Failed() && s.alive() {
			s.signal(syscall.SIGQUIT) // a goroutine dump in the log, to see where it waits
			time.Sleep(time.Second)
		}
		s.kill()
		if e.t.Failed() {
			keep := filepath.Join(os.TempDir(), fmt.Sprintf("kreplay-failed-%s-%s", strings.ReplaceAll(e.t.Name(), "/", "_"), filepath.Base(logPath)))
			if b, err := os.ReadFile(logPath); err == nil {
				_ = os.WriteFile(keep, b, 0o600)
			}
			e.t.Logf("serve %d log kept in %s", n, keep)
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if s.http == "" {
			s.http = httpAddr(logPath) // serve logs the port it took
		}
		if s.http != "" && s.get("/readyz") == 200 {
			return s, nil
		}
		select {
		case err := <-s.done:
			s.done <- err
			return nil, fmt.Errorf("serve exited at start: %w\n%s", err, tail(logPath))
		case <-time.After(50 * time.Millisecond):
		}
	}
	s.signal(syscall.SIGQUIT) // a goroutine dump in the log, to see where it waits
	time.Sleep(time.Second)
	keep := filepath.Join(os.TempDir(), "kreplay-not-ready-"+filepath.Base(logPath))
	if b, err := os.ReadFile(logPath); err == nil {
		_ = os.WriteFile(keep, b, 0o600)
	}
	return nil, fmt.Errorf("serve was not ready within 60s (/healthz %d, /readyz %d); log kept in %s\n%s", s.get("/healthz"), s.get("/readyz"), keep, tail(logPath))
}

// get returns the status code of GET path (0 when it does not answer).
func (s *serve) get(path string) int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + s.http + path)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// assignments is the serve's GET /api/assignments.
func (s *serve) assignments() (map[string]int, bool) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + s.http + "/api/assignments")
	if err != nil {
		return nil, false
	}
	defer resp.Body.Close()
	var a struct {
		Leader   bool           `json:"leader"`
		Versions map[string]int `json:"versions"`
	}
	if json.NewDecoder(resp.Body).Decode(&a) != nil {
		return nil, false
	}
	return a.Versions, a.Leader
}

// metric is the sum of a metric's samples in the serve's /metrics whose line contains match.
func (s *serve) metric(name, match string) float64 {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + s.http + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	var sum float64
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(line, name) && strings.Contains(line, match) {
			var v float64
			if _, err := fmt.Sscanf(line[strings.LastIndex(line, " ")+1:], "%g", &v); err == nil {
				sum += v
			}
		}
	}
	return sum
}

// kill sends SIGKILL (no cleanup at all) and waits for the process to end.
func (s *serve) kill() {
	if s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case err := <-s.done:
		s.done <- err
	case <-time.After(10 * time.Second):
	}
}

// alive reports whether the process has not exited yet.
func (s *serve) alive() bool {
	select {
	case err := <-s.done:
		s.done <- err
		return false
	default:
		return true
	}
}

// signal sends a signal.
func (s *serve) signal(sig syscall.Signal) { _ = s.cmd.Process.Signal(sig) }

// stop sends SIGTERM and waits for a clean exit.
func (s *serve) stop(t *testing.T) {
	t.Helper()
	s.signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		s.done <- err
		require.NoError(t, err, "serve did not exit cleanly on SIGTERM\n%s", tail(s.log))
	case <-time.After(45 * time.Second):
		t.Fatalf("serve did not stop within 45s of SIGTERM\n%s", tail(s.log))
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 25 {
		lines = lines[len(lines)-25:]
	}
	return "--- " + path + "\n" + strings.Join(lines, "\n")
}

// httpAddr is the address of serve's HTTP server from its log ("http listening" addr=...), ""
// until it is there.
func httpAddr(logPath string) string {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "msg=\"http listening\"") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if addr, ok := strings.CutPrefix(f, "addr="); ok {
				return addr
			}
		}
	}
	return ""
}

// client publishes commands like the CLI.
func (e *env) client() *control.Client {
	e.t.Helper()
	cfg, err := topology.Parse([]byte(e.yaml))
	require.NoError(e.t, err)
	cfg.SetDefaults()
	c, err := control.NewClient(cfg, nil)
	require.NoError(e.t, err)
	e.t.Cleanup(c.Close)
	return c
}

func (e *env) scalar(sql string, args ...any) int64 {
	e.t.Helper()
	var n int64
	require.NoError(e.t, e.db.QueryRow(context.Background(), sql, args...).Scan(&n))
	return n
}

func (e *env) strings(sql string, args ...any) []string {
	e.t.Helper()
	rows, err := e.db.Query(context.Background(), sql, args...)
	require.NoError(e.t, err)
	var out []string
	for rows.Next() {
		var s string
		require.NoError(e.t, rows.Scan(&s))
		out = append(out, s)
	}
	require.NoError(e.t, rows.Err())
	return out
}

// caughtUp reports whether a version's checkpoints equal the high watermarks.
func (e *env) caughtUp(key string) bool {
	ends := e.kafka.EndOffsets(topic)
	rows, err := e.db.Query(context.Background(), "SELECT partition, next_offset FROM kreplay.checkpoints WHERE version = $1 AND topic = $2", key, topic)
	if err != nil {
		return false
	}
	got := map[int32]int64{}
	for rows.Next() {
		var p int32
		var o int64
		if rows.Scan(&p, &o) != nil {
			return false
		}
		got[p] = o
	}
	return rows.Err() == nil && maps.Equal(got, ends)
}

var eventually = testkit.Eventually

// exact checks every running version of the bank projection(s) against the log: balances (and
// event counts where the table has them) equal the values computed from the events, every
// checkpoint equals the high watermark, and the live views all point at the live version.
func (e *env) exact(tables map[string]string) bool {
	e.t.Helper()
	want, counts, total := e.expected()
	ok := true
	for _, key := range e.strings("SELECT key FROM kreplay.versions WHERE state IN ('live', 'replaying', 'tailing', 'retired') ORDER BY key") {
		eventually(e.t, 120*time.Second, func() bool { return e.caughtUp(key) }, "%s did not catch up", key)
		proj := e.strings("SELECT projection FROM kreplay.versions WHERE key = $1", key)[0]
		table := tables[proj]
		got := map[string]int64{}
		gotCounts := map[string]int64{}
		hasCounts := e.scalar(`SELECT count(*) FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 AND column_name = 'events'`, key, table) == 1
		cols := "account_id, total, 0"
		if hasCounts {
			cols = "account_id, total, events"
		}
		rows, err := e.db.Query(context.Background(), fmt.Sprintf("SELECT %s FROM %s.%s", cols, key, table))
		require.NoError(e.t, err)
		for rows.Next() {
			var a string
			var v, n int64
			require.NoError(e.t, rows.Scan(&a, &v, &n))
			got[a], gotCounts[a] = v, n
		}
		require.NoError(e.t, rows.Err())
		if !equalMaps(want, got) {
			e.t.Errorf("%s: balances differ from the log", key)
			ok = false
		}
		if hasCounts && !equalMaps(counts, gotCounts) {
			e.t.Errorf("%s: event counts differ from the log (a duplicate or a loss)", key)
			ok = false
		}
		if applied := e.scalar("SELECT sum(applied_events) FROM kreplay.checkpoints WHERE version = $1", key); applied != int64(total) {
			e.t.Errorf("%s: %d events applied, the log has %d", key, applied, total)
			ok = false
		}
	}
	// Every live view reads its projection's live version: it selects from it alone, or it is
	// routed (store/route.go) over versions of the same shape, each branch filtered on
	// kreplay.projections.live_version.
	for _, proj := range e.strings("SELECT name FROM kreplay.projections") {
		live := e.strings("SELECT coalesce(live_version, '') FROM kreplay.projections WHERE name = $1", proj)[0]
		for _, view := range e.strings(`SELECT vw.relname || ':' || string_agg(DISTINCT n.nspname, ',' ORDER BY n.nspname)
			|| ':' || bool_or(n.nspname = 'kreplay' AND c.relname = 'projections')::text
			FROM pg_class vw JOIN pg_namespace vn ON vn.oid = vw.relnamespace AND vn.nspname = 'public'
			JOIN pg_rewrite r ON r.ev_class = vw.oid
			JOIN pg_depend d ON d.objid = r.oid AND d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
			JOIN pg_class c ON c.oid = d.refobjid AND c.oid <> r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
			LEFT JOIN kreplay.versions v ON v.key = n.nspname
			WHERE vw.relkind = 'v' AND (v.projection = $1 OR n.nspname = 'kreplay')
			GROUP BY vw.relname HAVING bool_or(v.projection = $1)`, proj) {
			parts := strings.Split(view, ":")
			schemas := slices.DeleteFunc(strings.Split(parts[1], ","), func(s string) bool { return s == "kreplay" })
			routed := parts[2] == "true"
			if !slices.Contains(schemas, live) || (len(schemas) > 1 && !routed) {
				e.t.Errorf("projection %s: the live view %s reads %v (routed: %v), but %s is live", proj, parts[0], schemas, routed, live)
				ok = false
			}
		}
	}
	return ok
}

func equalMaps(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// command sends a command and returns its outcome, or nil when none came within timeout (the
// serve executing it may have been killed).
func command(c *control.Client, timeout time.Duration, cmd control.Command) *control.Outcome {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := c.Send(ctx, cmd)
	if err != nil {
		return nil
	}
	return out
}
