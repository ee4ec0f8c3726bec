// Package testkit holds the helpers that kreplay's test packages share: waiting for a condition
// and building the real binary for end-to-end tests.
package testkit

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Eventually polls cond every 50ms until it holds, failing the test after timeout with msg
// (a format for args).
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	EventuallyWhy(t, timeout, func() (bool, string) {
		if cond() {
			return true, ""
		}
		return false, fmt.Sprintf(msg, args...)
	})
}

// EventuallyWhy polls cond every 50ms until it holds, failing the test after timeout with the
// last reason cond gave for not holding.
func EventuallyWhy(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// BuildBinary builds the Go command in dir (a package path relative to the caller's package,
// such as "." or "../cmd/kreplay") into a temporary directory. remove deletes it.
func BuildBinary(dir, name string) (path string, remove func(), err error) {
	tmp, err := os.MkdirTemp("", name+"-test")
	if err != nil {
		return "", nil, err
	}
	remove = func() { _ = os.RemoveAll(tmp) }
	path = filepath.Join(tmp, name)
	build := exec.CommandContext(context.Background(), "go", "build", "-o", path, dir)
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		remove()
		return "", nil, fmt.Errorf("build %s: %w", dir, err)
	}
	return path, remove, nil
}
