package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/topology"
)

// The state-changing commands publish a command on the control topic, wait for its outcome on
// the status topic and print it; a rejected or failed command is an error (exit 1) with the
// outcome's reason as the message.

const defaultSendTimeout = 60 * time.Second

// sendTimeoutHelp is the help of --timeout on the commands that send one.
const sendTimeoutHelp = "the command's deadline: serve starts it within this time or never; the CLI waits for the outcome as long"

// deadlineMargin is how much longer than the command's deadline the CLI waits for its outcome:
// for hosts' clocks a little apart, and for a command that started just before its deadline
// to say so. A quarter of the timeout, at least 1s and at most 5s.
func deadlineMargin(timeout time.Duration) time.Duration {
	return min(5*time.Second, max(time.Second, timeout/4))
}

// send publishes c and waits up to timeout for its outcome. With -o json it prints the outcome
// as is; otherwise human prints it (for a successful outcome, or any verify outcome, whose
// report says what differs).
func (a *app) send(cmd *cobra.Command, timeout time.Duration, c control.Command, human func(io.Writer, *control.Outcome) error) error {
	cfg, err := a.config(cmd, needKafka)
	if err != nil {
		return err
	}
	return a.sendWith(cmd, cfg, timeout, c, human)
}

// sendWith is send with the config already loaded. The command's deadline is timeout from now:
// serve never starts it later (it answers expired). The CLI waits for the outcome until a
// little after the deadline (deadlineMargin); when it gives up, it says whether the command
// started (and runs on) or did not (and will not run).
func (a *app) sendWith(cmd *cobra.Command, cfg *topology.Config, timeout time.Duration, c control.Command, human func(io.Writer, *control.Outcome) error) error {
	if timeout <= 0 {
		return fmt.Errorf("--timeout %s: must be positive", timeout)
	}
	cl, err := a.newClient(cmd, cfg)
	if err != nil {
		return err
	}
	defer cl.Close()
	if c.ID == "" {
		c.ID = control.NewCommandID()
	}
	deadline := time.Now().Add(timeout).UTC()
	c.Deadline = &deadline
	ctx, cancel := context.WithDeadline(cmd.Context(), deadline.Add(deadlineMargin(timeout)))
	defer cancel()
	a.logger.Debug("publishing a command", "id", c.ID, "command", c.Command, "deadline", deadline)
	out, err := cl.Send(ctx, c)
	if err != nil {
		if cmd.Context().Err() != nil {
			return interrupted(&c, out)
		}
		return err
	}
	w := cmd.OutOrStdout()
	switch {
	case a.json():
		if err := writeJSON(w, out); err != nil {
			return err
		}
	case out.OK || c.Command == "verify":
		if err := human(w, out); err != nil {
			return err
		}
	}
	return outcomeError(out)
}

// interrupted is the error of a command whose wait was interrupted (SIGINT), started (the interim
// outcome) or not.
func interrupted(c *control.Command, started *control.Outcome) error {
	what := fmt.Sprintf("command %s (%s)", c.ID, control.Describe(c))
	if started != nil {
		return fmt.Errorf("interrupted while waiting for the outcome of %s: it started on %s at %s and runs on; see kreplay status",
			what, orDash(started.ExecutedBy), started.ExecutedAt.UTC().Format(time.RFC3339))
	}
	if c.Command == "cancel" {
		return fmt.Errorf("interrupted while waiting for the outcome of %s: it may still take effect until its deadline %s", what, c.Deadline.Format(time.RFC3339))
	}
	return fmt.Errorf("interrupted while waiting for the outcome of %s: it may still run until its deadline %s; to make sure it does not: kreplay cancel %s",
		what, c.Deadline.Format(time.RFC3339), c.ID)
}

// outcomeError is nil for a successful outcome, else its reason.
func outcomeError(o *control.Outcome) error {
	if o.OK {
		return nil
	}
	if o.Error == "" {
		return fmt.Errorf("%s failed (no reason given by %s)", o.Command, orDash(o.ExecutedBy))
	}
	return errors.New(o.Error)
}

// resultStatus decodes an outcome's result as a version status (nil when there is none).
func resultStatus(o *control.Outcome) *control.Status {
	if len(o.Result) == 0 || string(o.Result) == "null" {
		return nil
	}
	var st control.Status
	if json.Unmarshal(o.Result, &st) != nil || st.Key == "" {
		return nil
	}
	return &st
}

func (a *app) createCommand() *cobra.Command {
	var (
		opts       control.CreateOptions
		projection string
		timeout    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "create KEY --projection P",
		Short: "Create a replay: a new version of a projection in schema KEY",
		Long: `Create a replay: a new version KEY of projection P, with the projection's current
definition from serve's config, in its own schema KEY and consumer group
<installation>.P.KEY (kreplay.P.KEY by default). With --start it starts at once;
otherwise run kreplay start KEY.`,
		Example: `  kreplay create balances_v2 --projection balances --start
  kreplay create balances_v3 --projection balances --since 2026-01-01T00:00:00Z --event-types MoneyDeposited`,
		Args: keyArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(projection) == "" {
				return errors.New("--projection is required: the projection to replay, as named in serve's config")
			}
			if opts.Since != "" {
				if _, err := time.Parse(time.RFC3339Nano, opts.Since); err != nil {
					return fmt.Errorf("--since %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z or 2026-01-02T15:04:05+01:00", opts.Since)
				}
			}
			for _, f := range []struct {
				name string
				list []string
			}{{"topics", opts.Topics}, {"event-types", opts.EventTypes}} {
				for _, v := range f.list {
					if strings.TrimSpace(v) == "" {
						return fmt.Errorf("--%s has an empty entry; list names separated by commas", f.name)
					}
				}
			}
			cfg, err := a.config(cmd, needKafka)
			if err != nil {
				return err
			}
			// With the projection in this config file, serve must snapshot the same definition:
			// an instance still on the old file would otherwise replay the old one, silently.
			if def, err := cfg.Definition(projection); err == nil {
				opts.DefinitionHash = def.Hash()
			}
			raw, err := json.Marshal(opts)
			if err != nil {
				return err
			}
			c := control.Command{Command: "create", Replay: args[0], Projection: projection, Options: raw}
			return a.sendWith(cmd, cfg, timeout, c, func(w io.Writer, o *control.Outcome) error {
				st := resultStatus(o)
				switch {
				case st == nil:
					_, err = fmt.Fprintf(w, "created %s (projection %s)\n", args[0], projection)
				case st.State == "created":
					_, err = fmt.Fprintf(w, "created %s (projection %s): created; start it with: kreplay start %s\n", args[0], projection, args[0])
				default:
					_, err = fmt.Fprintf(w, "created %s (projection %s): %s\n", args[0], projection, st.State)
				}
				return err
			})
		},
	}
	f := cmd.Flags()
	f.StringVarP(&projection, "projection", "p", "", "the projection to replay (required)")
	f.StringSliceVar(&opts.Topics, "topics", nil, "only these of the projection's source topics (comma-separated)")
	f.StringVar(&opts.Since, "since", "", "start from the offsets for this RFC 3339 time instead of offset zero")
	f.StringSliceVar(&opts.EventTypes, "event-types", nil, "apply only these event types (comma-separated); others still advance the checkpoint")
	f.BoolVar(&opts.AutoPromote, "auto-promote", false, "verify and promote the version once it is tailing with lag 0")
	f.BoolVar(&opts.AllowTruncatedHistory, "allow-truncated-history", false, "start at the log start where retention or compaction removed records")
	f.BoolVar(&opts.Start, "start", false, "start the replay at once")
	addTimeout(cmd, &timeout, defaultSendTimeout, sendTimeoutHelp)
	return cmd
}

// transitionCommand is start, pause, resume or remove: a command on one KEY without options.
func (a *app) transitionCommand(name, short string) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   name + " KEY",
		Short: short,
		Args:  keyArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			key := args[0]
			c := control.Command{Command: name, Replay: key}
			return a.send(cmd, timeout, c, func(w io.Writer, o *control.Outcome) error {
				_, err := fmt.Fprintln(w, transitionLine(name, key, resultStatus(o)))
				return err
			})
		},
	}
	addTimeout(cmd, &timeout, defaultSendTimeout, sendTimeoutHelp)
	return cmd
}

// transitionLine is the human outcome of start, pause, resume and remove.
func transitionLine(command, key string, st *control.Status) string {
	past := map[string]string{"start": "started", "pause": "paused", "resume": "resumed", "remove": "removed"}[command]
	line := past + " " + key
	if st != nil && (command == "start" || command == "resume") {
		line += ": " + st.State
	}
	return line
}
