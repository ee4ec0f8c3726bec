package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/store"
	"github.com/spf13/cobra"
)

func (a *app) promoteCommand() *cobra.Command {
	var (
		opts    control.PromoteOptions
		wait    time.Duration
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "promote KEY",
		Short: "Make a tailing version live by repointing its projection's views in one transaction",
		Long: `Make KEY live: once it is tailing with lag at most --max-lag (waiting up to
--wait for that), the views of its projection are repointed to it in one
transaction. The previous live version is retired and keeps tailing, so that
kreplay rollback can switch back at once.

It lists how the views' columns change. A promotion that removes, retypes or
moves a column readers see (or drops a view) is refused unless
--allow-shape-change: clients that cache prepared statements of SELECT * get
"cached plan must not change result type" once per connection. Columns added
at the end need no flag.`,
		Example: `  kreplay promote balances_v2 --wait 5m
  kreplay verify balances_v2 && kreplay promote balances_v2 --verified
  kreplay promote balances_v3 --allow-shape-change`,
		Args: keyArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.MaxLag < 0 {
				return fmt.Errorf("--max-lag %d: must be 0 or more", opts.MaxLag)
			}
			if wait < 0 {
				return fmt.Errorf("--wait %s: must be 0 or more", wait)
			}
			opts.Wait = control.Duration(wait)
			if !cmd.Flags().Changed("timeout") {
				timeout = wait + defaultSendTimeout
			}
			raw, err := json.Marshal(opts)
			if err != nil {
				return err
			}
			c := control.Command{Command: "promote", Replay: args[0], Options: raw}
			return a.send(cmd, timeout, c, func(w io.Writer, o *control.Outcome) error {
				var rep control.SwapReport
				if err := json.Unmarshal(o.Result, &rep); err != nil {
					_, err = fmt.Fprintf(w, "promoted %s: live\n", args[0])
					return err
				}
				return writeSwapReport(w, rep)
			})
		},
	}
	f := cmd.Flags()
	f.Int64Var(&opts.MaxLag, "max-lag", 0, "the most events KEY may be behind the brokers")
	f.DurationVar(&wait, "wait", 0, "how long to wait for KEY to be tailing within --max-lag (0: not at all)")
	f.BoolVar(&opts.Verified, "verified", false, "refuse unless KEY's last verify, against the current live version, passed")
	f.BoolVar(&opts.AllowShapeChange, "allow-shape-change", false, "allow the promotion to remove, retype or move columns of the live views")
	// Not addTimeout: the default depends on --wait (see RunE), and cobra would print a fixed one
	// beside it.
	f.DurationVar(&timeout, "timeout", 0, sendTimeoutHelp+" (default --wait + 1m0s)")
	return cmd
}

func (a *app) rollbackCommand() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "rollback PROJECTION",
		Short: "Make the projection's newest retired version live again",
		Args:  argNamed("PROJECTION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := control.Command{Command: "rollback", Projection: args[0]}
			return a.send(cmd, timeout, c, func(w io.Writer, o *control.Outcome) error {
				var rep control.SwapReport
				if err := json.Unmarshal(o.Result, &rep); err != nil {
					_, err = fmt.Fprintf(w, "rolled back %s\n", args[0])
					return err
				}
				return writeSwapReport(w, rep)
			})
		},
	}
	addTimeout(cmd, &timeout, defaultSendTimeout, sendTimeoutHelp)
	return cmd
}

// writeSwapReport prints a promote's or a rollback's outcome: the swap line, then one line per
// view whose columns changed.
func writeSwapReport(w io.Writer, rep control.SwapReport) error {
	if _, err := fmt.Fprintln(w, swapLine(rep)); err != nil {
		return err
	}
	return writeShapeChanges(w, rep.ShapeChanges, "")
}

// writeShapeChanges prints one line per view whose columns change:
//
//	view shape: public.balances: removes events bigint (breaking)
func writeShapeChanges(w io.Writer, changes []store.ShapeChange, suffix string) error {
	for _, c := range changes {
		line := "view shape: " + c.String()
		if c.Breaking() {
			line += " (breaking)"
		}
		if _, err := fmt.Fprintln(w, line+suffix); err != nil {
			return err
		}
	}
	return nil
}

// swapLine is the human outcome of a promote or a rollback:
//
//	promoted stock_v2: live (stock_v1 retired, swap 3.2ms, 1 attempt)
//	rolled back stock: stock_v1 is live (stock_v2 retired, swap 2.9ms, 1 attempt)
func swapLine(r control.SwapReport) string {
	var details []string
	if r.From != "" {
		state := r.PreviousState
		if state == "" { // an older serve
			state = "retired"
		}
		details = append(details, r.From+" "+state)
	}
	details = append(details, fmt.Sprintf("swap %.1fms", r.SwapDurationMS), plural(r.Attempts, "attempt", "attempts"))
	if r.WaitedSeconds >= 0.1 {
		details = append(details, "waited "+formatSeconds(r.WaitedSeconds))
	}
	d := " (" + strings.Join(details, ", ") + ")"
	if r.Kind == "rollback" {
		return fmt.Sprintf("rolled back %s: %s is live%s", r.Projection, r.To, d)
	}
	return fmt.Sprintf("promoted %s: live%s", r.To, d)
}

func (a *app) verifyCommand() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "verify KEY",
		Short: "Compare KEY with the live version at the same offsets: checks, row counts, checksums",
		Long: `Compare KEY with the live version of its projection at the same offset vector
(the one ahead pauses until both have applied exactly the same offsets): the
projection's checks, each table's row count and checksum. It exits 1 when
anything differs.`,
		Args: keyArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			c := control.Command{Command: "verify", Replay: args[0]}
			return a.send(cmd, timeout, c, func(w io.Writer, o *control.Outcome) error {
				var rep control.VerifyReport
				if len(o.Result) == 0 || json.Unmarshal(o.Result, &rep) != nil {
					if o.OK {
						return errors.New("verify succeeded but its report is missing from the outcome")
					}
					return nil // the error is the outcome's
				}
				return writeVerifyReport(w, rep)
			})
		},
	}
	addTimeout(cmd, &timeout, defaultSendTimeout+2*time.Minute, sendTimeoutHelp+" (verify may wait up to 2m for both versions to align)")
	return cmd
}

// verifyValueWidth bounds the live and candidate values in the verify table.
const verifyValueWidth = 32

// writeVerifyReport prints a verify report: one row per comparison and a PASSED or DIFFERS
// line.
func writeVerifyReport(w io.Writer, rep control.VerifyReport) error {
	t := newTable(w, "KIND", "NAME", "EQUAL", rep.Against+" (LIVE)", rep.Version)
	for _, r := range rep.Results {
		t.row(r.Kind, truncate(r.Name, 60), yesNo(r.Equal), truncate(r.A, verifyValueWidth), truncate(r.B, verifyValueWidth))
	}
	if err := t.flush(); err != nil {
		return err
	}
	for _, s := range rep.Skipped {
		if _, err := fmt.Fprintf(w, "not compared: %s\n", s); err != nil {
			return err
		}
	}
	if err := writeShapeChanges(w, rep.ShapeChanges, ""); err != nil {
		return err
	}
	if rep.ShapeChangeNeedsFlag {
		if _, err := fmt.Fprintf(w, "promoting %s removes, retypes or moves columns readers of the live views see: kreplay promote %s needs --allow-shape-change\n", rep.Version, rep.Version); err != nil {
			return err
		}
	}
	if rep.Passed {
		_, err := fmt.Fprintf(w, "PASSED: %s matches %s (%s)\n", rep.Version, rep.Against, plural(len(rep.Results), "comparison", "comparisons"))
		return err
	}
	_, err := fmt.Fprintf(w, "DIFFERS: %s differs from %s in %s: %s\n", rep.Version, rep.Against,
		plural(len(rep.Differs), "comparison", "comparisons"), strings.Join(rep.Differs, "; "))
	return err
}
