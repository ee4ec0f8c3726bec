package main

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/kreplay/kreplay/processor"
)

func (a *app) serveCommand() *cobra.Command {
	var (
		shutdown time.Duration
		takeOver bool
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the processor: live projections, replays, the control topic and HTTP",
		Long: `Run the processor until SIGINT or SIGTERM: it migrates the catalog, keeps every
running version of every projection applied from Kafka into PostgreSQL, executes
the commands of the control topic, publishes status and serves /metrics,
/healthz, /readyz, /api/replays and /api/assignments on http.listen.

Instances with the same config share the work. One of them, the leader (the
holder of a PostgreSQL advisory lock), reads the control topic, executes the
commands and publishes the statuses; another takes over when it goes.

Its catalog (database) must be the one that holds the control and status topics:
serve refuses to start when another installation's catalog announced itself
there, and stops when another takes them over. Installations that share a Kafka
cluster need names of their own (installation: in the config file). For an
installation whose predecessor on these topics is gone for good (its database
dropped), --take-over takes the topics over.

On SIGTERM it finishes the batches in flight, commits, leaves its consumer
groups and exits 0. It needs the whole config file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.config(cmd, needFile)
			if err != nil {
				return err
			}
			p := processor.New(cfg, processor.Options{Logger: a.logger, ShutdownTimeout: shutdown, TakeOver: takeOver})
			return p.Run(cmd.Context())
		},
	}
	cmd.Flags().DurationVar(&shutdown, "shutdown-timeout", 15*time.Second, "how long a batch in flight may take to finish at shutdown (or when its partitions are revoked) before it is rolled back")
	cmd.Flags().BoolVar(&takeOver, "take-over", false, "take the control and status topics from the catalog that holds them (only when that installation is gone for good)")
	return cmd
}
