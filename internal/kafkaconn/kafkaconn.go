// Package kafkaconn builds the franz-go client options every kreplay client uses to reach the
// cluster (seed brokers, client id, TLS, SASL, logging), for serve and for the CLI alike, and
// tells Kafka's refusals of who kreplay is from errors that waiting can fix.
package kafkaconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"github.com/twmb/franz-go/plugin/kslog"

	"github.com/kreplay/kreplay/topology"
)

// Opts are the client options to reach the cluster: seeds, client ID, TLS and SASL, and the
// logger (nil: none).
func Opts(cfg topology.KafkaConfig, brokers []string, clientID string, logger *slog.Logger) ([]kgo.Opt, error) {
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

// Refused reports whether Kafka refused the client for who it is (authentication,
// authorization), which waiting cannot fix.
func Refused(err error) bool {
	return errors.Is(err, kerr.SaslAuthenticationFailed) || errors.Is(err, kerr.ClusterAuthorizationFailed) ||
		errors.Is(err, kerr.TopicAuthorizationFailed) || errors.Is(err, kerr.GroupAuthorizationFailed) ||
		errors.Is(err, kerr.IllegalSaslState) || errors.Is(err, kerr.UnsupportedSaslMechanism)
}

// Quiet returns the logger for a franz-go client: records below min are dropped, and a record
// that repeats (the same message and error) is logged at most once per every, with the number
// of repeats it stands for. A client that cannot reach a topic retries several times a second,
// and logs each try: a broker that lost its topics must not flood the log.
func Quiet(l *slog.Logger, min slog.Level, every time.Duration) *slog.Logger {
	return slog.New(&limitHandler{Handler: levelHandler{l.Handler(), min}, st: &limitState{every: every, seen: map[string]*limitEntry{}}})
}

type limitHandler struct {
	slog.Handler
	st *limitState
}

type limitState struct {
	every time.Duration
	mu    sync.Mutex
	seen  map[string]*limitEntry
}

type limitEntry struct {
	at         time.Time
	suppressed int
}

// maxLimited bounds the repeating records remembered.
const maxLimited = 1024

func (h *limitHandler) Handle(ctx context.Context, r slog.Record) error {
	key := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			key += "\x00" + a.Value.String()
		}
		return true
	})
	st := h.st
	st.mu.Lock()
	e := st.seen[key]
	if e == nil {
		if len(st.seen) >= maxLimited {
			clear(st.seen)
		}
		e = &limitEntry{}
		st.seen[key] = e
	}
	if !e.at.IsZero() && r.Time.Sub(e.at) < st.every {
		e.suppressed++
		st.mu.Unlock()
		return nil
	}
	n := e.suppressed
	e.at, e.suppressed = r.Time, 0
	st.mu.Unlock()
	if n > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("repeats_not_logged", n))
	}
	return h.Handler.Handle(ctx, r)
}

func (h *limitHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &limitHandler{Handler: h.Handler.WithAttrs(as), st: h.st}
}

func (h *limitHandler) WithGroup(name string) slog.Handler {
	return &limitHandler{Handler: h.Handler.WithGroup(name), st: h.st}
}

type levelHandler struct {
	slog.Handler
	min slog.Level
}

func (h levelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h levelHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return levelHandler{h.Handler.WithAttrs(as), h.min}
}

func (h levelHandler) WithGroup(name string) slog.Handler {
	return levelHandler{h.Handler.WithGroup(name), h.min}
}

// Retriable reports whether a Kafka client error is worth another attempt. franz-go retries
// retriable broker errors itself before it returns one, so an error from the broker that Kafka
// does not call retriable (a refused authorization, a record too large, an unknown topic that
// stays unknown) is final; errors from the network or the client's own timeouts are not.
func Retriable(err error) bool {
	if err == nil || Refused(err) || errors.Is(err, context.Canceled) {
		return false
	}
	var kerrErr *kerr.Error
	if errors.As(err, &kerrErr) {
		return kerrErr.Retriable
	}
	return true
}

// Unreachable reports whether err says Kafka did not answer, or answered with an error it calls
// retriable: a network error, a request that timed out, a broker not ready. It is narrower than
// Retriable, for callers that must not wait on an error that is not Kafka's.
func Unreachable(err error) bool {
	var kErr *kerr.Error
	var netErr net.Error
	var shards *kadm.ShardErrors
	switch {
	case err == nil, Refused(err):
		return false
	case errors.As(err, &kErr):
		return kErr.Retriable
	case errors.As(err, &netErr), errors.Is(err, context.DeadlineExceeded), errors.Is(err, io.EOF), errors.Is(err, kgo.ErrClientClosed):
		return true
	case errors.As(err, &shards):
		for _, s := range shards.Errs {
			if Unreachable(s.Err) {
				return true
			}
		}
	}
	return false
}

// Record fills into with rec as the topology decoders read it, reusing into's header slice,
// and returns into. The decoders keep no reference to it, so one buffer serves a whole fetch.
func Record(rec *kgo.Record, into *topology.Record) *topology.Record {
	into.Topic, into.Partition, into.Offset, into.Timestamp = rec.Topic, rec.Partition, rec.Offset, rec.Timestamp
	into.Key, into.Value = rec.Key, rec.Value
	into.Headers = into.Headers[:0]
	for _, h := range rec.Headers {
		into.Headers = append(into.Headers, topology.Header{Key: h.Key, Value: h.Value})
	}
	return into
}
