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

// execute runs one control record and returns its outcome. It never panics on bad input and
// changes nothing for an invalid, unauthorised or repeated command.
func (l *Leader) execute(ctx context.Context, rec *kgo.Record) (out control.Outcome) {
	out.ExecutedBy = l.cfg.Instance
	defer func() {
		out.ExecutedAt = time.Now().UTC()
		if r := recover(); r != nil {
			out.OK, out.Error = false, fmt.Sprintf("internal error: %v", r)
			l.log.Error("control command panicked", "panic", r)
		}
	}()
	cmd, perr := control.ParseCommand(rec.Value)
	if cmd != nil {
		out.CommandID, out.Command, out.Replay, out.Projection = cmd.ID, cmd.Command, cmd.Replay, cmd.Projection
	}
	if out.CommandID == "" {
		out.CommandID = fmt.Sprintf("offset-%d", rec.Offset)
	}
	label := out.Command
	if label == "" || perr != nil && cmd != nil && !control.KnownCommand(cmd.Command) {
		label = "invalid"
	}
	if secret := l.cfg.Secret; secret != "" {
		sig := ""
		for _, h := range rec.Headers {
			if h.Key == control.SignatureHeader {
				sig = string(h.Value)
			}
		}
		reason := ""
		switch {
		case sig == "":
			reason = "unsigned"
		case !control.VerifySignature([]byte(secret), rec.Value, sig):
			reason = "bad_signature"
		}
		if reason != "" {
			l.metrics.rejected.WithLabelValues(reason).Inc()
			l.metrics.commands.WithLabelValues(label, "unauthorized").Inc()
			l.log.Warn("control command refused: "+reason, "offset", rec.Offset, "command_id", out.CommandID)
			out.Error = "unauthorized: the command is " + map[string]string{"unsigned": "not signed", "bad_signature": "signed with a wrong secret"}[reason] +
				" (this kreplay requires commands signed with control.secret)"
			return out
		}
	}
	if perr != nil {
		l.metrics.commands.WithLabelValues(label, "malformed").Inc()
		l.log.Warn("control command refused: malformed", "offset", rec.Offset, "err", perr)
		out.Error = "malformed command: " + perr.Error()
		return out
	}
	claimed, prev, err := l.claim(ctx, cmd)
	if err != nil {
		out.Error = "could not record the command: " + err.Error()
		return out
	}
	if !claimed {
		l.metrics.commands.WithLabelValues(label, "duplicate").Inc()
		out.Duplicate = true
		if prev.State == "running" {
			out.Error = fmt.Sprintf("command %s is already being executed by %s since %s; if that instance died, it was interrupted: check the status",
				cmd.ID, prev.ExecutedBy, prev.StartedAt.Format(time.RFC3339))
			return out
		}
		out.OK, out.Error, out.Result = prev.OK, prev.Error, prev.Result
		return out
	}
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
	return out
}

func (l *Leader) claim(ctx context.Context, cmd *control.Command) (bool, *store.CommandRecord, error) {
	var claimed bool
	var prev *store.CommandRecord
	err := l.catalog("record a command").Do(ctx, func(ctx context.Context) error {
		var err error
		claimed, prev, err = l.store.ClaimCommand(ctx, store.CommandRecord{ID: cmd.ID, Command: cmd.Command, Replay: cmd.Replay,
			Projection: cmd.Projection, IssuedBy: cmd.IssuedBy, IssuedAt: cmd.IssuedAt, ExecutedBy: l.cfg.Instance})
		return err
	})
	return claimed, prev, err
}

// isRejection: the command was refused as such (nothing changed), rather than failing midway.
func isRejection(err error) bool {
	return errors.Is(err, control.ErrInvalid) || errors.Is(err, store.ErrInvalidTransition) || errors.Is(err, store.ErrNotFound) ||
		errors.Is(err, store.ErrExists)
}
