package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kreplay/kreplay/internal/retry"
	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/store"
	"github.com/twmb/franz-go/pkg/kerr"
)

// Remove stops a version on every instance, drops its schema, deletes its consumer group and
// marks it removed. The live version cannot be removed.
func (m *Manager) Remove(ctx context.Context, key string) (*store.Version, error) {
	if _, err := m.version(ctx, key); err != nil {
		return nil, err
	}
	v, err := m.store.RemoveVersion(ctx, key)
	if err != nil {
		if errors.Is(err, store.ErrInvalidTransition) {
			return nil, control.AsInvalid(err)
		}
		return nil, err
	}
	if err := m.store.DropVersion(ctx, key); err != nil {
		return nil, fmt.Errorf("remove %s: drop its schema: %w", key, err)
	}
	if err := m.deleteGroup(ctx, m.cfg.GroupName(v.Projection, key)); err != nil {
		return nil, fmt.Errorf("remove %s: %w", key, err)
	}
	m.log.Info("version removed", "projection", v.Projection, "version", key)
	return v, nil
}

// deleteGroup deletes a version's consumer group once its members have left (the runners of
// every instance stop when they see the version removed).
func (m *Manager) deleteGroup(ctx context.Context, group string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return retry.Policy{Log: m.retries, What: "delete consumer group " + group}.Do(ctx, func(ctx context.Context) error {
		resp, err := m.admin.DeleteGroup(ctx, group)
		if err == nil {
			err = resp.Err
		}
		if err != nil && isGroupGone(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("delete consumer group %s: %w", group, err)
		}
		return nil
	})
}

func isGroupGone(err error) bool { return errors.Is(err, kerr.GroupIDNotFound) }

// FinishRemovals completes removals that a crash interrupted: versions marked removed whose
// schema, checkpoints or role still exist.
func (m *Manager) FinishRemovals(ctx context.Context) {
	versions, err := m.store.Versions(ctx)
	if err != nil {
		return
	}
	for _, v := range versions {
		if v.State != store.StateRemoved {
			continue
		}
		if dropped, err := m.store.Dropped(ctx, v.Key); err != nil || dropped {
			continue
		}
		m.log.Info("finishing an interrupted remove", "version", v.Key)
		if _, err := m.Remove(ctx, v.Key); err != nil {
			m.log.Warn("could not finish an interrupted remove", "version", v.Key, "err", err)
		}
	}
}
