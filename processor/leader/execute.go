package leader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/store"
)

// entry is a control record as the leader reads it.
type entry struct {
	rec  *kgo.Record
	cmd  *control.Command // nil when the record is not a command at all
	perr error            // why it is malformed
	// unauthorized is "unsigned" or "bad_signature" when a secret is required and the record
	// does not carry the right signature.
	unauthorized string
	// elsewhere: the command addresses another installation.
	elsewhere bool
}

// read parses and checks a control record.
func (l *Leader) read(rec *kgo.Record) *entry {
	e := &entry{rec: rec}
	e.cmd, e.perr = control.ParseCommand(rec.Value)
	if e.cmd != nil && e.cmd.Installation != "" && e.cmd.Installation != l.cfg.Installation {
		e.elsewhere = true
		return e
	}
	if secret := l.cfg.Secret; secret != "" {
		sig := ""
		for _, h := range rec.Headers {
			if h.Key == control.SignatureHeader {
				sig = string(h.Value)
			}
		}
		switch {
		case sig == "":
			e.unauthorized = "unsigned"
		case !control.VerifySignature([]byte(secret), rec.Value, sig):
			e.unauthorized = "bad_signature"
		}
	}
	return e
}

// runnable reports whether the record is a well-formed, authorized command of this
// installation: one that is executed unless it expired or was canceled.
func (e *entry) runnable() bool { return !e.elsewhere && e.unauthorized == "" && e.perr == nil }

// execute runs one control record and returns its outcome, and whether to publish it (not for a
// command addressed to another installation, which is left alone). It never panics on bad
// input and changes nothing for an invalid, unauthorised, repeated, expired or canceled
// command. A command that runs gets an interim outcome (state running) first.
func (l *Leader) execute(ctx context.Context, e *entry) (out control.Outcome, answer bool) {
	rec, cmd := e.rec, e.cmd
	out.ExecutedBy, out.Installation, out.State = l.cfg.Instance, l.cfg.Installation, control.OutcomeDone
	defer func() {
		out.ExecutedAt = time.Now().UTC()
		if r := recover(); r != nil {
			out.OK, out.Error = false, fmt.Sprintf("internal error: %v", r)
			l.log.Error("control command panicked", "panic", r)
		}
	}()
	if cmd != nil {
		out.CommandID, out.Command, out.Replay, out.Projection = cmd.ID, cmd.Command, cmd.Replay, cmd.Projection
	}
	if out.CommandID == "" {
		out.CommandID = fmt.Sprintf("offset-%d", rec.Offset)
	}
	label := out.Command
	if label == "" || e.perr != nil && cmd != nil && !control.KnownCommand(cmd.Command) {
		label = "invalid"
	}
	if e.elsewhere {
		l.metrics.commands.WithLabelValues(label, "other_installation").Inc()
		l.log.Debug("control command addressed to another installation: ignored", "offset", rec.Offset, "command_id", cmd.ID,
			"installation", cmd.Installation)
		return out, false
	}
	if reason := e.unauthorized; reason != "" {
		l.metrics.rejected.WithLabelValues(reason).Inc()
		l.metrics.commands.WithLabelValues(label, "unauthorized").Inc()
		l.log.Warn("control command refused: "+reason, "offset", rec.Offset, "command_id", out.CommandID)
		out.Error = "unauthorized: the command is " + map[string]string{"unsigned": "not signed", "bad_signature": "signed with a wrong secret"}[reason] +
			" (this kreplay requires commands signed with control.secret)"
		return out, true
	}
	if e.perr != nil {
		l.metrics.commands.WithLabelValues(label, "malformed").Inc()
		l.log.Warn("control command refused: malformed", "offset", rec.Offset, "err", e.perr)
		out.Error = "malformed command: " + e.perr.Error()
		return out, true
	}
	now := time.Now()
	expires := cmd.Expires(rec.Timestamp)
	if now.After(expires) {
		return l.expire(ctx, e, out, label, expires, now), true
	}
	claimed, prev, err := l.claim(ctx, e, store.CommandRecord{Deadline: &expires})
	if err != nil {
		out.Error = "could not record the command: " + err.Error()
		return out, true
	}
	if !claimed {
		return l.claimedBefore(out, label, prev), true
	}
	started := out
	started.State, started.ExecutedAt = control.OutcomeRunning, now.UTC()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if err := l.publishOutcome(sctx, started); err != nil && ctx.Err() == nil {
		l.log.Warn("could not publish that a command started; it runs anyway", "id", cmd.ID, "err", err)
	}
	cancel()
	result, err := l.dispatch(ctx, cmd)
	switch {
	case err == nil:
		out.OK = true
		l.metrics.commands.WithLabelValues(label, "ok").Inc()
	case isRejection(err):
		out.Error = err.Error()
		l.metrics.commands.WithLabelValues(label, "rejected").Inc()
	default:
		out.Error = err.Error()
		l.metrics.commands.WithLabelValues(label, "failed").Inc()
	}
	if result != nil {
		out.Result, _ = json.Marshal(result)
	}
	l.log.Info("control command", "id", cmd.ID, "command", cmd.Command, "replay", cmd.Replay, "projection", cmd.Projection,
		"by", cmd.IssuedBy, "ok", out.OK, "error", out.Error)
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := l.catalog("record a command's outcome").Do(fctx, func(ctx context.Context) error {
		return l.store.FinishCommand(ctx, cmd.ID, out.OK, out.Error, out.Result)
	}); err != nil {
		l.log.Error("could not record a command's outcome", "id", cmd.ID, "err", err)
	}
	return out, true
}

// expire answers a command whose deadline had passed when it was read: it is recorded as
// expired, so that it never runs, and not run.
func (l *Leader) expire(ctx context.Context, e *entry, out control.Outcome, label string, expires, now time.Time) control.Outcome {
	cmd := e.cmd
	reason := fmt.Sprintf("expired: its deadline %s had passed when serve read it (at %s); it was not run",
		expires.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	claimed, prev, err := l.claim(ctx, e, store.CommandRecord{State: store.CommandExpired, Deadline: &expires, Error: reason})
	switch {
	case err != nil:
		out.Error = "could not record the command: " + err.Error()
		return out
	case !claimed:
		return l.claimedBefore(out, label, prev)
	}
	l.metrics.commands.WithLabelValues(label, "expired").Inc()
	l.log.Info("control command expired: not run", "id", cmd.ID, "command", cmd.Command, "replay", cmd.Replay, "projection", cmd.Projection,
		"by", cmd.IssuedBy, "deadline", expires.UTC())
	out.State, out.Error = control.OutcomeExpired, reason
	return out
}

// claimedBefore answers a command whose id the catalog has recorded already: a repeated id gets
// the first outcome back, marked duplicate; a canceled one says so.
func (l *Leader) claimedBefore(out control.Outcome, label string, prev *store.CommandRecord) control.Outcome {
	switch prev.State {
	case store.CommandCanceled:
		l.metrics.commands.WithLabelValues(label, "canceled").Inc()
		out.State, out.Error = control.OutcomeCanceled, prev.Error
		return out
	case store.CommandRunning:
		l.metrics.commands.WithLabelValues(label, "duplicate").Inc()
		out.Duplicate = true
		out.Error = fmt.Sprintf("command %s is already being executed by %s since %s; if that instance died, it was interrupted: check the status",
			prev.ID, prev.ExecutedBy, prev.StartedAt.Format(time.RFC3339))
		return out
	case store.CommandExpired:
		out.State = control.OutcomeExpired
	}
	l.metrics.commands.WithLabelValues(label, "duplicate").Inc()
	out.Duplicate = true
	out.OK, out.Error, out.Result = prev.OK, prev.Error, prev.Result
	return out
}

// claim records a command in the catalog (as running unless as says otherwise); see
// store.ClaimCommand.
func (l *Leader) claim(ctx context.Context, e *entry, as store.CommandRecord) (bool, *store.CommandRecord, error) {
	cmd := e.cmd
	as.ID, as.Command, as.Replay, as.Projection, as.IssuedBy, as.IssuedAt, as.ExecutedBy =
		cmd.ID, cmd.Command, cmd.Replay, cmd.Projection, cmd.IssuedBy, cmd.IssuedAt, l.cfg.Instance
	var claimed bool
	var prev *store.CommandRecord
	err := l.catalog("record a command").Do(ctx, func(ctx context.Context) error {
		var err error
		claimed, prev, err = l.store.ClaimCommand(ctx, as)
		return err
	})
	return claimed, prev, err
}

// isRejection: the command was refused as such (nothing changed), rather than failing midway.
func isRejection(err error) bool {
	return errors.Is(err, control.ErrInvalid) || errors.Is(err, store.ErrInvalidTransition) || errors.Is(err, store.ErrNotFound) ||
		errors.Is(err, store.ErrExists)
}
