package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kreplay/kreplay/store"
)

func (a *app) migrateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Create or upgrade the catalog (schema kreplay) in PostgreSQL",
		Long: `Apply the catalog migrations embedded in this binary that the database has not
had yet. It is idempotent; serve runs it at start too. It needs a database URL:
from the config file, --database-url, KREPLAY_DATABASE_URL or DATABASE_URL.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.config(cmd, needDatabase)
			if err != nil {
				return err
			}
			s, err := store.Open(cmd.Context(), store.Config{
				URL: cfg.Postgres.URL, LiveSchema: cfg.Postgres.LiveSchema, MaxConns: 2,
				LockTimeout: cfg.Postgres.LockTimeout, ReaderRole: cfg.Postgres.ReaderRole,
				ApplicationName: "kreplay-migrate",
			}, a.logger)
			if err != nil {
				return err
			}
			defer s.Close()
			applied, err := s.Migrate(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				if applied == nil {
					applied = []int{}
				}
				return writeJSON(cmd.OutOrStdout(), map[string]any{"applied": applied})
			}
			if len(applied) == 0 {
				_, err = fmt.Fprintln(cmd.OutOrStdout(), "catalog is up to date")
				return err
			}
			nums := make([]string, len(applied))
			for i, v := range applied {
				nums[i] = strconv.Itoa(v)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "catalog migrated: applied %s\n", strings.Join(nums, ", "))
			return err
		},
	}
}
