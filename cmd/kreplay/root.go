package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/topology"
)

// app is what every command shares: the global flags, the logger and the config loading.
type app struct {
	configPath  string
	brokers     string
	databaseURL string
	logLevel    string
	logFormat   string
	output      string

	level  slog.Level
	logger *slog.Logger
}

// newRootCommand builds the whole command tree. Each call returns a fresh tree with fresh
// flags, so that tests can run several commands in one process.
func newRootCommand() *cobra.Command { return (&app{}).rootCommand() }

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "kreplay",
		Short: "Rebuild event-sourced read models in PostgreSQL from Kafka with zero downtime",
		Long: `kreplay keeps projections (read models) in PostgreSQL fed from Kafka topics, and
rebuilds them with zero downtime: a replay builds a new version beside the live
one, catches up, keeps tailing, is verified, and is promoted by atomically
repointing the views that readers query. The old version stays fed for instant
rollback until it is removed.

"kreplay serve" runs the processor. The other commands are clients: they publish
commands on the control topic and read status from the status topic, so they
need only Kafka.`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return a.prepare(cmd) },
	}
	defaultConfig := os.Getenv("KREPLAY_CONFIG")
	if defaultConfig == "" {
		defaultConfig = "kreplay.yaml"
	}
	pf := root.PersistentFlags()
	pf.StringVarP(&a.configPath, "config", "c", defaultConfig, "config file (env KREPLAY_CONFIG)")
	pf.StringVar(&a.brokers, "brokers", "", `Kafka seed brokers, comma-separated, or "embedded" (overrides the config and KREPLAY_BROKERS)`)
	pf.StringVar(&a.databaseURL, "database-url", "", "PostgreSQL URL (overrides the config, KREPLAY_DATABASE_URL and DATABASE_URL)")
	pf.StringVar(&a.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	pf.StringVar(&a.logFormat, "log-format", "text", "log format: text or json")
	pf.StringVarP(&a.output, "output", "o", "text", "output format: text or json")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return fmt.Errorf("%w (see '%s --help')", err, cmd.CommandPath())
	})

	root.AddCommand(
		a.serveCommand(),
		a.migrateCommand(),
		a.validateCommand(),
		a.createCommand(),
		a.transitionCommand("start", "Start a created replay: consume from offset zero (or --since), then tail"),
		a.transitionCommand("pause", "Pause a running version on every instance"),
		a.transitionCommand("resume", "Resume a paused version (or retry a failed one at the event it failed on)"),
		a.transitionCommand("remove", "Stop a version, drop its schema and consumer group (refused for the live version)"),
		a.statusCommand(),
		a.lagCommand(),
		a.verifyCommand(),
		a.promoteCommand(),
		a.rollbackCommand(),
		a.cancelCommand(),
		a.versionCommand(),
		a.demoCommand(),
	)
	return root
}

// prepare checks the global flags and builds the logger; it runs before every command.
func (a *app) prepare(cmd *cobra.Command) error {
	switch strings.ToLower(a.logLevel) {
	case "debug":
		a.level = slog.LevelDebug
	case "info":
		a.level = slog.LevelInfo
	case "warn", "warning":
		a.level = slog.LevelWarn
	case "error":
		a.level = slog.LevelError
	default:
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", a.logLevel)
	}
	if a.logFormat != "text" && a.logFormat != "json" {
		return fmt.Errorf("--log-format %q: want text or json", a.logFormat)
	}
	if a.output != "text" && a.output != "json" {
		return fmt.Errorf("--output %q: want text or json", a.output)
	}
	for _, f := range []string{"brokers", "database-url", "config"} {
		if cmd.Flags().Changed(f) && strings.TrimSpace(cmd.Flag(f).Value.String()) == "" {
			return fmt.Errorf("--%s is empty; give a value or leave the flag out", f)
		}
	}
	a.logger = newLogger(cmd.ErrOrStderr(), a.level, a.logFormat)
	return nil
}

func newLogger(w io.Writer, level slog.Level, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// kafkaLogger is the logger of the CLI's Kafka client. franz-go logs its routine at info and
// each failed dial at warn, which for a one-shot command only repeats the error it returns, so
// it logs errors only unless --log-level is debug.
func (a *app) kafkaLogger(cmd *cobra.Command) *slog.Logger {
	if a.level <= slog.LevelDebug {
		return a.logger
	}
	return newLogger(cmd.ErrOrStderr(), max(a.level, slog.LevelError), a.logFormat)
}

func (a *app) json() bool { return a.output == "json" }

// configNeed is how much of the config file a command needs.
type configNeed int

const (
	// needFile: the whole file, validated (serve).
	needFile configNeed = iota
	// needDatabase: a database URL, from the file or, without one, --database-url or the
	// environment (migrate).
	needDatabase
	// needKafka: the Kafka settings; the file is optional unless named explicitly (clients).
	needKafka
)

// config loads the config for a command. Precedence, highest first: --brokers and
// --database-url, the environment (KREPLAY_BROKERS, KREPLAY_DATABASE_URL, DATABASE_URL,
// KREPLAY_CONTROL_SECRET, KREPLAY_KAFKA_PASSWORD), the file, the defaults. A file with
// projections is validated in full whatever the command, since it is serve's file; one
// without (a client's file, with just kafka: and control:) only needs brokers.
func (a *app) config(cmd *cobra.Command, need configNeed) (*topology.Config, error) {
	getenv := a.getenv(cmd)
	path := a.configPath
	explicit := cmd.Flags().Changed("config") || os.Getenv("KREPLAY_CONFIG") != ""
	if need == needFile {
		return topology.Load(path, getenv)
	}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && explicit:
		return nil, fmt.Errorf("config file %q not found; fix --config or KREPLAY_CONFIG, or leave both unset to use only flags and the environment", path)
	case errors.Is(err, fs.ErrNotExist):
		cfg := &topology.Config{}
		cfg.ApplyEnv(getenv)
		if need == needDatabase && cfg.Postgres.URL == "" {
			return nil, fmt.Errorf("no database: config file %q not found and no --database-url, KREPLAY_DATABASE_URL or DATABASE_URL", path)
		}
		cfg.SetDefaults()
		return cfg, clientChecks(cfg)
	case err != nil:
		return nil, fmt.Errorf("read config file: %w", err)
	}
	cfg, err := topology.Parse(data)
	if err != nil {
		return nil, topology.PrefixErrors(path, err)
	}
	cfg.ApplyEnv(getenv)
	cfg.SetDefaults()
	if len(cfg.Projections) > 0 {
		if err := cfg.Validate(); err != nil {
			return nil, topology.PrefixErrors(path, err)
		}
		return cfg, nil
	}
	if err := clientChecks(cfg); err != nil {
		return nil, topology.PrefixErrors(path, err)
	}
	return cfg, nil
}

// clientChecks are the checks of a config without projections: what a client uses of it.
func clientChecks(cfg *topology.Config) error {
	if err := cfg.EnvError(); err != nil {
		return err
	}
	if err := topology.ValidateInstallation(cfg.Installation); err != nil {
		return err
	}
	for _, b := range cfg.Kafka.Brokers {
		if strings.TrimSpace(b) == "" {
			return errors.New("kafka.brokers has a blank entry; write host:port")
		}
	}
	if len(cfg.Kafka.Brokers) > 1 {
		for _, b := range cfg.Kafka.Brokers {
			if b == "embedded" {
				return fmt.Errorf(`kafka.brokers: "embedded" must be the only entry (got %q)`, cfg.Kafka.Brokers)
			}
		}
	}
	return nil
}

// getenv is the environment with --brokers and --database-url laid over it, so that
// topology's ApplyEnv gives flags precedence over the environment and the file.
func (a *app) getenv(cmd *cobra.Command) func(string) string {
	brokersSet := cmd.Flags().Changed("brokers")
	dbSet := cmd.Flags().Changed("database-url")
	return func(key string) string {
		switch {
		case key == "KREPLAY_BROKERS" && brokersSet:
			return a.brokers
		case key == "KREPLAY_DATABASE_URL" && dbSet:
			return a.databaseURL
		}
		return os.Getenv(key)
	}
}

// client connects the operator client of a command (Kafka only).
func (a *app) client(cmd *cobra.Command) (*control.Client, *topology.Config, error) {
	cfg, err := a.config(cmd, needKafka)
	if err != nil {
		return nil, nil, err
	}
	cl, err := a.newClient(cmd, cfg)
	return cl, cfg, err
}

func (a *app) newClient(cmd *cobra.Command, cfg *topology.Config) (*control.Client, error) {
	cl, err := control.NewClient(cfg, a.kafkaLogger(cmd))
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return cl, nil
}

// argNamed is an Args validator for commands that take exactly one named argument.
func argNamed(name string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) == 0:
			return fmt.Errorf("missing %s: usage: %s", name, cmd.UseLine())
		case len(args) > 1:
			return fmt.Errorf("too many arguments (%s): %s takes one %s", strings.Join(args[1:], " "), cmd.CommandPath(), name)
		}
		return nil
	}
}

// keyArg checks a replay key argument locally, so that a typo is caught before anything is sent.
func keyArg(cmd *cobra.Command, args []string) error {
	if err := argNamed("KEY")(cmd, args); err != nil {
		return err
	}
	return topology.ValidateKey(args[0])
}

// addTimeout adds --timeout to a command.
func addTimeout(cmd *cobra.Command, d *time.Duration, def time.Duration, what string) {
	cmd.Flags().DurationVar(d, "timeout", def, what)
}
