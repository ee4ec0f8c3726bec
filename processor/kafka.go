package processor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"github.com/twmb/franz-go/plugin/kprom"
	"github.com/twmb/franz-go/plugin/kslog"

	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/topology"
)

// KafkaOpts are the client options every kreplay client uses to reach the cluster: seeds,
// client ID, TLS and SASL. The CLI uses them too.
func KafkaOpts(cfg topology.KafkaConfig, brokers []string, clientID string, logger *slog.Logger) ([]kgo.Opt, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.ClientID(clientID),
	}
	if logger != nil {
		opts = append(opts, kgo.WithLogger(kslog.New(logger)))
	}
	if cfg.TLS.Enabled {
		tc, err := tlsConfig(cfg.TLS)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	switch cfg.SASL.Mechanism {
	case "":
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Auth{User: cfg.SASL.Username, Pass: cfg.SASL.Password}.AsMechanism()))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: cfg.SASL.Username, Pass: cfg.SASL.Password}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: cfg.SASL.Username, Pass: cfg.SASL.Password}.AsSha512Mechanism()))
	default:
		return nil, fmt.Errorf("kafka.sasl.mechanism %q is not supported (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)", cfg.SASL.Mechanism)
	}
	return opts, nil
}

func tlsConfig(c topology.TLSConfig) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName, InsecureSkipVerify: c.InsecureSkipVerify} //nolint:gosec // opt-in, documented as for testing only
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("kafka.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafka.tls.ca_file %s: no PEM certificate found", c.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" || c.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("kafka.tls.cert_file/key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// kafkaOpts are the options of one of this processor's clients, with its kprom metrics.
func (p *Processor) kafkaOpts(clientID string) []kgo.Opt {
	opts := append([]kgo.Opt(nil), p.kopts...)
	opts = append(opts, kgo.ClientID(clientID))
	if p.reg != nil {
		opts = append(opts, kgo.WithHooks(kprom.NewMetrics("kreplay_kafka", kprom.Registry(p.reg), kprom.WithClientLabel())))
	}
	return opts
}

// ensureTopics creates the topics kreplay writes when they are missing: the control topic (one
// partition, so that commands are totally ordered), the status topic (compacted: the latest
// status per key) and the dead-letter topic.
func (p *Processor) ensureTopics(ctx context.Context) error {
	k := p.cfg.Kafka
	type want struct {
		name       string
		partitions int32
		configs    map[string]*string
	}
	compact, segment, dirty := "compact", "600000", "0.1"
	wants := []want{
		{k.ControlTopic, 1, nil},
		// Compacted with small segments, so that readers of the latest statuses (the CLI) do not
		// read days of periodic refreshes.
		{k.StatusTopic, 1, map[string]*string{"cleanup.policy": &compact, "segment.ms": &segment, "min.cleanable.dirty.ratio": &dirty}},
		{k.DeadLetterTopic, 1, nil},
	}
	// Create only what is missing: with ACLs, kreplay may read and write these topics without
	// being allowed to create topics.
	names := make([]string, len(wants))
	for i, w := range wants {
		names[i] = w.name
	}
	existing, err := p.admin.ListTopics(ctx, names...)
	if err != nil {
		return fmt.Errorf("list topics: %w", err)
	}
	for _, w := range wants {
		if d, ok := existing[w.name]; ok && d.Err == nil {
			continue
		}
		resp, err := p.admin.CreateTopic(ctx, w.partitions, -1, w.configs, w.name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", w.name, err)
		}
	}
	return nil
}

// partitionBounds lists, for the topics, each partition's end (last stable offset: consumers
// read committed) and log start offsets.
func (p *Processor) partitionBounds(ctx context.Context, topics []string) (ends, starts map[store.TopicPartition]int64, err error) {
	endOffs, err := p.admin.ListCommittedOffsets(ctx, topics...)
	if err != nil {
		return nil, nil, err
	}
	startOffs, err := p.admin.ListStartOffsets(ctx, topics...)
	if err != nil {
		return nil, nil, err
	}
	ends, starts = map[store.TopicPartition]int64{}, map[store.TopicPartition]int64{}
	var firstErr error
	endOffs.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			firstErr = cmpErr(firstErr, fmt.Errorf("%s[%d]: %w", o.Topic, o.Partition, o.Err))
			return
		}
		ends[store.TopicPartition{Topic: o.Topic, Partition: o.Partition}] = o.Offset
	})
	startOffs.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			starts[store.TopicPartition{Topic: o.Topic, Partition: o.Partition}] = o.Offset
		}
	})
	return ends, starts, firstErr
}

// existingPartitions says which of tps exist in Kafka now (their topic was not deleted).
func (p *Processor) existingPartitions(ctx context.Context, tps []store.TopicPartition) (map[store.TopicPartition]bool, error) {
	var topics []string
	for _, tp := range tps {
		topics = append(topics, tp.Topic)
	}
	md, err := p.admin.Metadata(ctx, topics...)
	if err != nil {
		return nil, err
	}
	out := map[store.TopicPartition]bool{}
	for _, tp := range tps {
		td, ok := md.Topics[tp.Topic]
		switch {
		case !ok || errors.Is(td.Err, kerr.UnknownTopicOrPartition):
		case td.Err != nil:
			return nil, fmt.Errorf("metadata of %s: %w", tp.Topic, td.Err)
		default:
			_, out[tp] = td.Partitions[tp.Partition]
		}
	}
	return out, nil
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// ownersGone reports whether a claim refused for an older generation may be forced: this member
// is in the group and none of the members the checkpoints name as owners are. That happens when
// the group was deleted (or expired while every instance was down) and its generations
// restarted; a genuinely stale member never passes, as the newer owner is still in the group.
func (p *Processor) ownersGone(ctx context.Context, key, group, member string, tps []store.TopicPartition) bool {
	described, err := p.admin.DescribeGroups(ctx, group)
	if err != nil {
		return false
	}
	g, ok := described[group]
	if !ok || g.Err != nil {
		return false
	}
	members := map[string]bool{}
	for _, m := range g.Members {
		members[m.MemberID] = true
	}
	if !members[member] {
		return false
	}
	cps, err := p.store.Checkpoints(ctx, key)
	if err != nil {
		return false
	}
	want := map[store.TopicPartition]bool{}
	for _, tp := range tps {
		want[tp] = true
	}
	for _, c := range cps {
		if want[store.TopicPartition{Topic: c.Topic, Partition: c.Partition}] && c.Member != "" && c.Member != member && members[c.Member] {
			return false
		}
	}
	return true
}
