package faults

import (
	"fmt"
	"os"
	"testing"

	"github.com/kreplay/kreplay/internal/testkit"
)

func TestMain(m *testing.M) {
	var remove func()
	var err error
	if binary, remove, err = testkit.BuildBinary("../cmd/kreplay", "kreplay"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	printTable()
	remove()
	os.Exit(code)
}
