// Package kafkatest runs franz-go's kfake broker (the real Kafka wire protocol, in process) for
// tests, with helpers to produce events and read what consumer groups committed.
package kafkatest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Cluster is a kfake cluster for one test.
type Cluster struct {
	*kfake.Cluster
	t     testing.TB
	Addrs []string
	cl    *kgo.Client
	Admin *kadm.Client
}

// New starts a one-broker cluster with the topics (name -> partitions), closed at cleanup.
// Group session timeouts down to 100ms are allowed, so that failover tests are quick.
func New(t testing.TB, topics map[string]int32, opts ...kfake.Opt) *Cluster {
	t.Helper()
	return NewWithClient(t, topics, opts, nil)
}

// NewWithClient is New with options for the cluster's own client too (SASL, TLS).
func NewWithClient(t testing.TB, topics map[string]int32, opts []kfake.Opt, clientOpts []kgo.Opt) *Cluster {
	t.Helper()
	base := []kfake.Opt{kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100 * time.Millisecond)}
	for name, n := range topics {
		base = append(base, kfake.SeedTopics(n, name))
	}
	c, err := kfake.NewCluster(append(base, opts...)...)
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.ProducerLinger(0),
		kgo.RecordPartitioner(kgo.ManualPartitioner())}, clientOpts...)...)
	if err != nil {
		t.Fatalf("kgo: %v", err)
	}
	t.Cleanup(cl.Close)
	return &Cluster{Cluster: c, t: t, Addrs: c.ListenAddrs(), cl: cl, Admin: kadm.NewClient(cl)}
}

// Client is the cluster's producer/admin client (records go to the partition they name).
func (c *Cluster) Client() *kgo.Client { return c.cl }

// Produce writes records synchronously (each to its Partition) and fails the test on error.
func (c *Cluster) Produce(rs ...*kgo.Record) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for len(rs) > 0 {
		n := min(len(rs), 5000)
		if err := c.cl.ProduceSync(ctx, rs[:n]...).FirstErr(); err != nil {
			c.t.Fatalf("produce: %v", err)
		}
		rs = rs[n:]
	}
}

// EndOffsets are the high watermarks of a topic's partitions.
func (c *Cluster) EndOffsets(topic string) map[int32]int64 {
	c.t.Helper()
	// Retried for a while: fault tests remove and add brokers, and the admin client's metadata
	// may still name one that has gone.
	var err error
	for range 40 {
		var ends kadm.ListedOffsets
		if ends, err = c.Admin.ListEndOffsets(context.Background(), topic); err == nil {
			out := map[int32]int64{}
			ends.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
			return out
		}
		time.Sleep(250 * time.Millisecond)
	}
	c.t.Fatalf("list end offsets: %v", err)
	return nil
}

// Committed are a group's committed offsets for a topic (partition -> offset).
func (c *Cluster) Committed(group, topic string) map[int32]int64 {
	c.t.Helper()
	resp, err := c.Admin.FetchOffsets(context.Background(), group)
	if err != nil {
		c.t.Fatalf("fetch offsets of %s: %v", group, err)
	}
	out := map[int32]int64{}
	for p, o := range resp[topic] {
		if o.Err == nil {
			out[p] = o.At
		}
	}
	return out
}

// Lag is a group's total lag on a topic as kadm's Lag computes it: committed offsets against
// the high watermarks.
func (c *Cluster) Lag(group, topic string) int64 {
	c.t.Helper()
	lags, err := c.Admin.Lag(context.Background(), group)
	if err != nil {
		c.t.Fatalf("lag of %s: %v", group, err)
	}
	gl, ok := lags[group]
	if !ok {
		c.t.Fatalf("lag of %s: group not found", group)
	}
	if gl.Error() != nil {
		c.t.Fatalf("lag of %s: %v", group, gl.Error())
	}
	var total int64
	for _, pl := range gl.Lag[topic] {
		total += pl.Lag
	}
	return total
}

// StableOffsets are the last stable offsets of a topic's partitions: the ends a read_committed
// consumer reaches (below the high watermarks while a transaction is open).
func (c *Cluster) StableOffsets(topic string) map[int32]int64 {
	c.t.Helper()
	ends, err := c.Admin.ListCommittedOffsets(context.Background(), topic)
	if err != nil {
		c.t.Fatalf("list last stable offsets: %v", err)
	}
	out := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

// StableLag is a group's total lag on a topic as kadm computes it (CalculateGroupLag) from its
// committed offsets and the last stable offsets, rather than the high watermarks kadm's Lag
// uses: the lag of a read_committed consumer. A group not there yet is an error.
func (c *Cluster) StableLag(group, topic string) (int64, error) {
	ctx := context.Background()
	described, err := c.Admin.DescribeGroups(ctx, group)
	if err != nil {
		return 0, fmt.Errorf("describe %s: %w", group, err)
	}
	commits, err := c.Admin.FetchOffsets(ctx, group)
	if err != nil {
		return 0, fmt.Errorf("fetch offsets of %s: %w", group, err)
	}
	starts, err := c.Admin.ListStartOffsets(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("list start offsets: %w", err)
	}
	ends, err := c.Admin.ListCommittedOffsets(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("list last stable offsets: %w", err)
	}
	g, ok := described[group]
	if !ok {
		return 0, fmt.Errorf("lag of %s: group not found", group)
	}
	var total int64
	for _, pl := range kadm.CalculateGroupLagWithStartOffsets(g, commits, starts, ends)[topic] {
		if pl.Err != nil {
			return 0, fmt.Errorf("lag of %s on %s[%d]: %w", group, topic, pl.Partition, pl.Err)
		}
		total += pl.Lag
	}
	return total, nil
}

// String names the cluster for logs.
func (c *Cluster) String() string { return fmt.Sprint(c.Addrs) }
