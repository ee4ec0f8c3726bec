package processor_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// Every processor, runner, session and client the tests start must be gone at the end: a
// goroutine left behind is a shutdown bug. Run with childEnv set, the test binary is the reactor
// process of TestReactorsFireOncePerLiveEventAcrossSIGKILL instead.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(reactorChild())
	}
	goleak.VerifyTestMain(m)
}
