// Command kreplay rebuilds event-sourced read models in PostgreSQL from Kafka with zero
// downtime. See the README and `kreplay --help`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop) // a second signal during a graceful shutdown kills at once
	err := newRootCommand().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kreplay:", err)
		os.Exit(1)
	}
}
