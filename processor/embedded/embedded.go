package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kreplay/kreplay/topology"
)

// Broker is an in-process Kafka broker (franz-go's kfake: the real wire protocol, in memory),
// for development and the demo. Everything in it is lost when the process exits.
type Broker struct {
	Cluster *kfake.Cluster
	Addrs   []string
}

// Start starts the embedded broker on cfg.Kafka.EmbeddedListen with the config's source
// topics created. It listens on that host (kfake itself would bind 127.0.0.1 only) and
// advertises the address it listens on, so the host must be one address, not a wildcard. When
// the port is taken it listens on another free port of that host, and logs it: clients that
// dial kafka.embedded_listen (`--brokers embedded`) would not reach it.
func Start(cfg *topology.Config, logger *slog.Logger) (*Broker, error) {
	listen := cfg.Kafka.EmbeddedListen
	host, port, err := HostPort(listen)
	if err != nil {
		return nil, err
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100 * time.Millisecond),
		// kfake listens on 127.0.0.1:<port>; keep its port, use the configured host.
		kfake.ListenFn(func(network, addr string) (net.Listener, error) {
			_, p, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			var lc net.ListenConfig
			return lc.Listen(context.Background(), network, net.JoinHostPort(host, p))
		}),
	}
	for _, s := range cfg.Sources {
		opts = append(opts, kfake.SeedTopics(s.Partitions, s.Topic))
	}
	c, err := kfake.NewCluster(append(opts, kfake.Ports(port))...)
	if err != nil && port != 0 && errors.Is(err, syscall.EADDRINUSE) {
		if c, err = kfake.NewCluster(append(opts, kfake.Ports(0))...); err == nil && logger != nil {
			logger.Warn("embedded broker: the port of kafka.embedded_listen is taken, so it listens on another one; "+
				"clients started with --brokers embedded dial kafka.embedded_listen and will not reach it: give them --brokers with this address",
				"kafka.embedded_listen", listen, "addr", c.ListenAddrs()[0])
		}
	}
	if err != nil {
		return nil, fmt.Errorf("embedded broker on kafka.embedded_listen %q: %w", listen, err)
	}
	return &Broker{Cluster: c, Addrs: c.ListenAddrs()}, nil
}

// HostPort splits kafka.embedded_listen, refusing a wildcard host: the broker tells
// clients to connect to the address it listens on, and "0.0.0.0" or "::" is not one they
// can reach from elsewhere.
func HostPort(listen string) (string, int, error) {
	host, p, err := net.SplitHostPort(listen)
	if err != nil {
		return "", 0, fmt.Errorf("kafka.embedded_listen %q: want host:port, such as 127.0.0.1:9092", listen)
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("kafka.embedded_listen %q: port %q is not a number from 0 to 65535", listen, p)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return "", 0, fmt.Errorf("kafka.embedded_listen %q: the embedded broker needs one address to listen on, not all of them, "+
			"because it advertises that address to clients: use 127.0.0.1:%d (this machine only) or an address of this machine that clients can reach", listen, port)
	}
	return host, int(port), nil
}

// Close stops the broker.
func (e *Broker) Close() { e.Cluster.Close() }
