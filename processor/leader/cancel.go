package leader

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/store"
)

// Commands are executed in the order of the control topic, so a cancel comes after the command
// it cancels. For it to take effect while that command is pending, the leader looks ahead:
// before it executes a command, it takes what its Kafka client has fetched already (without
// waiting) and, for every cancel among the records not executed yet, records the commands
// before it that it names as canceled in the catalog (store.ClaimCommand): when their turn
// comes, they are not run and their outcome says canceled. The cancel itself, in its turn,
// answers what became of its command (cancelCommand).

// maxLookAhead bounds the records the leader holds fetched and not executed yet.
const maxLookAhead = 1000

// controlReader holds the control records fetched and not executed yet, in order.
type controlReader struct {
	cl      *kgo.Client
	pending []*entry
	applied map[int64]bool // the offsets of the cancels lookAhead has applied
}

// next returns the next record to execute, waiting for one; nil when ctx ended.
func (l *Leader) next(ctx context.Context, r *controlReader) *entry {
	for len(r.pending) == 0 {
		fetches := r.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		l.take(r, fetches)
	}
	return r.pending[0]
}

// take adds fetched records to the pending ones.
func (l *Leader) take(r *controlReader, fetches kgo.Fetches) {
	fetches.EachError(func(t string, part int32, err error) {
		l.retries.Failed("read the control topic", err, "topic", t, "partition", part)
	})
	fetches.EachRecord(func(rec *kgo.Record) { r.pending = append(r.pending, l.read(rec)) })
}

// lookAhead takes the records the client has fetched already and applies the cancels among
// the pending records (after the first, which is about to run) to the commands before them.
// Only a cancel that would itself be executed counts: of this installation, authorized,
// well-formed and not expired.
func (l *Leader) lookAhead(ctx context.Context, r *controlReader) error {
	if len(r.pending) < maxLookAhead {
		// A nil context returns what is buffered at once (a canceled one would not: it returns
		// its error).
		l.take(r, r.cl.PollFetches(nil)) //nolint:staticcheck // SA1012: franz-go documents nil as "do not wait"
	}
	now := time.Now()
	for j, c := range r.pending {
		if j == 0 || r.applied[c.rec.Offset] || !c.runnable() || c.cmd.Command != "cancel" || now.After(c.cmd.Expires(c.rec.Timestamp)) {
			continue
		}
		r.applied[c.rec.Offset] = true
		target, err := control.CancelTarget(c.cmd)
		if err != nil {
			continue
		}
		for _, t := range r.pending[:j] {
			if !t.runnable() || t.cmd.ID != target || t.cmd.Command == "cancel" {
				continue
			}
			expires := t.cmd.Expires(t.rec.Timestamp)
			reason := fmt.Sprintf("canceled before it ran, by command %s (issued by %s at %s); it was not run",
				c.cmd.ID, orDash(c.cmd.IssuedBy), c.cmd.IssuedAt.UTC().Format(time.RFC3339))
			claimed, _, err := l.claim(ctx, t, store.CommandRecord{State: store.CommandCanceled, Deadline: &expires, CanceledBy: c.cmd.ID, Error: reason})
			if err != nil {
				return err
			}
			if claimed {
				l.log.Info("control command canceled before it ran", "id", target, "command", t.cmd.Command, "replay", t.cmd.Replay,
					"projection", t.cmd.Projection, "by", c.cmd.ID)
			}
		}
	}
	return nil
}

// cancelCommand is the cancel command in its turn: it reports what became of the command it
// names. Canceled (by it, by lookAhead, or by another cancel) or expired: it will not run, and
// the cancel succeeds. Executed or running: too late, refused. Unknown: refused.
func (l *Leader) cancelCommand(ctx context.Context, cmd *control.Command) (any, error) {
	target, err := control.CancelTarget(cmd)
	if err != nil {
		return nil, err
	}
	var rec *store.CommandRecord
	err = l.catalog("read a command").Do(ctx, func(ctx context.Context) error {
		var err error
		rec, err = l.store.Command(ctx, target)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, control.Invalid("cancel: unknown command id %q: serve has read no command with this id before the cancel (a cancel comes after its command, on the same control topic)", target)
	}
	if err != nil {
		return nil, err
	}
	what := control.Describe(&control.Command{Command: rec.Command, Replay: rec.Replay, Projection: rec.Projection})
	rep := control.CancelReport{CommandID: target, Command: rec.Command, Replay: rec.Replay, Projection: rec.Projection, State: rec.State, CanceledBy: rec.CanceledBy}
	switch rec.State {
	case store.CommandCanceled, store.CommandExpired:
		return rep, nil
	case store.CommandRunning:
		return nil, control.Invalid("cancel: command %s (%s) is running since %s on %s: too late to cancel it; see kreplay status",
			target, what, rec.StartedAt.UTC().Format(time.RFC3339), orDash(rec.ExecutedBy))
	}
	if rec.Command == "cancel" {
		return nil, control.Invalid("cancel: command %s is a cancel, which cannot be canceled", target)
	}
	how := "ok"
	if !rec.OK {
		how = "refused or failed: " + rec.Error
	}
	at := rec.StartedAt
	if rec.FinishedAt != nil {
		at = *rec.FinishedAt
	}
	return nil, control.Invalid("cancel: command %s (%s) already executed at %s (%s): too late to cancel it", target, what, at.UTC().Format(time.RFC3339), how)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
