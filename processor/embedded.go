package processor

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kreplay/kreplay/topology"
)

// Embedded is an in-process Kafka broker (franz-go's kfake: the real wire protocol, in memory),
// for development and the demo. Everything in it is lost when the process exits.
type Embedded struct {
	Cluster *kfake.Cluster
	Addrs   []string
}

// StartEmbedded starts the embedded broker on cfg.Kafka.EmbeddedListen (another free port if
// that one is taken) with the config's source topics created.
func StartEmbedded(cfg *topology.Config, logger *slog.Logger) (*Embedded, error) {
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100 * time.Millisecond)}
	for _, s := range cfg.Sources {
		opts = append(opts, kfake.SeedTopics(s.Partitions, s.Topic))
	}
	port := 0
	if _, p, err := net.SplitHostPort(cfg.Kafka.EmbeddedListen); err == nil {
		port, _ = strconv.Atoi(p)
	}
	var c *kfake.Cluster
	var err error
	if port > 0 && portFree(port) {
		c, err = kfake.NewCluster(append(opts, kfake.Ports(port))...)
	} else {
		if port > 0 && logger != nil {
			logger.Warn("embedded broker: port taken, using another", "wanted", cfg.Kafka.EmbeddedListen)
		}
		c, err = kfake.NewCluster(opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	return &Embedded{Cluster: c, Addrs: c.ListenAddrs()}, nil
}

// Close stops the broker.
func (e *Embedded) Close() { e.Cluster.Close() }

func portFree(port int) bool {
	var lc net.ListenConfig
	l, err := lc.Listen(context.Background(), "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}
