package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/internal/kafkaconn"
	"github.com/kreplay/kreplay/topology"
)

// Client is how operators drive kreplay from outside: it publishes commands on the control
// topic and waits for their outcomes, and reads statuses from the status topic. It needs only
// Kafka (no database credentials).
type Client struct {
	cfg          topology.KafkaConfig
	installation string
	secret       string
	issuedBy     string
	cl           *kgo.Client
	admin        *kadm.Client
	seeds        []string

	// statuses follows the status topic across calls of Statuses (status --watch): one consumer
	// and its position, so that each call reads only what was published since the last.
	statuses *statusFollower
}

// NewClient connects to the brokers of cfg.Kafka (the address of a local serve's embedded
// broker when brokers is "embedded") with cfg.Control.Secret for signing.
func NewClient(cfg *topology.Config, logger *slog.Logger) (*Client, error) {
	brokers := cfg.Kafka.Brokers
	if len(brokers) == 1 && brokers[0] == "embedded" {
		brokers = []string{cfg.Kafka.EmbeddedListen}
	}
	opts, err := kafkaconn.Opts(cfg.Kafka, brokers, cfg.Kafka.ClientID+"-cli", logger)
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(opts, kgo.ProducerLinger(0), kgo.RequiredAcks(kgo.AllISRAcks()))...)
	if err != nil {
		return nil, err
	}
	by := "kreplay-cli"
	if u, err := user.Current(); err == nil {
		by = u.Username
	}
	if h, err := os.Hostname(); err == nil {
		by += "@" + h
	}
	return &Client{cfg: cfg.Kafka, installation: cfg.Installation, secret: cfg.Control.Secret, issuedBy: by, cl: cl, admin: kadm.NewClient(cl), seeds: brokers}, nil
}

// Close closes the client.
func (c *Client) Close() {
	if c.statuses != nil {
		c.statuses.cl.Close()
	}
	c.cl.Close()
}

// ErrNoServe: nothing answered on the status topic in time: the command did not start by its
// deadline, so it will not run.
var ErrNoServe = errors.New("no answer from kreplay serve")

// ErrStillRunning: the command started, but its final outcome did not come in time.
var ErrStillRunning = errors.New("still running")

// Send publishes a command (an id, issued_at/by and the client's installation are filled in
// when empty; the deadline, when nil, is ctx's deadline if it has one), signed when a secret is
// configured, and waits until its final outcome appears on the status topic or ctx ends.
//
// When ctx ends first, it returns ErrStillRunning with the interim outcome if the command had
// started, and ErrNoServe otherwise (with ctx's deadline; ctx's error when it was canceled,
// with the interim outcome if there was one).
func (c *Client) Send(ctx context.Context, cmd Command) (*Outcome, error) {
	if cmd.ID == "" {
		cmd.ID = NewCommandID()
	}
	if cmd.IssuedAt.IsZero() {
		cmd.IssuedAt = time.Now().UTC()
	}
	if cmd.IssuedBy == "" {
		cmd.IssuedBy = c.issuedBy
	}
	if cmd.Installation == "" {
		cmd.Installation = c.installation
	}
	if d, ok := ctx.Deadline(); ok && cmd.Deadline == nil {
		d = d.UTC()
		cmd.Deadline = &d
	}
	value, err := json.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	if err := c.checkTopics(ctx); err != nil {
		return nil, err
	}
	// Read outcomes from the current end of the status topic: ours comes after it.
	ends, err := c.admin.ListEndOffsets(ctx, c.cfg.StatusTopic)
	if err != nil {
		return nil, fmt.Errorf("status topic %s: %w", c.cfg.StatusTopic, err)
	}
	// Keyed by replay key (docs/ARCHITECTURE.md); rollback names only a projection, cancel the
	// command it cancels.
	key := cmd.Replay
	if key == "" {
		key = cmd.Projection
	}
	if cmd.Command == "cancel" {
		key, _ = CancelTarget(&cmd)
	}
	rec := &kgo.Record{Topic: c.cfg.ControlTopic, Key: []byte(key), Value: value}
	if c.secret != "" {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: SignatureHeader, Value: []byte(Sign([]byte(c.secret), value))})
	}
	if err := c.cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return nil, fmt.Errorf("publish the command to %s: %w", c.cfg.ControlTopic, err)
	}
	want := []byte(OutcomeKey(cmd.ID))
	var final, started *Outcome
	err = c.consume(ctx, ends.KOffsets(), func(r *kgo.Record) bool {
		if string(r.Key) != string(want) || r.Value == nil {
			return true
		}
		var o Outcome
		if err := json.Unmarshal(r.Value, &o); err != nil {
			return true
		}
		if !o.Final() {
			started = &o
			return true
		}
		final = &o
		return false
	})
	switch {
	case final != nil:
		return final, nil
	case err != nil && !errors.Is(err, context.DeadlineExceeded):
		return started, err
	case started != nil:
		return started, fmt.Errorf("command %s (%s) started on %s at %s and is %w; its outcome will follow on %s: see kreplay status",
			cmd.ID, Describe(&cmd), orUnknown(started.ExecutedBy), started.ExecutedAt.UTC().Format(time.RFC3339), ErrStillRunning, c.cfg.StatusTopic)
	}
	deadline := cmd.Expires(cmd.IssuedAt)
	if time.Now().Before(deadline) { // a caller that stopped waiting before the command's deadline
		return nil, fmt.Errorf("%w: command %s (%s) has not started yet; it may start until its deadline %s (kreplay cancel %s prevents it); is kreplay serve running against %s?",
			ErrNoServe, cmd.ID, Describe(&cmd), deadline.UTC().Format(time.RFC3339), cmd.ID, strings.Join(c.brokers(), ","))
	}
	return nil, fmt.Errorf("%w: command %s (%s) was not started before its deadline %s, so it will not run (a serve that reads it later answers \"expired\"); is kreplay serve running against %s?",
		ErrNoServe, cmd.ID, Describe(&cmd), deadline.UTC().Format(time.RFC3339), strings.Join(c.brokers(), ","))
}

// Describe names a command for messages: "promote balances_v2", "rollback balances",
// "cancel 3f2a...".
func Describe(c *Command) string {
	switch {
	case c.Command == "cancel":
		id, _ := CancelTarget(c)
		return strings.TrimSpace("cancel " + id)
	case c.Replay != "":
		return c.Command + " " + c.Replay
	case c.Projection != "":
		return c.Command + " " + c.Projection
	}
	return c.Command
}

func orUnknown(s string) string {
	if s == "" {
		return "an unknown instance"
	}
	return s
}

func (c *Client) brokers() []string { return c.seeds }

func (c *Client) checkTopics(ctx context.Context) error {
	topics, err := c.admin.ListTopics(ctx, c.cfg.ControlTopic, c.cfg.StatusTopic)
	if err != nil {
		return fmt.Errorf("reach Kafka at %s: %w", strings.Join(c.brokers(), ","), err)
	}
	for _, t := range []string{c.cfg.ControlTopic, c.cfg.StatusTopic} {
		if d, ok := topics[t]; !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
			return fmt.Errorf("topic %s does not exist on %s: kreplay serve creates it at start; is serve running against this cluster?",
				t, strings.Join(c.brokers(), ","))
		}
	}
	return nil
}

// Statuses reads the status topic to its end and returns the latest status of every version
// (removed ones excluded), by projection and key. It waits up to ctx for a first status when
// the topic has none yet. The first call reads the (compacted) topic from its start; later
// calls read only what was published since.
func (c *Client) Statuses(ctx context.Context) ([]Status, error) {
	if c.statuses == nil {
		if err := c.checkTopics(ctx); err != nil {
			return nil, err
		}
		cl, err := kgo.NewClient(append(c.cl.Opts(), kgo.ConsumeTopics(c.cfg.StatusTopic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))...)
		if err != nil {
			return nil, err
		}
		c.statuses = &statusFollower{cl: cl, pos: map[int32]int64{}, latest: map[string]Status{}}
	}
	f := c.statuses
	for {
		ends, err := c.admin.ListEndOffsets(ctx, c.cfg.StatusTopic)
		if err == nil {
			err = ends.Error()
		}
		if err == nil {
			err = f.readTo(ctx, ends)
		}
		switch {
		case err != nil && ctx.Err() != nil && len(f.latest) == 0:
			return []Status{}, nil // the wait ended with nothing published
		case err != nil:
			return nil, fmt.Errorf("status topic %s: %w", c.cfg.StatusTopic, err)
		case len(f.latest) > 0:
			return f.sorted(), nil
		}
		select {
		case <-ctx.Done():
			return []Status{}, nil
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// statusFollower is a consumer of the status topic and the latest status per version it read.
type statusFollower struct {
	cl     *kgo.Client
	pos    map[int32]int64 // the next offset to read, per partition
	latest map[string]Status
}

// readTo reads until every partition's position reaches its end offset in ends.
func (f *statusFollower) readTo(ctx context.Context, ends kadm.ListedOffsets) error {
	reached := func() bool {
		done := true
		ends.Each(func(o kadm.ListedOffset) { done = done && f.pos[o.Partition] >= o.Offset })
		return done
	}
	for !reached() {
		fetches := f.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ferr error
		fetches.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return ferr
		}
		fetches.EachRecord(func(r *kgo.Record) {
			f.pos[r.Partition] = r.Offset + 1
			if strings.Contains(string(r.Key), ":") {
				return // a command's outcome or a catalog's announcement: replay keys hold no ':'
			}
			if r.Value == nil {
				delete(f.latest, string(r.Key))
				return
			}
			var st Status
			if json.Unmarshal(r.Value, &st) == nil {
				f.latest[string(r.Key)] = st
			}
		})
	}
	return nil
}

// sorted is the latest statuses by projection and key.
func (f *statusFollower) sorted() []Status {
	out := make([]Status, 0, len(f.latest))
	for _, st := range f.latest {
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Projection != out[j].Projection {
			return out[i].Projection < out[j].Projection
		}
		return out[i].Key < out[j].Key
	})
	return out
}

// consume reads the status topic from the given offsets, calling fn for each record until fn
// returns false or ctx ends.
func (c *Client) consume(ctx context.Context, from map[string]map[int32]kgo.Offset, fn func(*kgo.Record) bool) error {
	opts := append(c.cl.Opts(), kgo.ConsumePartitions(from), kgo.FetchMaxWait(200*time.Millisecond))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ferr error
		fetches.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return ferr
		}
		more := true
		fetches.EachRecord(func(r *kgo.Record) {
			if more {
				more = fn(r)
			}
		})
		if !more {
			return nil
		}
	}
}
