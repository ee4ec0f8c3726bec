package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kreplay/kreplay/store"
)

func (a *app) validateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "validate",
		Short: "Check a config file (for CI): offline, or against PostgreSQL with --database-url",
		Long: `Check the config file as serve would, and exit 1 naming every problem: its shape
(unknown keys, wrong types, with line numbers), then its values (names, references
between sources and projections, handler arguments).

With --database-url, also check every projection against that PostgreSQL, as serve
does before it starts: the tables are created in a scratch schema, every handler,
fold and check is prepared there, and the transaction is rolled back. Nothing is
written and no catalog is needed. Without it, nothing connects anywhere.`,
		Example: `  kreplay validate -c kreplay.yaml
  kreplay validate -c kreplay.yaml --database-url postgres://ci@db:5432/app`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.config(cmd, needFile)
			if err != nil {
				return err
			}
			online := cmd.Flags().Changed("database-url")
			type projection struct {
				Name           string `json:"name"`
				DefinitionHash string `json:"definition_hash"`
			}
			var out []projection
			var errs []string
			var st *store.Store
			if online {
				st, err = store.Open(cmd.Context(), store.Config{URL: cfg.Postgres.URL, LiveSchema: cfg.Postgres.LiveSchema, MaxConns: 2,
					ApplicationName: "kreplay-validate"}, a.logger)
				if err != nil {
					return err
				}
				defer st.Close()
				if err := st.Ping(cmd.Context()); err != nil {
					return fmt.Errorf("postgres: %w", err)
				}
			}
			for _, pc := range cfg.Projections {
				def, err := cfg.Definition(pc.Name)
				if err == nil && online {
					err = st.ValidateDefinition(cmd.Context(), def)
				}
				if err != nil {
					errs = append(errs, err.Error())
					continue
				}
				out = append(out, projection{Name: pc.Name, DefinitionHash: def.Hash()})
			}
			if len(errs) > 0 {
				return fmt.Errorf("config %s refused:\n%s", a.configPath, strings.Join(errs, "\n"))
			}
			if out == nil {
				out = []projection{}
			}
			if a.json() {
				return writeJSON(cmd.OutOrStdout(), map[string]any{"ok": true, "checked_against_postgres": online, "projections": out})
			}
			w := cmd.OutOrStdout()
			where := "offline (pass --database-url to prepare the handlers against PostgreSQL too)"
			if online {
				where = "and prepared against PostgreSQL"
			}
			fmt.Fprintf(w, "config %s is valid, %s\n", a.configPath, where)
			for _, p := range out {
				fmt.Fprintf(w, "  projection %s: definition %s\n", p.Name, p.DefinitionHash)
			}
			return nil
		},
	}
}
