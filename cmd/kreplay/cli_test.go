package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/topology"
)

// execute runs the root command with args, as main does, and returns what it printed.
func execute(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	root := newRootCommand()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	err = root.ExecuteContext(ctx)
	return out.String(), errb.String(), err
}

func TestArgumentErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"create", "stock_v2", "--projection", "stock", "--since", "yesterday"}, `--since "yesterday" is not an RFC 3339 time such as 2026-01-02T15:04:05Z`},
		{[]string{"create", "stock_v2", "--projection", "stock", "--since", "2026-01-02"}, `--since "2026-01-02" is not an RFC 3339 time`},
		{[]string{"create", "stock_v2"}, "--projection is required"},
		{[]string{"create", "--projection", "stock"}, "missing KEY: usage: kreplay create KEY --projection P"},
		{[]string{"create", "Stock-V2", "--projection", "stock"}, `invalid replay key "Stock-V2"`},
		{[]string{"create", "stock_v2", "--projection", "stock", "--topics", "a,,b"}, "--topics has an empty entry"},
		{[]string{"start"}, "missing KEY: usage: kreplay start KEY"},
		{[]string{"pause", "a", "b"}, "too many arguments (b)"},
		{[]string{"remove", "public"}, `invalid replay key "public"`},
		{[]string{"lag"}, "missing KEY"},
		{[]string{"verify"}, "missing KEY"},
		{[]string{"rollback"}, "missing PROJECTION: usage: kreplay rollback PROJECTION"},
		{[]string{"status", "a", "b"}, "too many arguments (b): status takes at most one KEY"},
		{[]string{"status", "--bogus"}, "unknown flag: --bogus (see 'kreplay status --help')"},
		{[]string{"promote", "stock_v2", "--wait", "soon"}, `invalid argument "soon" for "--wait" flag`},
		{[]string{"promote", "stock_v2", "--wait", "-1s"}, "--wait -1s: must be 0 or more"},
		{[]string{"promote", "stock_v2", "--max-lag", "-5"}, "--max-lag -5: must be 0 or more"},
		{[]string{"status", "--timeout", "0s"}, "--timeout 0s: must be positive"},
		{[]string{"status", "--log-level", "loud"}, `--log-level "loud": want debug, info, warn or error`},
		{[]string{"status", "--log-format", "xml"}, `--log-format "xml": want text or json`},
		{[]string{"status", "-o", "yaml"}, `--output "yaml": want text or json`},
		{[]string{"status", "--brokers", " "}, "--brokers is empty"},
		{[]string{"frobnicate"}, `unknown command "frobnicate" for "kreplay"`},
	} {
		stdout, stderr, err := execute(context.Background(), tc.args...)
		require.Error(t, err, "%v", tc.args)
		require.Contains(t, err.Error(), tc.want, "%v", tc.args)
		require.Empty(t, stdout, "%v: nothing on stdout", tc.args)
		require.Empty(t, stderr, "%v: the error is printed once, by main, not by cobra", tc.args)
	}
}

func TestVersionCommand(t *testing.T) {
	t.Parallel()
	stdout, _, err := execute(context.Background(), "version")
	require.NoError(t, err)
	require.Regexp(t, `^kreplay \S+.* go1\.\S+ \S+/\S+\n$`, stdout)
	stdout, _, err = execute(context.Background(), "version", "-o", "json")
	require.NoError(t, err)
	require.Contains(t, stdout, `"go": "go1.`)
}

// loadWith runs a probe command under a fresh root with args and returns the config it loads.
func loadWith(t *testing.T, need configNeed, args ...string) (*topology.Config, error) {
	t.Helper()
	a := &app{}
	root := a.rootCommand()
	var cfg *topology.Config
	root.AddCommand(&cobra.Command{Use: "probe", RunE: func(cmd *cobra.Command, _ []string) error {
		var err error
		cfg, err = a.config(cmd, need)
		return err
	}})
	root.SetOut(&bytes.Buffer{})
	root.SetErr(&bytes.Buffer{})
	root.SetArgs(append([]string{"probe"}, args...))
	err := root.Execute()
	return cfg, err
}

// clearEnv unsets the variables config loading reads and moves to an empty directory, so that
// the developer's environment or a kreplay.yaml cannot leak into a test.
func clearEnv(t *testing.T) string {
	t.Helper()
	for _, k := range []string{"KREPLAY_CONFIG", "KREPLAY_BROKERS", "KREPLAY_DATABASE_URL", "DATABASE_URL", "KREPLAY_CONTROL_SECRET", "KREPLAY_KAFKA_PASSWORD"} {
		t.Setenv(k, "")
	}
	dir := t.TempDir()
	t.Chdir(dir)
	return dir
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

const fileKafka = `kafka:
  brokers: ["file:9092"]
postgres:
  url: postgres://file/db
control:
  secret: from-file
`

func TestConfigPrecedence(t *testing.T) {
	dir := clearEnv(t)
	full := writeFile(t, filepath.Join(dir, "full.yaml"), fileKafka+bankgen.Config("bank.accounts", 4, "global", false))
	writeFile(t, filepath.Join(dir, "kreplay.yaml"), fileKafka)

	// Default file (./kreplay.yaml) < environment < flags, for every kind of command.
	for _, need := range []configNeed{needFile, needDatabase, needKafka} {
		args := []string{}
		if need == needFile {
			args = []string{"-c", full} // serve needs projections
		}
		cfg, err := loadWith(t, need, args...)
		require.NoError(t, err)
		require.Equal(t, []string{"file:9092"}, cfg.Kafka.Brokers)
		require.Equal(t, "postgres://file/db", cfg.Postgres.URL)
		require.Equal(t, "from-file", cfg.Control.Secret)
		require.Equal(t, "kreplay.status", cfg.Kafka.StatusTopic, "defaults fill the rest")

		t.Setenv("KREPLAY_BROKERS", "env1:9092, env2:9092")
		t.Setenv("DATABASE_URL", "postgres://generic-env/db")
		t.Setenv("KREPLAY_CONTROL_SECRET", "from-env")
		cfg, err = loadWith(t, need, args...)
		require.NoError(t, err)
		require.Equal(t, []string{"env1:9092", "env2:9092"}, cfg.Kafka.Brokers)
		require.Equal(t, "postgres://generic-env/db", cfg.Postgres.URL)
		require.Equal(t, "from-env", cfg.Control.Secret)

		t.Setenv("KREPLAY_DATABASE_URL", "postgres://kreplay-env/db")
		cfg, err = loadWith(t, need, args...)
		require.NoError(t, err)
		require.Equal(t, "postgres://kreplay-env/db", cfg.Postgres.URL, "KREPLAY_DATABASE_URL before DATABASE_URL")

		cfg, err = loadWith(t, need, append(args, "--brokers", "flag:9092,flag2:9092", "--database-url", "postgres://flag/db")...)
		require.NoError(t, err)
		require.Equal(t, []string{"flag:9092", "flag2:9092"}, cfg.Kafka.Brokers)
		require.Equal(t, "postgres://flag/db", cfg.Postgres.URL)
		require.Equal(t, "from-env", cfg.Control.Secret)

		for _, k := range []string{"KREPLAY_BROKERS", "DATABASE_URL", "KREPLAY_DATABASE_URL", "KREPLAY_CONTROL_SECRET"} {
			t.Setenv(k, "")
		}
	}

	// KREPLAY_CONFIG names the file; -c beats it.
	other := writeFile(t, filepath.Join(dir, "other.yaml"), "kafka:\n  brokers: [\"other:9092\"]\n")
	t.Setenv("KREPLAY_CONFIG", other)
	cfg, err := loadWith(t, needKafka)
	require.NoError(t, err)
	require.Equal(t, []string{"other:9092"}, cfg.Kafka.Brokers)
	cfg, err = loadWith(t, needKafka, "--config", filepath.Join(dir, "kreplay.yaml"))
	require.NoError(t, err)
	require.Equal(t, []string{"file:9092"}, cfg.Kafka.Brokers)
}

func TestConfigWithoutFile(t *testing.T) {
	dir := clearEnv(t)

	// Clients: no file is fine; the defaults and the environment apply, without the full
	// validation (which wants projections).
	cfg, err := loadWith(t, needKafka)
	require.NoError(t, err)
	require.Equal(t, []string{"127.0.0.1:9092"}, cfg.Kafka.Brokers)
	require.Equal(t, "kreplay.control", cfg.Kafka.ControlTopic)
	t.Setenv("KREPLAY_BROKERS", "embedded")
	cfg, err = loadWith(t, needKafka)
	require.NoError(t, err)
	require.Equal(t, []string{"embedded"}, cfg.Kafka.Brokers)
	t.Setenv("KREPLAY_BROKERS", " , ") // set, but no broker: refused, not read as the default
	_, err = loadWith(t, needKafka)
	require.EqualError(t, err, `KREPLAY_BROKERS " , " names no broker; set it to host:port[,host:port...] or unset it`)
	t.Setenv("KREPLAY_BROKERS", "")

	// ...but a file named explicitly must exist.
	_, err = loadWith(t, needKafka, "-c", filepath.Join(dir, "missing.yaml"))
	require.ErrorContains(t, err, `config file "`+filepath.Join(dir, "missing.yaml")+`" not found`)
	t.Setenv("KREPLAY_CONFIG", filepath.Join(dir, "missing.yaml"))
	_, err = loadWith(t, needKafka)
	require.ErrorContains(t, err, "not found")
	t.Setenv("KREPLAY_CONFIG", "")

	// serve needs the file.
	_, err = loadWith(t, needFile)
	require.ErrorContains(t, err, `config file "kreplay.yaml" not found; pass --config or set KREPLAY_CONFIG`)

	// migrate needs a database URL: from the flag or the environment without a file.
	_, err = loadWith(t, needDatabase)
	require.ErrorContains(t, err, "no database: config file \"kreplay.yaml\" not found and no --database-url, KREPLAY_DATABASE_URL or DATABASE_URL")
	cfg, err = loadWith(t, needDatabase, "--database-url", "postgres://flag/db")
	require.NoError(t, err)
	require.Equal(t, "postgres://flag/db", cfg.Postgres.URL)
	t.Setenv("DATABASE_URL", "postgres://env/db")
	cfg, err = loadWith(t, needDatabase)
	require.NoError(t, err)
	require.Equal(t, "postgres://env/db", cfg.Postgres.URL)
}

func TestConfigErrorsNameTheFile(t *testing.T) {
	dir := clearEnv(t)
	bad := writeFile(t, filepath.Join(dir, "bad.yaml"), "kafka:\n  brokerz: [x]\n")
	_, err := loadWith(t, needKafka, "-c", bad)
	require.ErrorContains(t, err, bad+":")
	require.ErrorContains(t, err, "brokerz")

	// A file with projections is serve's file: clients validate it in full too.
	invalid := writeFile(t, filepath.Join(dir, "invalid.yaml"), "projections:\n  - name: balances\n")
	_, err = loadWith(t, needKafka, "-c", invalid)
	require.ErrorContains(t, err, invalid+`: projection "balances": sources: none`)

	// serve with --brokers embedded alongside a file that lists brokers: the flag wins, and the
	// result is validated.
	full := writeFile(t, filepath.Join(dir, "full.yaml"), fileKafka+bankgen.Config("bank.accounts", 4, "global", false))
	cfg, err := loadWith(t, needFile, "-c", full, "--brokers", "embedded")
	require.NoError(t, err)
	require.Equal(t, []string{"embedded"}, cfg.Kafka.Brokers)
	_, err = loadWith(t, needFile, "-c", full, "--brokers", "embedded,other:9092")
	require.ErrorContains(t, err, `"embedded" must be the only entry`)
}
