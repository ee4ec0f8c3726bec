package store

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// leaderLockKey is the advisory lock held by the instance that executes control commands.
const leaderLockKey = 0x6b7265706c6c64 // "kreplld"

// Leadership is held while a dedicated connection holds the leader advisory lock.
type Leadership struct {
	conn *pgx.Conn
	lost chan struct{}
	stop chan struct{}
	once sync.Once
	done chan struct{}
}

// TryLead tries to become the instance that executes control commands: a session advisory lock
// on a connection of its own. It returns nil (and no error) when another instance leads. The
// leadership is lost when that connection fails (checked every second); PostgreSQL releases the
// lock when the session ends, so another instance takes over.
func (s *Store) TryLead(ctx context.Context) (*Leadership, error) {
	cfg := s.connConfig()
	cfg.RuntimeParams["application_name"] = s.cfg.ApplicationName + ":leader"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	var got bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", int64(leaderLockKey)).Scan(&got); err != nil || !got {
		_ = conn.Close(ctx)
		return nil, err
	}
	l := &Leadership{conn: conn, lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	go l.watch()
	return l, nil
}

func (l *Leadership) watch() {
	defer close(l.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = l.conn.Close(ctx) // ends the session: the lock is released
			cancel()
			return
		case <-tick.C:
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			err := l.conn.Ping(ctx)
			cancel()
			if err != nil {
				close(l.lost)
				_ = l.conn.Close(context.Background())
				<-l.stop
				return
			}
		}
	}
}

// Lost is closed when the leadership was lost (its connection failed).
func (l *Leadership) Lost() <-chan struct{} { return l.lost }

// Release gives the leadership up.
func (l *Leadership) Release() {
	l.once.Do(func() { close(l.stop) })
	<-l.done
}
