package processor

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/topology"
)

// Headers added to a dead letter; the record's own key, value and headers are kept as they were.
const (
	HeaderError      = "kreplay.error"
	HeaderTopic      = "kreplay.topic"
	HeaderPartition  = "kreplay.partition"
	HeaderOffset     = "kreplay.offset"
	HeaderProjection = "kreplay.projection"
	HeaderVersion    = "kreplay.version"
)

// deadLetter copies a poison record, with the reason in headers, to the dead-letter topic and
// waits until the broker has it: only then does the checkpoint move past the record. A crash in
// between may copy it twice (at least once), never lose it.
func (p *Processor) deadLetter(ctx context.Context, v *store.Version, rec *kgo.Record, ev *topology.Event, cause error) error {
	if rec == nil {
		return errors.New("dead letter: the record is not available")
	}
	out := &kgo.Record{
		Topic: p.cfg.Kafka.DeadLetterTopic,
		Key:   rec.Key,
		Value: rec.Value,
		Headers: append(append([]kgo.RecordHeader(nil), rec.Headers...),
			kgo.RecordHeader{Key: HeaderError, Value: []byte(cause.Error())},
			kgo.RecordHeader{Key: HeaderTopic, Value: []byte(ev.Topic)},
			kgo.RecordHeader{Key: HeaderPartition, Value: []byte(strconv.Itoa(int(ev.Partition)))},
			kgo.RecordHeader{Key: HeaderOffset, Value: []byte(strconv.FormatInt(ev.Offset, 10))},
			kgo.RecordHeader{Key: HeaderProjection, Value: []byte(v.Projection)},
			kgo.RecordHeader{Key: HeaderVersion, Value: []byte(v.Key)},
		),
		Timestamp: rec.Timestamp,
	}
	// franz-go retries what Kafka calls retriable; the caller retries the rest, saying why.
	ctx, cancel := context.WithTimeout(ctx, deadLetterTimeout)
	defer cancel()
	if err := p.producer.ProduceSync(ctx, out).FirstErr(); err != nil {
		return fmt.Errorf("dead letter to %s: %w", out.Topic, err)
	}
	return nil
}

// deadLetterTimeout bounds one attempt to write a dead letter.
const deadLetterTimeout = 30 * time.Second
