package processor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/store"
)

// The control plane. Every instance competes for the leadership (a PostgreSQL advisory lock on
// a connection of its own); the leader reads the control topic (one partition: commands are
// totally ordered) from the position recorded in the catalog, executes each command through the
// Manager, and publishes its outcome and the versions' status on the status topic. A command id
// is claimed in the catalog before it runs, so it is executed at most once, even when the topic
// is read again after a restart or a change of leader.

// controlLoop runs the leader's duties whenever this instance holds the leadership.
func (p *Processor) controlLoop(ctx context.Context) error {
	for ctx.Err() == nil {
		l, err := p.store.TryLead(ctx)
		if err != nil && ctx.Err() == nil {
			p.log.Debug("leader election", "err", err)
		}
		if l == nil {
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
			continue
		}
		p.log.Info("this instance leads: it executes control commands and publishes status")
		lctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-l.Lost():
				p.log.Warn("leadership lost (its PostgreSQL connection failed)")
			case <-lctx.Done():
			}
			cancel()
		}()
		p.leading.Store(true)
		err = p.lead(lctx)
		p.leading.Store(false)
		cancel()
		l.Release()
		if err != nil && ctx.Err() == nil {
			p.log.Warn("control loop stopped; will try again", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

// lead consumes the control topic until ctx ends.
func (p *Processor) lead(ctx context.Context) error {
	p.mgr.finishRemovals(ctx)
	topic := p.cfg.Kafka.ControlTopic
	pos, err := p.store.ControlPosition(ctx, topic)
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(append(p.kafkaOpts(p.cfg.Kafka.ClientID+"-control"),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().At(pos)}}),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(250*time.Millisecond),
	)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(t string, part int32, err error) {
			p.log.Warn("control topic fetch error", "topic", t, "partition", part, "err", err)
		})
		var rerr error
		fetches.EachRecord(func(rec *kgo.Record) {
			if rerr != nil {
				return
			}
			out := p.execute(ctx, rec)
			if ctx.Err() != nil {
				rerr = ctx.Err()
				return
			}
			if out.OK {
				p.refreshStatus(ctx, 5*time.Second)
			}
			if err := p.publishOutcome(ctx, out); err != nil {
				rerr = err
				return
			}
			rerr = retry(ctx, func() error { return p.store.SetControlPosition(ctx, topic, rec.Offset+1) })
		})
		if rerr != nil {
			return rerr
		}
	}
}

// execute runs one control record and returns its outcome. It never panics on bad input and
// changes nothing for an invalid, unauthorised or repeated command.
func (p *Processor) execute(ctx context.Context, rec *kgo.Record) (out Outcome) {
	out.ExecutedBy = p.instance
	defer func() {
		out.ExecutedAt = time.Now().UTC()
		if r := recover(); r != nil {
			out.OK, out.Error = false, fmt.Sprintf("internal error: %v", r)
			p.log.Error("control command panicked", "panic", r)
		}
	}()
	cmd, perr := ParseCommand(rec.Value)
	if cmd != nil {
		out.CommandID, out.Command, out.Replay, out.Projection = cmd.ID, cmd.Command, cmd.Replay, cmd.Projection
	}
	if out.CommandID == "" {
		out.CommandID = fmt.Sprintf("offset-%d", rec.Offset)
	}
	label := out.Command
	if label == "" || perr != nil && cmd != nil && !knownCommand(cmd.Command) {
		label = "invalid"
	}
	if secret := p.cfg.Control.Secret; secret != "" {
		sig := ""
		for _, h := range rec.Headers {
			if h.Key == SignatureHeader {
				sig = string(h.Value)
			}
		}
		reason := ""
		switch {
		case sig == "":
			reason = "unsigned"
		case !VerifySignature([]byte(secret), rec.Value, sig):
			reason = "bad_signature"
		}
		if reason != "" {
			p.metrics.rejected.WithLabelValues(reason).Inc()
			p.metrics.commands.WithLabelValues(label, "unauthorized").Inc()
			p.log.Warn("control command refused: "+reason, "offset", rec.Offset, "command_id", out.CommandID)
			out.Error = "unauthorized: the command is " + map[string]string{"unsigned": "not signed", "bad_signature": "signed with a wrong secret"}[reason] +
				" (this kreplay requires commands signed with control.secret)"
			return out
		}
	}
	if perr != nil {
		p.metrics.commands.WithLabelValues(label, "malformed").Inc()
		p.log.Warn("control command refused: malformed", "offset", rec.Offset, "err", perr)
		out.Error = "malformed command: " + perr.Error()
		return out
	}
	claimed, prev, err := p.claim(ctx, cmd)
	if err != nil {
		out.Error = "could not record the command: " + err.Error()
		return out
	}
	if !claimed {
		p.metrics.commands.WithLabelValues(label, "duplicate").Inc()
		out.Duplicate = true
		if prev.State == "running" {
			out.Error = fmt.Sprintf("command %s is already being executed by %s since %s; if that instance died, it was interrupted: check the status",
				cmd.ID, prev.ExecutedBy, prev.StartedAt.Format(time.RFC3339))
			return out
		}
		out.OK, out.Error, out.Result = prev.OK, prev.Error, prev.Result
		return out
	}
	result, err := p.dispatch(ctx, cmd)
	switch {
	case err == nil:
		out.OK = true
		p.metrics.commands.WithLabelValues(label, "ok").Inc()
	case isRejection(err):
		out.Error = err.Error()
		p.metrics.commands.WithLabelValues(label, "rejected").Inc()
	default:
		out.Error = err.Error()
		p.metrics.commands.WithLabelValues(label, "failed").Inc()
	}
	if result != nil {
		out.Result, _ = json.Marshal(result)
	}
	p.log.Info("control command", "id", cmd.ID, "command", cmd.Command, "replay", cmd.Replay, "projection", cmd.Projection,
		"by", cmd.IssuedBy, "ok", out.OK, "error", out.Error)
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := retry(fctx, func() error { return p.store.FinishCommand(fctx, cmd.ID, out.OK, out.Error, out.Result) }); err != nil {
		p.log.Error("could not record a command's outcome", "id", cmd.ID, "err", err)
	}
	return out
}

func (p *Processor) claim(ctx context.Context, cmd *Command) (bool, *store.CommandRecord, error) {
	var claimed bool
	var prev *store.CommandRecord
	err := retry(ctx, func() error {
		var err error
		claimed, prev, err = p.store.ClaimCommand(ctx, store.CommandRecord{ID: cmd.ID, Command: cmd.Command, Replay: cmd.Replay,
			Projection: cmd.Projection, IssuedBy: cmd.IssuedBy, IssuedAt: cmd.IssuedAt, ExecutedBy: p.instance})
		return err
	})
	return claimed, prev, err
}

func knownCommand(c string) bool {
	for _, k := range Commands {
		if k == c {
			return true
		}
	}
	return false
}

// isRejection: the command was refused as such (nothing changed), rather than failing midway.
func isRejection(err error) bool {
	return errors.Is(err, ErrInvalid) || errors.Is(err, store.ErrInvalidTransition) || errors.Is(err, store.ErrNotFound) ||
		errors.Is(err, store.ErrExists)
}

// CreateOptions are the options of a create command.
type CreateOptions struct {
	Topics                []string `json:"topics,omitempty"`
	Since                 string   `json:"since,omitempty"` // RFC 3339
	EventTypes            []string `json:"event_types,omitempty"`
	AutoPromote           bool     `json:"auto_promote,omitempty"`
	AllowTruncatedHistory bool     `json:"allow_truncated_history,omitempty"`
	Start                 bool     `json:"start,omitempty"`
	// DefinitionHash, when set, is the definition the operator means (the CLI sends the hash
	// of the projection in its config file): refused if serve's config has another.
	DefinitionHash string `json:"definition_hash,omitempty"`
}

// dispatch runs a parsed command through the Manager.
func (p *Processor) dispatch(ctx context.Context, cmd *Command) (any, error) {
	m := p.mgr
	status := func(key string) (any, error) {
		st, err := m.VersionStatus(ctx, key)
		if err != nil {
			return nil, nil //nolint:nilerr // the command succeeded; its status is a courtesy
		}
		return st, nil
	}
	noOptions := func() error { return decodeOptions(cmd, &struct{}{}) }
	switch cmd.Command {
	case "create":
		var o CreateOptions
		if err := decodeOptions(cmd, &o); err != nil {
			return nil, err
		}
		req := CreateRequest{Key: cmd.Replay, Projection: cmd.Projection, Topics: o.Topics, EventTypes: o.EventTypes,
			AutoPromote: o.AutoPromote, AllowTruncatedHistory: o.AllowTruncatedHistory, Start: o.Start, DefinitionHash: o.DefinitionHash}
		if o.Since != "" {
			t, err := time.Parse(time.RFC3339Nano, o.Since)
			if err != nil {
				return nil, invalid("create: since %q is not an RFC 3339 time (e.g. 2026-01-02T15:04:05Z)", o.Since)
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
		var o PromoteOptions
		if err := decodeOptions(cmd, &o); err != nil {
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
	}
	return nil, invalid("unknown command %q", cmd.Command)
}

// publishOutcome writes a command's outcome to the status topic.
func (p *Processor) publishOutcome(ctx context.Context, out Outcome) error {
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	rec := &kgo.Record{Topic: p.cfg.Kafka.StatusTopic, Key: []byte(OutcomeKey(out.CommandID)), Value: b}
	return retryKafka(ctx, func() error { return p.producer.ProduceSync(ctx, rec).FirstErr() })
}

// statusPublisher remembers what was last published per version, to publish on change and
// otherwise every statusRefresh.
type statusPublisher struct {
	mu   sync.Mutex
	last map[string]publishedStatus
}

type publishedStatus struct {
	fingerprint string
	at          time.Time
}

const statusRefresh = 30 * time.Second

// tombstoned is the fingerprint of a removed version whose status record was cleared.
const tombstoned = "removed"

// afterStatus runs on every status computation: the leader publishes changed statuses (and all
// of them every statusRefresh), a tombstone for each removed version whose record it has not
// cleared yet, and promotes auto-promote versions that are ready.
func (p *Processor) afterStatus(ctx context.Context, statuses []Status, removed []string) {
	if !p.leading.Load() {
		return
	}
	now := time.Now()
	var recs []*kgo.Record
	p.published.mu.Lock()
	if p.published.last == nil {
		p.published.last = map[string]publishedStatus{}
	}
	for _, st := range statuses {
		fp := fmt.Sprintf("%s|%d|%d|%.4f|%d|%s|%t|%s|%s", st.State, st.AppliedEvents, st.SkippedEvents, st.Progress, st.LagEvents, st.Error, st.Drift, st.LiveVersion, st.PreviousVersion)
		last := p.published.last[st.Key]
		if last.fingerprint == fp && now.Sub(last.at) < statusRefresh {
			continue
		}
		b, err := json.Marshal(st)
		if err != nil {
			continue
		}
		recs = append(recs, &kgo.Record{Topic: p.cfg.Kafka.StatusTopic, Key: []byte(st.Key), Value: b})
		p.published.last[st.Key] = publishedStatus{fp, now}
	}
	for _, key := range removed {
		if p.published.last[key].fingerprint != tombstoned {
			recs = append(recs, &kgo.Record{Topic: p.cfg.Kafka.StatusTopic, Key: []byte(key)})
			p.published.last[key] = publishedStatus{tombstoned, now}
		}
	}
	p.published.mu.Unlock()
	if len(recs) > 0 {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := p.producer.ProduceSync(pctx, recs...).FirstErr(); err != nil {
			p.log.Warn("publish status", "err", err)
			p.published.mu.Lock()
			for _, r := range recs {
				delete(p.published.last, string(r.Key))
			}
			p.published.mu.Unlock()
		}
		cancel()
	}
	p.autoPromote(ctx, statuses)
}

// autoPromote verifies and promotes the versions created with --auto-promote once they are
// tailing with lag 0. A version whose verify found differences is not tried again against the
// same live version.
func (p *Processor) autoPromote(ctx context.Context, statuses []Status) {
	for _, st := range statuses {
		if !st.Options.AutoPromote || st.State != string(store.StateTailing) || st.LagEvents != 0 {
			continue
		}
		attempt := st.Key + "@" + st.LiveVersion
		p.autoMu.Lock()
		_, done := p.autoTried[attempt]
		busy := p.autoBusy
		if !done && !busy {
			p.autoBusy = true
		}
		p.autoMu.Unlock()
		if done || busy {
			continue
		}
		p.bg.Go(func() {
			defer func() {
				p.autoMu.Lock()
				p.autoBusy = false
				p.autoMu.Unlock()
			}()
			rep, err := p.mgr.Verify(ctx, st.Key)
			if err != nil {
				p.log.Warn("auto-promote: verify failed; will retry", "version", st.Key, "err", err)
				return
			}
			if !rep.Passed {
				p.autoMu.Lock()
				p.autoTried[attempt] = struct{}{}
				p.autoMu.Unlock()
				p.log.Error("auto-promote: verify found differences; not promoting", "version", st.Key, "against", rep.Against, "differs", rep.Differs)
				return
			}
			if _, err := p.mgr.Promote(ctx, st.Key, PromoteOptions{Verified: true, Wait: Duration(10 * time.Second)}); err != nil {
				p.log.Warn("auto-promote: promote failed; will retry", "version", st.Key, "err", err)
				return
			}
			p.autoMu.Lock()
			p.autoTried[attempt] = struct{}{}
			p.autoMu.Unlock()
		})
	}
}

// instanceName names this instance in outcomes and logs (host:pid).
func instanceName() string {
	h, _ := os.Hostname()
	return fmt.Sprintf("%s:%d", h, os.Getpid())
}
