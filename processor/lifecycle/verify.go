package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/store"
)

// verifyTimeout bounds how long verify waits for both versions to reach the same offsets.
const verifyTimeout = 2 * time.Minute

// Verify compares a version with the live version of its projection at the same offset vector:
// it holds both (the one that is ahead waits) until they have applied exactly the same offsets,
// then compares the projection's checks, row counts and checksums in one snapshot, records the
// outcome and lets both go on.
func (m *Manager) Verify(ctx context.Context, key string) (*control.VerifyReport, error) {
	v, err := m.version(ctx, key)
	if err != nil {
		return nil, err
	}
	proj, err := m.store.Projection(ctx, v.Projection)
	if err != nil {
		return nil, err
	}
	if proj.Live == "" {
		return nil, control.Invalid("verify %s: projection %s has no live version to compare with", key, v.Projection)
	}
	if proj.Live == key {
		return nil, control.Invalid("verify %s: it is the live version; verify compares a replay with the live version", key)
	}
	live, err := m.store.Version(ctx, proj.Live)
	if err != nil {
		return nil, err
	}
	for _, x := range []*store.Version{v, live} {
		if !x.State.Running() {
			return nil, control.Invalid("verify %s: %s is %s; both versions must be running", key, x.Key, x.State)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	defer func() {
		// Let both go on, whatever happened.
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer ccancel()
		for _, k := range []string{key, live.Key} {
			if err := m.catalog("release a verify hold").Do(cctx, func(ctx context.Context) error { return m.store.SetHold(ctx, k, nil) }); err != nil {
				m.log.Error("verify: could not release the hold", "version", k, "err", err)
			}
		}
	}()
	var cmp *store.Comparison
	for {
		if err := m.align(ctx, live.Key, key); err != nil {
			return nil, fmt.Errorf("verify %s: %w", key, err)
		}
		// Holds reach the runners through notifications: a version that was exactly at the
		// target may apply one more batch before it sees its hold. Compare checks the offsets in
		// its snapshot; if they differ, align again (the target rises past that batch).
		cmp, err = m.store.Compare(ctx, live.Key, key, v.Definition.Checks)
		if errors.Is(err, store.ErrNotAligned) && ctx.Err() == nil {
			m.log.Info("verify: a version moved before it saw its hold; aligning again", "version", key, "err", err)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("verify %s: %w", key, err)
		}
		break
	}
	if err := m.store.RecordVerification(ctx, cmp, key); err != nil {
		return nil, err
	}
	rep := &control.VerifyReport{Version: key, Against: live.Key, Passed: cmp.Passed, Offsets: cmp.Offsets, Results: cmp.Results, Skipped: cmp.Skipped}
	// What promoting it would change for readers (the live views as they are now).
	if rep.ShapeChanges, err = m.store.ShapeChanges(ctx, key); err != nil {
		return nil, fmt.Errorf("verify %s: compare the shapes of the views: %w", key, err)
	}
	rep.ShapeChangeNeedsFlag = len(store.BreakingChanges(rep.ShapeChanges)) > 0
	for _, r := range cmp.Results {
		if !r.Equal {
			rep.Differs = append(rep.Differs, r.Kind+" "+r.Name)
		}
	}
	m.log.Info("verify done", "version", key, "against", live.Key, "passed", cmp.Passed, "differs", rep.Differs)
	return rep, nil
}

// align holds two versions at a common offset vector and waits until both have applied exactly
// it. A version that was past the first vector before it saw its hold raises the vector; both
// stop at the new one (holds reach every instance's runners through catalog notifications).
func (m *Manager) align(ctx context.Context, a, b string) error {
	for {
		ca, err := m.store.Checkpoints(ctx, a)
		if err != nil {
			return err
		}
		cb, err := m.store.Checkpoints(ctx, b)
		if err != nil {
			return err
		}
		target := store.Hold{}
		for _, cs := range [][]store.Checkpoint{ca, cb} {
			for _, c := range cs {
				if target[c.Topic] == nil {
					target[c.Topic] = map[int32]int64{}
				}
				target[c.Topic][c.Partition] = max(target[c.Topic][c.Partition], c.NextOffset)
			}
		}
		for _, k := range []string{a, b} {
			if err := m.store.SetHold(ctx, k, target); err != nil {
				return err
			}
		}
		// Wait until both are exactly at target, or one went past it (then raise it).
		for {
			ca, err = m.store.Checkpoints(ctx, a)
			if err != nil {
				return err
			}
			cb, err = m.store.Checkpoints(ctx, b)
			if err != nil {
				return err
			}
			state := compareToHold(target, ca, cb)
			if state == holdReached {
				return nil
			}
			if state == holdPassed {
				break
			}
			select {
			case <-ctx.Done():
				if errors.Is(ctx.Err(), context.DeadlineExceeded) {
					return fmt.Errorf("%s and %s did not reach the same offsets within %s (is one of them stalled or failing?)", a, b, verifyTimeout)
				}
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

type holdState int

const (
	holdPending holdState = iota
	holdReached
	holdPassed
)

// compareToHold says where a version's checkpoints stand against the hold's target. A partition
// of a topic the version consumes but has not claimed yet counts as offset 0 (as Compare counts
// it); topics it does not consume are not its concern.
func compareToHold(target store.Hold, sets ...[]store.Checkpoint) holdState {
	state := holdReached
	for _, cs := range sets {
		claimed := map[store.TopicPartition]bool{}
		for _, c := range cs {
			claimed[store.TopicPartition{Topic: c.Topic, Partition: c.Partition}] = true
			switch t := target[c.Topic][c.Partition]; {
			case c.NextOffset > t:
				return holdPassed
			case c.NextOffset < t:
				state = holdPending
			}
		}
		for topic, parts := range target {
			for p, t := range parts {
				if t > 0 && !claimed[store.TopicPartition{Topic: topic, Partition: p}] && consumes(cs, topic) {
					state = holdPending
				}
			}
		}
	}
	return state
}

func consumes(cs []store.Checkpoint, topic string) bool {
	for _, c := range cs {
		if c.Topic == topic {
			return true
		}
	}
	return false
}
