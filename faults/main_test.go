package faults

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kreplay-faults")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "kreplay")
	build := exec.Command("go", "build", "-o", binary, "../cmd/kreplay")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build kreplay:", err)
		os.Exit(1)
	}
	code := m.Run()
	printTable()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}
