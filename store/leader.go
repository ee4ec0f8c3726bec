package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kreplay/kreplay/internal/startstop"
)

// leaderLockKey is the advisory lock held by the instance that executes control commands.
const leaderLockKey = 0x6b7265706c6c64 // "kreplld"

// Leadership is held while a dedicated connection holds the leader advisory lock.
type Leadership struct {
	conn *pgx.Conn
	lost chan struct{}
	g    *startstop.Group
}

// TryLead tries to become the instance that executes control commands: a session advisory lock
// on a connection of its own. It returns nil (and no error) when another instance leads. The
// leadership is lost when that connection fails (checked every second); PostgreSQL releases the
// lock when the session ends, so another instance takes over. Release ends it.
func (s *Store) TryLead(ctx context.Context) (*Leadership, error) {
	return s.tryLock(ctx, "leader", "SELECT pg_try_advisory_lock($1)", int64(leaderLockKey))
}

// tryLock takes a session advisory lock (lockSQL returns whether it got it) on a connection of
// its own, named app, and watches that connection; nil (and no error) when another session holds
// the lock.
func (s *Store) tryLock(ctx context.Context, app, lockSQL string, args ...any) (*Leadership, error) {
	cfg := s.connConfig()
	cfg.RuntimeParams["application_name"] = s.cfg.ApplicationName + ":" + app
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	var got bool
	if err := conn.QueryRow(ctx, lockSQL, args...).Scan(&got); err != nil || !got {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	l := &Leadership{conn: conn, lost: make(chan struct{}), g: startstop.New(context.WithoutCancel(ctx))}
	l.g.Go(l.watch)
	return l, nil
}

// watch pings the lock's connection every second until Release; it closes lost when a ping fails.
func (l *Leadership) watch(ctx context.Context) {
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = l.conn.Close(cctx) // ends the session: the lock is released
		cancel()
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			err := l.conn.Ping(pctx)
			cancel()
			if err != nil && ctx.Err() == nil {
				close(l.lost)
				return
			}
		}
	}
}

// Lost is closed when the leadership was lost (its connection failed).
func (l *Leadership) Lost() <-chan struct{} { return l.lost }

// Release gives the leadership up: the lock's connection is closed.
func (l *Leadership) Release() { l.g.Stop() }
