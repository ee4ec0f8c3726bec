package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/kreplay/kreplay/processor/control"
)

func (a *app) cancelCommand() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "cancel COMMAND-ID",
		Short: "Cancel a command that serve has not started yet",
		Long: `Cancel the command COMMAND-ID (the id the CLI printed when it gave up waiting,
or an outcome's command_id) if serve has not started it. serve reads commands in
order; before it starts one, it looks at what it has read past it, and a cancel
there means the command is not run: its outcome says canceled.

The cancel succeeds when the command will not run (canceled, or expired) and is
refused when it ran already or is running, or when serve has read no command
with that id before the cancel.`,
		Example: `  kreplay cancel 3f2a9c0d1e4b5a6978c0d1e2`,
		Args:    commandIDArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			opts, err := json.Marshal(control.CancelOptions{CommandID: id})
			if err != nil {
				return err
			}
			c := control.Command{Command: "cancel", Options: opts}
			return a.send(cmd, timeout, c, func(w io.Writer, o *control.Outcome) error {
				var rep control.CancelReport
				if len(o.Result) == 0 || json.Unmarshal(o.Result, &rep) != nil {
					_, err := fmt.Fprintf(w, "canceled %s\n", id)
					return err
				}
				_, err := fmt.Fprintln(w, cancelLine(o.CommandID, rep))
				return err
			})
		},
	}
	addTimeout(cmd, &timeout, defaultSendTimeout, sendTimeoutHelp)
	return cmd
}

// cancelLine is the human outcome of a successful cancel (whose own id is cancelID):
//
//	canceled 3f2a... (start balances_v2) before it ran
//	3f2a... (start balances_v2) had expired: it was not run
func cancelLine(cancelID string, r control.CancelReport) string {
	what := r.CommandID + " (" + control.Describe(&control.Command{Command: r.Command, Replay: r.Replay, Projection: r.Projection}) + ")"
	switch {
	case r.State == "expired":
		return what + " had expired: it was not run"
	case r.CanceledBy != "" && r.CanceledBy != cancelID:
		return what + " was canceled already, by " + r.CanceledBy + ": it was not run"
	}
	return "canceled " + what + " before it ran"
}

// commandIDArg checks a command id argument locally.
func commandIDArg(cmd *cobra.Command, args []string) error {
	if err := argNamed("COMMAND-ID")(cmd, args); err != nil {
		return err
	}
	id := args[0]
	switch {
	case strings.TrimSpace(id) == "":
		return fmt.Errorf("COMMAND-ID is empty: usage: %s", cmd.UseLine())
	case len(id) > 200:
		return fmt.Errorf("COMMAND-ID of %d bytes is too long (max 200)", len(id))
	case strings.IndexFunc(id, unicode.IsControl) >= 0:
		return fmt.Errorf("COMMAND-ID %q holds a control character", id)
	}
	return nil
}
