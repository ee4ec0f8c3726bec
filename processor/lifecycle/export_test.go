package lifecycle

import "context"

// PromoteLag is the lag promote compares with --max-lag (and waits for), for tests.
func (m *Manager) PromoteLag(ctx context.Context, key string) (int64, error) {
	v, err := m.store.Version(ctx, key)
	if err != nil {
		return 0, err
	}
	lag, _, err := m.lagBeside(ctx, v, "")
	return lag, err
}
