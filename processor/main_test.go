package processor_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every processor, runner, session and client the tests start must be gone at the end: a
// goroutine left behind is a shutdown bug.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
