package embedded_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/processor/embedded"
	"github.com/kreplay/kreplay/topology"
)

func embeddedConfig(t *testing.T, listen string) *topology.Config {
	t.Helper()
	cfg := &topology.Config{}
	cfg.Kafka.Brokers = []string{"embedded"}
	cfg.Kafka.EmbeddedListen = listen
	cfg.SetDefaults()
	return cfg
}

// The embedded broker listens on the host of kafka.embedded_listen (kfake alone would bind
// 127.0.0.1), and clients reach it at the address it advertises.
func TestEmbeddedBrokerListensOnTheConfiguredHost(t *testing.T) {
	t.Parallel()
	e, err := embedded.Start(embeddedConfig(t, "127.0.0.2:0"), nil)
	require.NoError(t, err)
	defer e.Close()
	host, _, err := net.SplitHostPort(e.Addrs[0])
	require.NoError(t, err)
	require.Equal(t, "127.0.0.2", host)

	cl, err := kgo.NewClient(kgo.SeedBrokers(e.Addrs...))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, cl.Ping(ctx))
}

// A taken port: the broker listens on another one of the same host and says so, naming
// kafka.embedded_listen and the address it took.
func TestEmbeddedBrokerOnATakenPortSaysWhereItListens(t *testing.T) {
	t.Parallel()
	var lc net.ListenConfig
	taken, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	listen := taken.Addr().String()

	var logs strings.Builder
	e, err := embedded.Start(embeddedConfig(t, listen), slog.New(slog.NewTextHandler(&logs, nil)))
	require.NoError(t, err)
	defer e.Close()
	require.NotEqual(t, listen, e.Addrs[0])
	host, port, err := net.SplitHostPort(e.Addrs[0])
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1", host)
	require.NotEqual(t, "0", port)
	out := logs.String()
	require.Contains(t, out, "level=WARN")
	require.Contains(t, out, "kafka.embedded_listen="+listen)
	require.Contains(t, out, "addr="+e.Addrs[0])
	require.Contains(t, out, "--brokers embedded")
}

// A wildcard host (the broker would advertise an address clients elsewhere cannot dial) and a
// host that is not this machine's are refused, naming the key.
func TestEmbeddedBrokerRefusesAnUnusableHost(t *testing.T) {
	t.Parallel()
	for _, listen := range []string{":9092", "0.0.0.0:9092", "[::]:9092"} {
		_, err := embedded.Start(embeddedConfig(t, listen), nil)
		require.ErrorContains(t, err, `kafka.embedded_listen "`+listen+`": the embedded broker needs one address`)
		require.ErrorContains(t, err, "use 127.0.0.1:9092")
	}
	_, err := embedded.Start(embeddedConfig(t, "192.0.2.1:0"), nil) // TEST-NET-1: not this machine's
	require.ErrorContains(t, err, `embedded broker on kafka.embedded_listen "192.0.2.1:0"`)
}
