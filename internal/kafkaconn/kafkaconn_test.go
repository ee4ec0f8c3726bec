package kafkaconn

import (
	"errors"
	"fmt"
	"testing"

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
