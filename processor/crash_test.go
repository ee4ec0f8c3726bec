package processor_test

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/processor"
)

// A processor stopped abruptly mid-stream (batches in flight aborted, no offsets committed to
// Kafka), again and again while events keep arriving, loses and duplicates nothing: after the
// last restart the balances equal those computed from the events and every checkpoint equals
// the high watermark.
func TestAbruptStopsLoseAndDuplicateNothing(t *testing.T) {
	t.Parallel()
	const topic = "bank.accounts"
	b := setup(t, map[string]int32{topic: 8})
	bank := bankgen.New(topic, 8, 300, 7)
	b.kafka.Produce(bank.Events(15000)...)
	cfg := b.config(bankgen.Config(topic, 8, "global", false))
	cfg.Projections[0].BatchSize = 200

	var mu sync.Mutex
	producing := make(chan struct{})
	go func() { // keep producing while the processor is killed and restarted
		defer close(producing)
		for range 30 {
			mu.Lock()
			recs := bank.Events(500)
			mu.Unlock()
			b.kafka.Produce(recs...)
			time.Sleep(40 * time.Millisecond)
		}
	}()

	rnd := rand.New(rand.NewPCG(1, 2))
	midStream := 0
	for i := range 5 {
		p := processor.New(cfg, processor.Options{Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: logLevel()}))})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		<-p.Started()
		// Kill once this run has applied something, at a random point after that.
		// (Once the producer is done and everything is applied, there is nothing left to apply.)
		before := b.scalar("SELECT coalesce(sum(applied_events), 0) FROM kreplay.checkpoints WHERE version = 'balances_v1'")
		eventually(t, 30*time.Second, func() bool {
			applied := b.scalar("SELECT coalesce(sum(applied_events), 0) FROM kreplay.checkpoints WHERE version = 'balances_v1'")
			select {
			case <-producing:
				if applied == b.produced(topic) {
					return true
				}
			default:
			}
			return applied > before
		}, "run %d applied nothing", i)
		time.Sleep(time.Duration(rnd.IntN(150)) * time.Millisecond)
		processor.Kill(p, cancel)
		select {
		case <-done: //nolint:errcheck // killed
		case <-time.After(30 * time.Second):
			t.Fatalf("kill %d: processor did not stop", i)
		}
		applied := b.scalar("SELECT coalesce(sum(applied_events), 0) FROM kreplay.checkpoints WHERE version = 'balances_v1'")
		produced := b.produced(topic)
		t.Logf("kill %d: %d of %d events applied", i, applied, produced)
		if applied > 0 && applied < produced {
			midStream++
		}
	}
	require.Positive(t, midStream, "no kill happened mid-stream")
	<-producing
	b.start(cfg)
	eventually(t, 60*time.Second, func() bool { return b.caughtUp("balances_v1", topic) }, "balances_v1 did not catch up")
	mu.Lock()
	want, total := bank.Balances(), bank.Total()
	mu.Unlock()
	require.Equal(t, want, b.balances("public"))
	require.Equal(t, int64(total), b.scalar("SELECT sum(applied_events) FROM kreplay.checkpoints WHERE version = 'balances_v1'"))
}
