package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// binEnv is the environment of the binary's processes: the test's, without the variables
// that would override the config file.
func binEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "KREPLAY_CONFIG", "KREPLAY_BROKERS", "KREPLAY_DATABASE_URL", "DATABASE_URL", "KREPLAY_CONTROL_SECRET", "KREPLAY_KAFKA_PASSWORD":
			continue
		}
		out = append(out, kv)
	}
	return out
}

// run runs the kreplay binary with the test's config and returns its output and exit code.
func (e *env) run(args ...string) (stdout, stderr string, code int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, append(args, "-c", e.config)...)
	cmd.Env = binEnv()
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		e.t.Fatalf("run kreplay %s: %v", strings.Join(args, " "), err)
	}
	e.t.Logf("$ kreplay %s  (exit %d)\n%s%s", strings.Join(args, " "), code, out.String(), errb.String())
	return out.String(), errb.String(), code
}

// mustRun runs a command of the binary that must exit 0 and returns its stdout.
func (e *env) mustRun(args ...string) string {
	e.t.Helper()
	stdout, stderr, code := e.run(args...)
	require.Equal(e.t, 0, code, "kreplay %s: %s", strings.Join(args, " "), stderr)
	return stdout
}

func TestBinaryEndToEnd(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.produce(1000)

	serve := exec.Command(binary, "serve", "-c", e.config)
	serve.Env = binEnv()
	logs := &syncBuffer{}
	serve.Stdout, serve.Stderr = logs, logs
	require.NoError(t, serve.Start())
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait() }()
	t.Cleanup(func() {
		if serve.ProcessState == nil {
			_ = serve.Process.Kill()
			<-exited //nolint:errcheck // killed on purpose
		}
	})

	eventually(t, 45*time.Second, func() (bool, string) {
		stdout, stderr, code := e.run("status", "-o", "json", "--timeout", "2s")
		if code != 0 {
			return false, stderr
		}
		v1 := decodeStatuses(t, stdout)["balances_v1"]
		return v1 != nil && v1.num("applied_events") == 1000 && v1.num("lag_events") == 0, stdout
	})
	require.Regexp(t, `(?m)^balances_v1\s+balances\s+live\s+yes\s+1,000\s+-\s+-\s+0\s`, e.mustRun("status"))

	out := e.mustRun("create", "balances_v2", "--projection", "balances", "--start")
	require.Regexp(t, `^created balances_v2 \(projection balances\): (replaying|tailing)\n$`, out)

	// A rejected command: exit 1, the reason printed once on stderr, nothing on stdout.
	stdout, stderr, code := e.run("create", "balances_v2", "--projection", "balances")
	require.Equal(t, 1, code)
	require.Empty(t, stdout)
	require.Regexp(t, `^kreplay: create balances_v2: the key is already used by a version of balances \(state (replaying|tailing)\); choose another key, such as balances_v3\n$`, stderr)
	stdout, stderr, code = e.run("start", "nosuch")
	require.Equal(t, 1, code)
	require.Empty(t, stdout)
	require.Equal(t, "kreplay: unknown replay \"nosuch\"\n", stderr)
	_, stderr, code = e.run("create", "balances_v3", "--projection", "balances", "--since", "last tuesday")
	require.Equal(t, 1, code)
	require.Equal(t, "kreplay: --since \"last tuesday\" is not an RFC 3339 time such as 2026-01-02T15:04:05Z or 2026-01-02T15:04:05+01:00\n", stderr)

	out = e.mustRun("status", "balances_v2", "--watch")
	require.Contains(t, out, "balances_v2 tailing")

	e.produce(200)
	out = e.mustRun("promote", "balances_v2", "--wait", "30s")
	require.Regexp(t, `^promoted balances_v2: live \(balances_v1 retired, `, out)
	require.Equal(t, "rolled back balances: balances_v1 is live", strings.SplitN(e.mustRun("rollback", "balances"), " (", 2)[0])
	require.Equal(t, "removed balances_v2\n", e.mustRun("remove", "balances_v2"))
	eventually(t, 20*time.Second, func() (bool, string) {
		out := e.mustRun("status", "-o", "json")
		v1 := decodeStatuses(t, out)["balances_v1"]
		return v1 != nil && v1.num("applied_events") == 1200 && v1.str("state") == "live", out
	})
	require.Equal(t, e.bank.Balances(), e.liveBalances())

	// SIGTERM: a graceful shutdown, exit 0.
	require.NoError(t, serve.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		require.NoError(t, err, "serve's exit after SIGTERM; logs:\n%s", logs.String())
		require.Equal(t, 0, serve.ProcessState.ExitCode())
	case <-time.After(20 * time.Second):
		t.Fatalf("serve did not exit within 20s of SIGTERM; logs:\n%s", logs.String())
	}
	require.Contains(t, logs.String(), "kreplay stopped")
}

// proc is a kreplay process that runs beside the test: a serve, or a client that waits.
type proc struct {
	t              *testing.T
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan struct{}
}

// spawn starts the binary with the test's config and args; it is killed at the end of the test
// if it still runs.
func (e *env) spawn(args ...string) *proc {
	e.t.Helper()
	p := &proc{t: e.t, cmd: exec.Command(binary, append(args, "-c", e.config)...), stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = binEnv()
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	require.NoError(e.t, p.cmd.Start())
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	e.t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if e.t.Failed() {
			e.t.Logf("$ kreplay %s\n%s%s", strings.Join(args, " "), p.stdout.String(), p.stderr.String())
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		p.t.Fatalf("kreplay %s did not exit within %s\n%s%s", strings.Join(p.cmd.Args[1:], " "), timeout, p.stdout.String(), p.stderr.String())
		return -1
	}
}

// startServe runs `kreplay serve` with args and waits until it serves (set up, consuming).
func (e *env) startServe(args ...string) *proc {
	e.t.Helper()
	s := e.spawn(append([]string{"serve"}, args...)...)
	eventually(e.t, 60*time.Second, func() (bool, string) {
		if s.exited() {
			e.t.Fatalf("serve exited at start (exit %d):\n%s", s.cmd.ProcessState.ExitCode(), s.stderr.String())
		}
		return strings.Contains(s.stderr.String(), `msg="kreplay serving"`), "serve is not serving yet"
	})
	return s
}

// stop sends SIGTERM to a serve and waits for its clean exit.
func (p *proc) stop() {
	p.t.Helper()
	require.NoError(p.t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(p.t, 0, p.wait(30*time.Second), "serve's exit after SIGTERM:\n%s", p.stderr.String())
}

// metric is the sum of a serve's /metrics samples of name whose line contains match.
func (p *proc) metric(name, match string) float64 {
	p.t.Helper()
	addr := ""
	for _, line := range strings.Split(p.stderr.String(), "\n") {
		if strings.Contains(line, `msg="http listening"`) {
			for _, f := range strings.Fields(line) {
				if a, ok := strings.CutPrefix(f, "addr="); ok {
					addr = a
				}
			}
		}
	}
	require.NotEmpty(p.t, addr, "serve logged no HTTP address")
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(p.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(p.t, err)
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, name) && strings.Contains(line, match) {
			v, err := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
			require.NoError(p.t, err, line)
			sum += v
		}
	}
	return sum
}
