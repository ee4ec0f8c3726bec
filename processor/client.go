package processor

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

	"github.com/kreplay/kreplay/topology"
)

// Client is how operators drive kreplay from outside: it publishes commands on the control
// topic and waits for their outcomes, and reads statuses from the status topic. It needs only
// Kafka (no database credentials).
type Client struct {
	cfg      topology.KafkaConfig
	secret   string
	issuedBy string
	cl       *kgo.Client
	admin    *kadm.Client
	seeds    []string
}

// NewClient connects to the brokers of cfg.Kafka (the address of a local serve's embedded
// broker when brokers is "embedded") with cfg.Control.Secret for signing.
func NewClient(cfg *topology.Config, logger *slog.Logger) (*Client, error) {
	brokers := cfg.Kafka.Brokers
	if len(brokers) == 1 && brokers[0] == "embedded" {
		brokers = []string{cfg.Kafka.EmbeddedListen}
	}
	opts, err := KafkaOpts(cfg.Kafka, brokers, cfg.Kafka.ClientID+"-cli", logger)
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
	return &Client{cfg: cfg.Kafka, secret: cfg.Control.Secret, issuedBy: by, cl: cl, admin: kadm.NewClient(cl), seeds: brokers}, nil
}

// Close closes the client.
func (c *Client) Close() { c.cl.Close() }

// ErrNoServe: nothing answered on the status topic in time.
var ErrNoServe = errors.New("no answer from kreplay serve")

// Send publishes a command (an id and issued_at/by are filled in when empty), signed when a
// secret is configured, and waits until its outcome appears on the status topic or ctx ends.
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
	// Keyed by replay key (DESIGN.md); rollback names only a projection.
	key := cmd.Replay
	if key == "" {
		key = cmd.Projection
	}
	rec := &kgo.Record{Topic: c.cfg.ControlTopic, Key: []byte(key), Value: value}
	if c.secret != "" {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: SignatureHeader, Value: []byte(Sign([]byte(c.secret), value))})
	}
	if err := c.cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return nil, fmt.Errorf("publish the command to %s: %w", c.cfg.ControlTopic, err)
	}
	want := []byte(OutcomeKey(cmd.ID))
	var out *Outcome
	err = c.consume(ctx, ends.KOffsets(), false, func(r *kgo.Record) bool {
		if string(r.Key) != string(want) || r.Value == nil {
			return true
		}
		var o Outcome
		if err := json.Unmarshal(r.Value, &o); err == nil {
			out = &o
		}
		return out == nil
	})
	if out != nil {
		return out, nil
	}
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		return nil, fmt.Errorf("%w: no outcome for command %s (%s) before the timeout; is kreplay serve running against %s? The command stays on the control topic and will run when one is",
			ErrNoServe, cmd.ID, cmd.Command, strings.Join(c.brokers(), ","))
	}
	return nil, err
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
// the topic has none yet.
func (c *Client) Statuses(ctx context.Context) ([]Status, error) {
	if err := c.checkTopics(ctx); err != nil {
		return nil, err
	}
	latest := map[string]*Status{}
	for {
		ends, err := c.admin.ListEndOffsets(ctx, c.cfg.StatusTopic)
		if err != nil {
			if ctx.Err() != nil && len(latest) == 0 {
				return []Status{}, nil // the wait ended with nothing published
			}
			return nil, fmt.Errorf("status topic %s: %w", c.cfg.StatusTopic, err)
		}
		starts := map[string]map[int32]kgo.Offset{c.cfg.StatusTopic: {}}
		endAt := map[int32]int64{}
		ends.Each(func(o kadm.ListedOffset) {
			starts[c.cfg.StatusTopic][o.Partition] = kgo.NewOffset().AtStart()
			endAt[o.Partition] = o.Offset
		})
		pending := 0
		for _, e := range endAt {
			if e > 0 {
				pending++
			}
		}
		if pending > 0 {
			err = c.consume(ctx, starts, true, func(r *kgo.Record) bool {
				if !strings.HasPrefix(string(r.Key), "command:") {
					if r.Value == nil {
						delete(latest, string(r.Key))
					} else {
						var st Status
						if json.Unmarshal(r.Value, &st) == nil {
							latest[string(r.Key)] = &st
						}
					}
				}
				if r.Offset+1 >= endAt[r.Partition] {
					pending--
				}
				return pending > 0
			})
			if err != nil {
				if ctx.Err() != nil && len(latest) == 0 {
					return []Status{}, nil
				}
				return nil, err
			}
		}
		if len(latest) > 0 {
			break
		}
		select {
		case <-ctx.Done():
			return []Status{}, nil
		case <-time.After(500 * time.Millisecond):
		}
	}
	out := make([]Status, 0, len(latest))
	for _, st := range latest {
		out = append(out, *st)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Projection != out[j].Projection {
			return out[i].Projection < out[j].Projection
		}
		return out[i].Key < out[j].Key
	})
	return out, nil
}

// consume reads the status topic from the given offsets, calling fn for each record until fn
// returns false or ctx ends.
func (c *Client) consume(ctx context.Context, from map[string]map[int32]kgo.Offset, toEnd bool, fn func(*kgo.Record) bool) error {
	opts := append(c.cl.Opts(), kgo.ConsumePartitions(from), kgo.FetchMaxWait(200*time.Millisecond))
	if toEnd {
		opts = append(opts, kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	}
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
