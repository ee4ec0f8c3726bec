package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kreplay/kreplay/internal/startstop"
	"github.com/kreplay/kreplay/processor/control"
)

// Source is what the API reports: the processor implements it.
type Source interface {
	// Registry holds the metrics /metrics exposes.
	Registry() *prometheus.Registry
	// Ready reports whether PostgreSQL and Kafka answer, and if not, why.
	Ready() (bool, string)
	// Statuses are the latest statuses of the versions (nil before the first).
	Statuses() []control.Status
	// Assignments are what this instance consumes now.
	Assignments() Assignments
}

// Assignments is GET /api/assignments: what this instance consumes now, and whether it leads
// (executes control commands and publishes statuses).
type Assignments struct {
	Instance string `json:"instance"`
	Leader   bool   `json:"leader"`
	// Versions is the number of partitions this instance consumes per version running on it (0
	// when another member of the version's group owns them).
	Versions map[string]int `json:"versions"`
	// Partitions lists them per version and topic, partitions in ascending order ({} when
	// another member owns them).
	Partitions map[string]map[string][]int32 `json:"partitions"`
}

// Handler is kreplay's HTTP API: /metrics, /healthz (the process is alive), /readyz (Kafka
// and PostgreSQL answer; 503 otherwise), GET /api/replays (the status JSON) and
// GET /api/assignments.
func Handler(src Source) http.Handler {
	mux := http.NewServeMux()
	reg := src.Registry()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		ok, why := src.Ready()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = w.Write([]byte(why + "\n"))
	})
	mux.HandleFunc("GET /api/replays", func(w http.ResponseWriter, _ *http.Request) {
		st := src.Statuses()
		if st == nil {
			st = []control.Status{}
		}
		writeJSON(w, st)
	})
	mux.HandleFunc("GET /api/assignments", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, src.Assignments())
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// Server serves a handler on an address: Listen binds it (so that a taken port is an error at
// once), Run serves until its context ends, then shuts down within 5s.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Listen binds addr ("host:port"; ":0" picks a free port).
func Listen(ctx context.Context, addr string, h http.Handler) (*Server, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &Server{srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}, ln: ln}, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx ends, then shuts the server down (requests in flight get 5s) and
// returns once it is down. An error other than the shutdown's is returned.
func (s *Server) Run(ctx context.Context) error {
	g := startstop.New(context.WithoutCancel(ctx))
	errc := make(chan error, 1)
	g.Go(func(context.Context) { errc <- s.srv.Serve(s.ln) })
	defer g.Wait()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = s.srv.Shutdown(sctx)
		return nil
	}
}
