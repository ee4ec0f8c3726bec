package processor

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type httpServer struct {
	srv *http.Server
	ln  net.Listener
}

// Handler is kreplay's HTTP API: /metrics, /healthz (the process is alive), /readyz (Kafka
// and PostgreSQL answer; 503 otherwise), GET /api/replays (the status JSON) and
// GET /api/assignments (the topics and partitions this instance consumes per version, their
// count, and whether it leads: see Assignments).
func (p *Processor) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(p.reg, promhttp.HandlerOpts{Registry: p.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		ok, why := p.health.ready()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = w.Write([]byte(why + "\n"))
	})
	mux.HandleFunc("GET /api/replays", func(w http.ResponseWriter, _ *http.Request) {
		p.mu.Lock()
		st := p.statuses
		p.mu.Unlock()
		if st == nil {
			st = []Status{}
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
	})
	mux.HandleFunc("GET /api/assignments", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(p.Assignments())
	})
	return mux
}

func (p *Processor) listenHTTP(ctx context.Context) (*httpServer, error) {
	if p.cfg.HTTP.Listen == "off" || p.cfg.HTTP.Listen == "" {
		return nil, nil
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", p.cfg.HTTP.Listen)
	if err != nil {
		return nil, err
	}
	return &httpServer{srv: &http.Server{Handler: p.Handler(), ReadHeaderTimeout: 5 * time.Second}, ln: ln}, nil
}

// HTTPAddr is the address the HTTP server listens on (after Started), "" when disabled.
func (p *Processor) HTTPAddr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.httpAddr
}

// serveHTTP serves until ctx ends, then shuts the server down.
func (p *Processor) serveHTTP(ctx context.Context, h *httpServer) error {
	errc := make(chan error, 1)
	go func() { errc <- h.srv.Serve(h.ln) }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = h.srv.Shutdown(sctx)
		return nil
	}
}
