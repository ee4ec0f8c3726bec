package leader

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/processor/lifecycle"
	"github.com/kreplay/kreplay/store"
)

// dispatch runs a parsed, authorized, first-seen command through the Manager and returns its
// result (JSON-encoded into the outcome).
func (l *Leader) dispatch(ctx context.Context, cmd *control.Command) (any, error) {
	m := l.mgr
	status := func(key string) (any, error) {
		st, err := m.VersionStatus(ctx, key)
		if err != nil {
			return nil, nil //nolint:nilerr // the command succeeded; its status is a courtesy
		}
		return st, nil
	}
	noOptions := func() error { return control.DecodeOptions(cmd, &struct{}{}) }
	switch cmd.Command {
	case "create":
		var o control.CreateOptions
		if err := control.DecodeOptions(cmd, &o); err != nil {
			return nil, err
		}
		req := lifecycle.CreateRequest{Key: cmd.Replay, Projection: cmd.Projection, Topics: o.Topics, EventTypes: o.EventTypes,
			AutoPromote: o.AutoPromote, AllowTruncatedHistory: o.AllowTruncatedHistory, Start: o.Start, DefinitionHash: o.DefinitionHash}
		if o.Since != "" {
			t, err := time.Parse(time.RFC3339Nano, o.Since)
			if err != nil {
				return nil, control.Invalid("create: since %q is not an RFC 3339 time (e.g. 2026-01-02T15:04:05Z)", o.Since)
			}
			req.Since = &t
		}
		if _, err := m.Create(ctx, req); err != nil {
			return nil, err
		}
		return status(cmd.Replay)
	case "start", "pause", "resume", "remove":
		if err := noOptions(); err != nil {
			return nil, err
		}
		var err error
		switch cmd.Command {
		case "start":
			_, err = m.Start(ctx, cmd.Replay)
		case "pause":
			_, err = m.Pause(ctx, cmd.Replay)
		case "resume":
			_, err = m.Resume(ctx, cmd.Replay)
		case "remove":
			var v *store.Version
			if v, err = m.Remove(ctx, cmd.Replay); err == nil {
				// The status loop writes the status record's tombstone.
				return map[string]string{"key": v.Key, "state": string(v.State)}, nil
			}
		}
		if err != nil {
			return nil, err
		}
		return status(cmd.Replay)
	case "promote":
		var o control.PromoteOptions
		if err := control.DecodeOptions(cmd, &o); err != nil {
			return nil, err
		}
		return m.Promote(ctx, cmd.Replay, o)
	case "rollback":
		if err := noOptions(); err != nil {
			return nil, err
		}
		return m.Rollback(ctx, cmd.Projection)
	case "verify":
		if err := noOptions(); err != nil {
			return nil, err
		}
		rep, err := m.Verify(ctx, cmd.Replay)
		if err != nil {
			return nil, err
		}
		if !rep.Passed {
			return rep, fmt.Errorf("verify %s: differs from %s in: %s", rep.Version, rep.Against, strings.Join(rep.Differs, "; "))
		}
		return rep, nil
	case "cancel":
		return l.cancelCommand(ctx, cmd)
	}
	return nil, control.Invalid("unknown command %q", cmd.Command)
}

// autoPromoter remembers the auto-promotions tried, and whether one runs now.
type autoPromoter struct {
	mu    sync.Mutex
	tried map[string]struct{} // version@live: verified with differences, held, or promoted
	held  map[string]string   // version@live -> why it is not promoted (shown in its status)
	busy  bool
}

// annotate sets the held reason of the statuses of versions that auto-promotion holds.
func (a *autoPromoter) annotate(statuses []control.Status) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, st := range statuses {
		if why, ok := a.held[st.Key+"@"+st.LiveVersion]; ok && st.State == string(store.StateTailing) {
			statuses[i].AutoPromoteHeld = why
		}
	}
}

// autoPromote verifies and promotes the versions created with --auto-promote once they are
// tailing and caught up (lag 0, or no more than the live version's: see lifecycle.CaughtUp), one
// at a time. A version whose verify found differences is not tried again against the same live
// version. Nor is one whose promotion would remove, retype or move a column readers of the live
// views see: auto-promotion never makes such a change by itself; it holds the version, says why
// in the log and in the version's status (auto_promote_held), and leaves it to
// `kreplay promote --allow-shape-change`.
func (l *Leader) autoPromote(ctx context.Context, statuses []control.Status) {
	a := &l.auto
	lags := make(map[string]int64, len(statuses))
	for _, st := range statuses {
		lags[st.Key] = st.LagEvents
	}
	for _, st := range statuses {
		liveLag, ok := lags[st.LiveVersion]
		if !ok {
			liveLag = -1
		}
		if !st.Options.AutoPromote || st.State != string(store.StateTailing) || !lifecycle.CaughtUp(st.LagEvents, liveLag, 0) {
			continue
		}
		attempt := st.Key + "@" + st.LiveVersion
		a.mu.Lock()
		_, done := a.tried[attempt]
		busy := a.busy
		if !done && !busy {
			a.busy = true
		}
		a.mu.Unlock()
		if done || busy {
			continue
		}
		l.work.Go(func(context.Context) {
			tried := false
			defer func() {
				a.mu.Lock()
				a.busy = false
				if tried {
					a.tried[attempt] = struct{}{}
				}
				a.mu.Unlock()
			}()
			changes, err := l.store.ShapeChanges(ctx, st.Key)
			if err != nil {
				l.log.Warn("auto-promote: could not compare the shapes of the views; will retry", "version", st.Key, "err", err)
				return
			}
			if breaking := store.BreakingChanges(changes); len(breaking) > 0 {
				tried = true
				why := (&store.ShapeChangeError{Key: st.Key, Changes: breaking}).Error()
				a.mu.Lock()
				a.held[attempt] = why
				a.mu.Unlock()
				l.log.Error("auto-promote: holding: the promotion would change the shape of the live views; promote it by hand",
					"version", st.Key, "live", st.LiveVersion, "reason", why)
				return
			}
			rep, err := l.mgr.Verify(ctx, st.Key)
			if err != nil {
				l.log.Warn("auto-promote: verify failed; will retry", "version", st.Key, "err", err)
				return
			}
			if !rep.Passed {
				tried = true
				l.log.Error("auto-promote: verify found differences; not promoting", "version", st.Key, "against", rep.Against, "differs", rep.Differs)
				return
			}
			if _, err := l.mgr.Promote(ctx, st.Key, control.PromoteOptions{Verified: true, Wait: control.Duration(10 * time.Second)}); err != nil {
				l.log.Warn("auto-promote: promote failed; will retry", "version", st.Key, "err", err)
				return
			}
			tried = true
		})
	}
}
