package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Config is how the store reaches PostgreSQL.
type Config struct {
	// URL is the connection string. Required.
	URL string
	// LiveSchema is where the live views are. Defaults to "public".
	LiveSchema string
	// MaxConns bounds the pool used for catalog work (appliers have connections of their own).
	// Defaults to 8.
	MaxConns int32
	// LockTimeout bounds each attempt to take the views' locks during a swap. Defaults to 200ms.
	LockTimeout time.Duration
	// ReaderRole, when set, is granted USAGE on the live schema and SELECT on the live views.
	ReaderRole string
	// ApplicationName tags kreplay's sessions in pg_stat_activity. Defaults to "kreplay".
	ApplicationName string
}

// SetDefaults fills the zero fields with their defaults.
func (c *Config) SetDefaults() {
	if c.LiveSchema == "" {
		c.LiveSchema = "public"
	}
	if c.MaxConns == 0 {
		c.MaxConns = 8
	}
	if c.LockTimeout == 0 {
		c.LockTimeout = 200 * time.Millisecond
	}
	if c.ApplicationName == "" {
		c.ApplicationName = "kreplay"
	}
}

// Store is the catalog and the versions' schemas in one PostgreSQL database.
type Store struct {
	cfg    Config
	pool   *pgxpool.Pool
	logger *slog.Logger

	idMu sync.Mutex
	id   string // the catalog's id, once read (see catalogID)
}

// Open connects (lazily: the first query dials) and checks the URL.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (*Store, error) {
	cfg.SetDefaults()
	if cfg.URL == "" {
		return nil, errors.New("postgres url is empty: set postgres.url, KREPLAY_DATABASE_URL or DATABASE_URL")
	}
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("postgres url: %w", err) // pgx redacts the password
	}
	pcfg.MaxConns = cfg.MaxConns
	pcfg.ConnConfig.RuntimeParams["application_name"] = cfg.ApplicationName
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Store{cfg: cfg, pool: pool, logger: logger}, nil
}

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Pool is the catalog pool, for callers that run their own queries (tests, the demo reader).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// LiveSchema is the schema of the live views.
func (s *Store) LiveSchema() string { return s.cfg.LiveSchema }

// Ping checks that PostgreSQL answers.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return s.pool.Ping(ctx)
}

// connConfig is a copy of the pool's connection config, for dedicated connections.
func (s *Store) connConfig() *pgx.ConnConfig { return s.pool.Config().ConnConfig.Copy() }

// ident quotes a validated name for SQL.
func ident(parts ...string) string { return pgx.Identifier(parts).Sanitize() }
