package kafkaconn

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
)

// Kafka refusing kreplay for who it is stops serve at once; anything else is waited out.
func TestKafkaRefusedIsFinal(t *testing.T) {
	for _, err := range []error{kerr.SaslAuthenticationFailed, kerr.TopicAuthorizationFailed, kerr.ClusterAuthorizationFailed,
		fmt.Errorf("create topic kreplay.control: %w", kerr.SaslAuthenticationFailed)} {
		require.True(t, Refused(err), "%v", err)
	}
	for _, err := range []error{kerr.CoordinatorNotAvailable, kerr.NotLeaderForPartition, errors.New("EOF")} {
		require.False(t, Refused(err), "%v", err)
	}
}

// A franz-go client that cannot reach a topic logs each retry; Quiet writes a repeating line once
// per interval, with how many it stands for, and drops what is below its level.
func TestQuietLogsARepeatingLineOncePerInterval(t *testing.T) {
	var out bytes.Buffer
	l := Quiet(slog.New(slog.NewTextHandler(&out, nil)), slog.LevelWarn, time.Hour)
	for range 1000 {
		l.Warn("unable to fetch", "err", "UNKNOWN_TOPIC_ID")
		l.Info("routine")
	}
	l.Warn("unable to fetch", "err", "NOT_LEADER")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 2, out.String())
	require.Contains(t, lines[0], "UNKNOWN_TOPIC_ID")
	require.Contains(t, lines[1], "NOT_LEADER")
}

// Only what says Kafka did not answer is waited for at start; anything else is reported.
func TestUnreachableIsKafkaNotAnswering(t *testing.T) {
	require.True(t, Unreachable(fmt.Errorf("list end offsets: %w", &net.OpError{Op: "dial", Err: errors.New("connection refused")})))
	require.True(t, Unreachable(fmt.Errorf("list end offsets: %w", kerr.LeaderNotAvailable)))
	require.False(t, Unreachable(kerr.TopicAuthorizationFailed))
	require.False(t, Unreachable(errors.New(`projection "select" cannot expose table "lenient": projection "lenient" already does`)))
}
