package processor_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/processor"
	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/processor/lifecycle"
	"github.com/kreplay/kreplay/store"
)

// outcomes reads the final outcomes on the status topic (command id -> outcomes, in order),
// leaving out the interim ones of commands that started.
func (b *bundle) outcomes() map[string][]control.Outcome {
	b.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.kafka.Addrs...), kgo.ConsumeTopics("kreplay.status"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(b.t, err)
	defer cl.Close()
	ends := b.kafka.EndOffsets("kreplay.status")
	out := map[string][]control.Outcome{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for read := int64(0); read < ends[0] && ctx.Err() == nil; {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			read++
			if strings.HasPrefix(string(r.Key), "command:") {
				var o control.Outcome
				require.NoError(b.t, json.Unmarshal(r.Value, &o))
				if o.Final() {
					out[o.CommandID] = append(out[o.CommandID], o)
				}
			}
		})
	}
	return out
}

// waitOutcome waits for the n-th outcome of a command id.
func (b *bundle) waitOutcome(id string, n int) control.Outcome {
	b.t.Helper()
	var got []control.Outcome
	eventually(b.t, 30*time.Second, func() bool { got = b.outcomes()[id]; return len(got) >= n }, "no outcome #%d for command %s", n, id)
	return got[n-1]
}

func (b *bundle) command(value string, headers ...kgo.RecordHeader) {
	b.t.Helper()
	b.kafka.Produce(&kgo.Record{Topic: "kreplay.control", Value: []byte(value), Headers: headers})
}

// A raw JSON command produced by a plain Kafka producer creates and starts a replay and its
// outcome appears on the status topic; the same id sent again is executed once; invalid and
// malformed commands get outcomes with reasons and change nothing; re-reading the whole control
// topic after a restart changes nothing.
func TestControlTopicCommands(t *testing.T) {
	t.Parallel()
	const topic = "bank.accounts"
	b := setup(t, map[string]int32{topic: 4})
	bank := bankgen.New(topic, 4, 50, 81)
	b.kafka.Produce(bank.Events(1000)...)
	reg := prometheus.NewRegistry()
	cfg := b.config(bankgen.Config(topic, 4, "global", true))
	r := b.startWith(cfg, processor.Options{Registry: reg})
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("balances_v1", topic) }, "v1 did not catch up")

	b.command(`{"id":"c1","command":"create","replay":"balances_v2","projection":"balances","options":{"start":true},"issued_by":"test"}`)
	o := b.waitOutcome("c1", 1)
	require.True(t, o.OK, o.Error)
	require.Equal(t, "balances_v2", o.Replay)
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("balances_v2", topic) }, "v2 did not catch up")
	require.Equal(t, bank.Balances(), b.balances("balances_v2"))

	b.command(`{"id":"c1","command":"create","replay":"balances_v2","projection":"balances","options":{"start":true}}`)
	o = b.waitOutcome("c1", 2)
	require.True(t, o.Duplicate)
	require.True(t, o.OK, "a duplicate reports the first execution's outcome")
	require.Equal(t, int64(1), b.scalar("SELECT count(*) FROM kreplay.commands WHERE id = 'c1'"))

	for id, tc := range map[string]struct{ value, want string }{
		"bad1": {`{"id":"bad1","command":"start","replay":"nope_v1"}`, `unknown replay "nope_v1"`},
		"bad2": {`{"id":"bad2","command":"start","replay":"balances_v1"}`, "cannot start balances_v1: it is live"},
		"bad3": {`{"id":"bad3","command":"promote","replay":"balances_v2","options":{"max_lag":"lots"}}`, "bad options"},
		"bad4": {`{"id":"bad4","command":"explode","replay":"balances_v2"}`, `unknown command "explode"`},
		"bad5": {`{"id":"bad5","command":"create","replay":"x\"; DROP SCHEMA public; --","projection":"balances"}`, "replay key"},
		"bad6": {`{"id":"bad6","command":"remove","replay":"balances_v1"}`, "live version"},
		"bad7": {`{"id":"bad7","command":"create","replay":"balances_v3","projection":"balances","options":{"snice":"2026-01-01T00:00:00Z"}}`, `unknown field "snice"`},
		"bad8": {`{"id":"bad8","command":"rollback"}`, `rollback needs "projection"`},
	} {
		b.command(tc.value)
		o := b.waitOutcome(id, 1)
		require.False(t, o.OK, id)
		require.Contains(t, o.Error, tc.want, id)
	}
	b.command(`not json at all`)
	b.command(``)
	b.command(`{"id":"c9","command":"create","replay":"balances_v9"`) // truncated
	eventually(t, 10*time.Second, func() bool {
		n := 0
		for id, os := range b.outcomes() {
			if strings.HasPrefix(id, "offset-") || id == "c9" {
				n += len(os)
				require.Contains(t, os[0].Error, "malformed")
			}
		}
		return n == 3
	}, "malformed commands got no outcome")
	require.Equal(t, int64(2), b.scalar("SELECT count(*) FROM kreplay.versions"), "invalid commands changed nothing")
	require.Equal(t, 1.0, metricValue(t, reg, "kreplay_control_commands_total", map[string]string{"command": "create", "result": "ok"}))
	require.Equal(t, 1.0, metricValue(t, reg, "kreplay_control_commands_total", map[string]string{"command": "create", "result": "duplicate"}))
	// three unparseable records and one unknown command (labelled "invalid": bounded labels)
	require.Equal(t, 4.0, metricValue(t, reg, "kreplay_control_commands_total", map[string]string{"command": "invalid", "result": "malformed"}))

	// Restart and read the whole control topic again: nothing is executed twice.
	require.NoError(t, r.stop())
	_, err := b.db.Exec(context.Background(), "DELETE FROM kreplay.control_positions")
	require.NoError(t, err)
	before := b.outcomes()
	b.start(cfg)
	// c1 is on the topic twice: both records are read again, both reported as duplicates
	eventually(t, 30*time.Second, func() bool { return len(b.outcomes()["c1"]) == len(before["c1"])+2 }, "the topic was not re-read")
	for _, o := range b.outcomes()["c1"][len(before["c1"]):] {
		require.True(t, o.Duplicate)
	}
	require.Equal(t, int64(2), b.scalar("SELECT count(*) FROM kreplay.versions"))
	require.Equal(t, bank.Balances(), b.balances("balances_v2"))
}

// With control.secret set, commands must carry a valid HMAC-SHA256 signature: unsigned and
// wrongly signed ones are refused, counted, and change nothing.
func TestSignedCommands(t *testing.T) {
	t.Parallel()
	b, _, _ := promotableWith(t, "s3cret")
	cmd := `{"id":"p1","command":"promote","replay":"balances_v2"}`
	b.command(cmd)
	o := b.waitOutcome("p1", 1)
	require.False(t, o.OK)
	require.Contains(t, o.Error, "unauthorized")

	cmd2 := `{"id":"p2","command":"promote","replay":"balances_v2"}`
	b.command(cmd2, kgo.RecordHeader{Key: control.SignatureHeader, Value: []byte(control.Sign([]byte("guess"), []byte(cmd2)))})
	o = b.waitOutcome("p2", 1)
	require.False(t, o.OK)
	require.Contains(t, o.Error, "wrong secret")
	require.Equal(t, store.StateTailing, b.state("balances_v2"), "nothing changed")
	require.Equal(t, int64(0), b.scalar("SELECT count(*) FROM kreplay.commands"), "refused commands are not recorded as executed")

	cmd3 := `{"id":"p3","command":"promote","replay":"balances_v2","options":{"wait":"30s"}}`
	b.command(cmd3, kgo.RecordHeader{Key: control.SignatureHeader, Value: []byte(control.Sign([]byte("s3cret"), []byte(cmd3)))})
	o = b.waitOutcome("p3", 1)
	require.True(t, o.OK, o.Error)
	require.Equal(t, store.StateLive, b.state("balances_v2"))
}

func promotableWith(t *testing.T, secret string) (*bundle, *running, *bankgen.Bank) {
	t.Helper()
	const topic = "bank.accounts"
	b := setup(t, map[string]int32{topic: 4})
	bank := bankgen.New(topic, 4, 50, 91)
	b.kafka.Produce(bank.Events(1000)...)
	cfg := b.config(bankgen.Config(topic, 4, "global", true))
	cfg.Control.Secret = secret
	r := b.start(cfg)
	_, err := r.p.Manager().Create(context.Background(), lifecycle.CreateRequest{Key: "balances_v2", Projection: "balances", Start: true})
	require.NoError(t, err)
	eventually(t, 30*time.Second, func() bool { return b.state("balances_v2") == store.StateTailing }, "v2 did not reach tailing")
	return b, r, bank
}

// A command addressed to another installation (another kreplay on the same control topic, or
// an old command of the installation that used the topic before) is left alone: no outcome,
// nothing recorded or changed, a counter. One without the field (another producer's) runs.
func TestCommandsAddressedElsewhere(t *testing.T) {
	t.Parallel()
	b := setup(t, map[string]int32{bankTopic: 2})
	b.kafka.Produce(bankgen.New(bankTopic, 2, 20, 5).Events(100)...)
	reg := prometheus.NewRegistry()
	b.startWith(b.config(bankgen.Config(bankTopic, 2, "global", false)), processor.Options{Registry: reg})
	b.command(`{"id":"x1","installation":"shop","command":"create","replay":"balances_v2","projection":"balances"}`)
	b.command(`{"id":"x2","installation":"kreplay","command":"create","replay":"balances_v3","projection":"balances"}`)
	b.command(`{"id":"x3","command":"create","replay":"balances_v4","projection":"balances"}`)
	require.True(t, b.waitOutcome("x2", 1).OK)
	require.True(t, b.waitOutcome("x3", 1).OK)
	require.NotContains(t, b.outcomes(), "x1")
	require.Equal(t, int64(0), b.scalar("SELECT count(*) FROM kreplay.versions WHERE key = 'balances_v2'"))
	require.Equal(t, int64(0), b.scalar("SELECT count(*) FROM kreplay.commands WHERE id = 'x1'"))
	require.Equal(t, 1.0, metricValue(t, reg, "kreplay_control_commands_total", map[string]string{"command": "create", "result": "other_installation"}))
}
