package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"
)

// The README's CLI reference names every flag of every command (with its short form), and each
// flag's help shows one default at most.
func TestREADMEDocumentsEveryFlag(t *testing.T) {
	t.Parallel()
	doc := readmeSection(t, "## CLI\n")
	root := newRootCommand()
	check := func(cmd *cobra.Command, f *pflag.Flag) {
		if f.Name == "help" {
			return
		}
		name := cmd.Name() + " --" + f.Name
		require.True(t, strings.Contains(doc, "--"+f.Name), "README's CLI reference does not mention %s", name)
		if f.Shorthand != "" {
			require.True(t, strings.Contains(doc, "-"+f.Shorthand+"/--"+f.Name), "README's CLI reference does not give %s's short form -%s", name, f.Shorthand)
		}
	}
	root.PersistentFlags().VisitAll(func(f *pflag.Flag) { check(root, f) })
	for _, cmd := range root.Commands() {
		cmd.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) { check(cmd, f) })
		require.Regexp(t, `(?m)^kreplay (.* )?`+cmd.Name()+`\b`, doc, "README's CLI reference lacks %s", cmd.Name())
		for _, line := range strings.Split(cmd.LocalNonPersistentFlags().FlagUsages(), "\n") {
			require.LessOrEqual(t, strings.Count(line, "(default"), 1, "kreplay %s --help shows two defaults: %s", cmd.Name(), line)
		}
	}
}

// readmeSection is the README from the heading to the next one.
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	doc := string(readme)
	i := strings.Index(doc, heading)
	require.GreaterOrEqual(t, i, 0, "README has no %q", heading)
	doc = doc[i+len(heading):]
	if j := strings.Index(doc, "\n## "); j >= 0 {
		doc = doc[:j]
	}
	return doc
}

func helpOf(t *testing.T, args ...string) string {
	t.Helper()
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append(args, "--help"))
	require.NoError(t, root.Execute())
	return out.String()
}

func TestHelpDefaults(t *testing.T) {
	t.Parallel()
	require.Regexp(t, `--timeout duration +the command's deadline: serve starts it within this time or never; the CLI waits for the outcome as long \(default --wait \+ 1m0s\)\n`, helpOf(t, "promote"))
	require.Regexp(t, `--timeout duration +.*\(default 3m0s\)\n`, helpOf(t, "verify"))
	require.Regexp(t, `--timeout duration +.*\(default 10s\)\n`, helpOf(t, "status"))
	require.Regexp(t, `--timeout duration +.*\(default 10s\)\n`, helpOf(t, "lag"))
	require.Regexp(t, `--timeout duration +.*\(default 1m0s\)\n`, helpOf(t, "create"))
	require.Regexp(t, `--shutdown-timeout duration +.*\(default 15s\)\n`, helpOf(t, "serve"))
}

// serve --help and the README name every path of the HTTP API.
func TestServeHelpListsTheHTTPPaths(t *testing.T) {
	t.Parallel()
	doc := readmeSection(t, "## Observability\n")
	help := helpOf(t, "serve")
	for _, path := range []string{"/metrics", "/healthz", "/readyz", "/api/replays", "/api/assignments"} {
		require.Contains(t, help, path)
		require.True(t, strings.Contains(doc, "`"+path+"`"), "README's Observability does not name %s", path)
	}
}
