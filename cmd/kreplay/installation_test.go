package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/processor/kafkatest"
)

// ordersProjection is a second installation's projection, customer_orders, on the bank topic.
var ordersProjection = strings.Replace(bankgen.Config(bankTopic, 4, "global", false), "name: balances", "name: customer_orders", 1)

// groups are the consumer groups on the cluster.
func groups(t *testing.T, k *kafkatest.Cluster) map[string]bool {
	t.Helper()
	listed, err := k.Admin.ListGroups(context.Background())
	require.NoError(t, err)
	out := map[string]bool{}
	for _, g := range listed.Groups() {
		out[g] = true
	}
	return out
}

// Two installations (each its own database and projections) on one cluster with the default
// settings would share kreplay.control, kreplay.status and the consumer groups: the second serve
// refuses to start, naming the clash and the setting that fixes it, before it consumes anything.
// serve --take-over, for an installation whose predecessor is gone for good, takes the topics
// over; the installation that held them stops with the same error, and is refused if restarted.
func TestInstallationClash(t *testing.T) {
	t.Parallel()
	bank := setup(t)
	shop := setupOn(t, bank.kafka, "", ordersProjection)
	shop.bank = bank.bank // one history on the shared topic
	bank.produce(500)
	s1 := bank.startServe()
	bank.waitCaughtUp("balances_v1")
	out := bank.mustRun("create", "balances_v2", "--projection", "balances", "-o", "json")
	var created map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &created), out)
	bankCatalog := bank.text("SELECT catalog_id::text FROM kreplay.installation")
	bankDB := bank.text("SELECT current_database()")

	s2 := shop.spawn("serve")
	require.Equal(t, 1, s2.wait(60*time.Second), "the second installation must refuse to start")
	msg := s2.stderr.String()
	require.Regexp(t, `kreplay: the topics kreplay\.control and kreplay\.status belong to another kreplay installation: catalog `+
		regexp.QuoteMeta(bankCatalog)+` \(database `+bankDB+`, installation "kreplay"\), announced at 20\d\d-`, msg)
	require.Contains(t, msg, "set installation: in each one's config file")
	require.Contains(t, msg, "start serve once with --take-over")
	require.Equal(t, "0", shop.text("SELECT count(*)::text FROM kreplay.checkpoints"), "the refused installation consumed nothing")
	require.Equal(t, "0", shop.text("SELECT count(*)::text FROM kreplay.versions"))
	for g := range groups(t, bank.kafka) {
		require.NotContains(t, g, "customer_orders", "the refused installation joined no group")
	}
	require.False(t, s1.exited(), "the installation that holds the topics runs on")
	require.Equal(t, "live", bank.text("SELECT state FROM kreplay.versions WHERE key = 'balances_v1'"))

	// The operator takes the topics over (as if the bank installation were gone): the bank serve
	// stops with the clash, and the shop installation runs.
	s3 := shop.startServe("--take-over")
	require.Equal(t, 1, s1.wait(60*time.Second), "the installation taken over must stop")
	shopCatalog := shop.text("SELECT catalog_id::text FROM kreplay.installation")
	require.Regexp(t, `kreplay: the topics kreplay\.control and kreplay\.status belong to another kreplay installation: catalog `+
		regexp.QuoteMeta(shopCatalog)+` \(database `+shop.text("SELECT current_database()")+`, installation "kreplay"\), announced at 20\d\d-[^;]*; it took them over`, s1.stderr.String())
	shop.waitCaughtUp("customer_orders_v1")
	require.True(t, groups(t, bank.kafka)["kreplay.customer_orders.customer_orders_v1"])
	require.Equal(t, "0", shop.text("SELECT count(*)::text FROM kreplay.commands"), "the commands before the take-over were the bank's")
	require.Equal(t, "done", shop.finalOutcome("kreplay.status", created["command_id"].(string))["state"], "the bank's outcome stands")
	eventually(t, 30*time.Second, func() (bool, string) {
		out := shop.mustRun("status", "-o", "json")
		_, there := decodeStatuses(t, out)["balances_v1"]
		return !there, "kreplay status still shows the version of the installation taken over: " + out
	})

	s4 := bank.spawn("serve")
	require.Equal(t, 1, s4.wait(60*time.Second), "the installation taken over is refused at start")
	require.Contains(t, s4.stderr.String(), "catalog "+shopCatalog)
	s3.stop()
}

// Two installations with names of their own share the cluster: each has its own topics and
// consumer groups, and a command is executed and answered only by the installation it addresses.
func TestInstallationsSideBySide(t *testing.T) {
	t.Parallel()
	k := kafkatest.New(t, map[string]int32{bankTopic: 4})
	bank := setupOn(t, k, "installation: bank\n", bankgen.Config(bankTopic, 4, "global", false))
	shop := setupOn(t, k, "installation: shop\n", ordersProjection)
	shop.bank = bank.bank // one history on the shared topic
	bank.produce(500)
	bank.startServe()
	shop.startServe()
	bank.waitCaughtUp("balances_v1")
	shop.waitCaughtUp("customer_orders_v1")
	require.Equal(t, bank.bank.Balances(), bank.liveBalances())
	require.Equal(t, bank.bank.Balances(), shop.liveBalances(), "the shop installation read the same events into its own database")
	g := groups(t, k)
	require.True(t, g["bank.balances.balances_v1"], "groups: %v", g)
	require.True(t, g["shop.customer_orders.customer_orders_v1"], "groups: %v", g)
	topics, err := k.Admin.ListTopics(context.Background())
	require.NoError(t, err)
	for _, name := range []string{"bank.control", "bank.status", "bank.dead_letter", "shop.control", "shop.status", "shop.dead_letter"} {
		require.True(t, topics.Has(name), "topic %s", name)
	}
	require.False(t, topics.Has("kreplay.control"))

	// A create of the projection only the shop installation has: answered by the shop.
	out := shop.mustRun("create", "customer_orders_v2", "--projection", "customer_orders", "-o", "json")
	var o map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &o), out)
	require.Equal(t, true, o["ok"], out)
	require.Equal(t, "shop", o["installation"])
	id := o["command_id"].(string)
	require.Equal(t, "created", shop.text("SELECT state FROM kreplay.versions WHERE key = 'customer_orders_v2'"))
	require.Equal(t, "1", bank.text("SELECT count(*)::text FROM kreplay.versions"), "the bank catalog is unchanged")
	require.Equal(t, "0", bank.text("SELECT count(*)::text FROM kreplay.commands"), "the bank installation executed nothing")
	require.NotContains(t, bank.outcomes("bank.status"), id)

	// And the other way round.
	out = bank.mustRun("create", "balances_v2", "--projection", "balances")
	require.Equal(t, "created balances_v2 (projection balances): created; start it with: kreplay start balances_v2\n", out)
	require.Equal(t, "0", shop.text("SELECT count(*)::text FROM kreplay.versions WHERE key = 'balances_v2'"))
	_, stderr, code := shop.run("create", "balances_v3", "--projection", "balances")
	require.Equal(t, 1, code)
	require.Equal(t, "kreplay: create balances_v3: unknown projection \"balances\" (configured: customer_orders)\n", stderr)
	require.Equal(t, "0", bank.text("SELECT count(*)::text FROM kreplay.versions WHERE key = 'balances_v3'"))
}

// commandID is the id the CLI printed for the command it published.
func commandID(t *testing.T, stderr string) string {
	t.Helper()
	m := regexp.MustCompile(`command ([0-9a-f]{24})\b`).FindStringSubmatch(stderr)
	require.NotNil(t, m, "no command id in: %s", stderr)
	return m[1]
}

// A promote and a pause sent while serve is down give up at their --timeout, saying that they
// will not run; the serve that reads them later does not run them: their outcomes say expired,
// and the versions are as they were.
func TestExpiredCommandsNeverRun(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.produce(500)
	s := e.startServe()
	e.waitCaughtUp("balances_v1")
	e.mustRun("create", "balances_v2", "--projection", "balances", "--start")
	e.mustRun("status", "balances_v2", "--watch")
	s.stop()

	var ids []string
	for _, args := range [][]string{{"promote", "balances_v2"}, {"pause", "balances_v2"}} {
		stdout, stderr, code := e.run(append(args, "--timeout", "2s")...)
		require.Equal(t, 1, code)
		require.Empty(t, stdout)
		require.Regexp(t, `^kreplay: no answer from kreplay serve: command [0-9a-f]{24} \(`+args[0]+` balances_v2\) was not started before its deadline 20\S+Z, so it will not run \(a serve that reads it later answers "expired"\); is kreplay serve running against `, stderr)
		ids = append(ids, commandID(t, stderr))
	}

	s = e.startServe()
	for i, id := range ids {
		o := e.finalOutcome("kreplay.status", id)
		require.Equal(t, "expired", o["state"], "%v", o)
		require.Equal(t, false, o["ok"])
		require.Regexp(t, `^expired: its deadline 20\S+Z had passed when serve read it \(at 20\S+Z\); it was not run$`, o["error"])
		require.Equal(t, "expired", e.text("SELECT state FROM kreplay.commands WHERE id = $1", id), "command %d", i)
	}
	require.Equal(t, "balances_v1", e.text("SELECT live_version FROM kreplay.projections WHERE name = 'balances'"), "the promote did not run")
	require.Equal(t, "tailing", e.text("SELECT state FROM kreplay.versions WHERE key = 'balances_v2'"), "the pause did not run")
	require.Equal(t, "0", e.text("SELECT count(*)::text FROM kreplay.promotions WHERE kind = 'promote'"))
	require.Equal(t, 2.0, s.metric("kreplay_control_commands_total", `result="expired"`))
}

// A command queued while serve is down and canceled before serve reads it never runs: its
// outcome says canceled, and the cancel's outcome is ok. A cancel that comes too late, or names
// no command, is refused.
func TestCancelPendingCommand(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.produce(500)
	s := e.startServe()
	e.waitCaughtUp("balances_v1")
	out := e.mustRun("create", "balances_v2", "--projection", "balances", "-o", "json")
	var created map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &created), out)
	s.stop()

	// The operator starts balances_v2 while serve is down, gives up waiting (Ctrl-C), and
	// cancels the command, which waits for serve too.
	queued := func(before int64) func() bool {
		return func() bool { return e.kafka.EndOffsets("kreplay.control")[0] > before }
	}
	before := e.kafka.EndOffsets("kreplay.control")[0]
	start := e.spawn("start", "balances_v2", "--timeout", "10m")
	eventually(t, 20*time.Second, func() (bool, string) { return queued(before)(), "start was not published" })
	require.NoError(t, start.cmd.Process.Signal(syscall.SIGINT))
	require.Equal(t, 1, start.wait(20*time.Second))
	id := commandID(t, start.stderr.String())
	require.Contains(t, start.stderr.String(), "kreplay cancel "+id)

	before = e.kafka.EndOffsets("kreplay.control")[0]
	cancel := e.spawn("cancel", id, "--timeout", "2m")
	eventually(t, 20*time.Second, func() (bool, string) { return queued(before)(), "cancel was not published" })
	s = e.startServe()
	require.Equal(t, 0, cancel.wait(60*time.Second), cancel.stderr.String())
	require.Equal(t, "canceled "+id+" (start balances_v2) before it ran\n", cancel.stdout.String())

	o := e.finalOutcome("kreplay.status", id)
	require.Equal(t, "canceled", o["state"], "%v", o)
	require.Equal(t, false, o["ok"])
	require.Contains(t, o["error"], "canceled before it ran")
	require.Equal(t, "canceled", e.text("SELECT state FROM kreplay.commands WHERE id = $1", id))
	require.Equal(t, "created", e.text("SELECT state FROM kreplay.versions WHERE key = 'balances_v2'"), "the start did not run")

	_, stderr, code := e.run("cancel", created["command_id"].(string))
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "already executed")
	_, stderr, code = e.run("cancel", "no-such-command")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, `unknown command id "no-such-command"`)
	s.stop()
}
