package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// The states of a recorded command.
const (
	CommandRunning  = "running"  // claimed and executing (one left running was interrupted)
	CommandDone     = "done"     // executed: OK and Error say how it went
	CommandExpired  = "expired"  // not run: its deadline had passed when serve read it
	CommandCanceled = "canceled" // not run: the cancel command CanceledBy came before it started
)

// CommandRecord is a control command as the catalog records it.
type CommandRecord struct {
	ID         string
	Command    string
	Replay     string
	Projection string
	State      string // CommandRunning, CommandDone, CommandExpired, CommandCanceled
	OK         bool
	Error      string
	Result     json.RawMessage
	IssuedBy   string
	IssuedAt   time.Time
	Deadline   *time.Time
	CanceledBy string // the id of the cancel command, when canceled
	ExecutedBy string
	StartedAt  time.Time // when it was claimed (executed, expired or canceled)
	FinishedAt *time.Time
}

// ClaimCommand records a command id: as running (c.State empty or CommandRunning) when this
// instance is about to execute it, or, with c.Error, as expired or canceled, which it never will.
// It returns false, with the record of the earlier claim, when the id was claimed before: a
// command id is executed at most once, even when the control topic is read again, and an expired
// or canceled one never.
func (s *Store) ClaimCommand(ctx context.Context, c CommandRecord) (bool, *CommandRecord, error) {
	state := c.State
	if state == "" {
		state = CommandRunning
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO kreplay.commands (id, command, replay, projection, issued_by, issued_at, executed_by,
			state, deadline, canceled_by, ok, error, finished_at)
		VALUES ($1, $2, nullif($3, ''), nullif($4, ''), nullif($5, ''), $6, $7,
			$8, $9, nullif($10, ''), CASE WHEN $8 = 'running' THEN NULL ELSE false END, nullif($11, ''),
			CASE WHEN $8 = 'running' THEN NULL ELSE now() END)
		ON CONFLICT (id) DO NOTHING`,
		c.ID, c.Command, c.Replay, c.Projection, c.IssuedBy, c.IssuedAt, c.ExecutedBy, state, c.Deadline, c.CanceledBy, c.Error)
	if err != nil {
		return false, nil, err
	}
	if tag.RowsAffected() == 1 {
		return true, nil, nil
	}
	prev, err := s.Command(ctx, c.ID)
	return false, prev, err
}

// FinishCommand records a claimed command's outcome.
func (s *Store) FinishCommand(ctx context.Context, id string, ok bool, errMsg string, result json.RawMessage) error {
	_, err := s.pool.Exec(ctx, `UPDATE kreplay.commands SET state = 'done', ok = $2, error = nullif($3, ''), result = $4,
		finished_at = now() WHERE id = $1`, id, ok, errMsg, result)
	return err
}

// Command returns a recorded command.
func (s *Store) Command(ctx context.Context, id string) (*CommandRecord, error) {
	var c CommandRecord
	var ok *bool
	var errMsg, replay, projection, by, execBy, canceledBy *string
	var issued *time.Time
	err := s.pool.QueryRow(ctx, `SELECT id, command, replay, projection, state, ok, error, result, issued_by, issued_at,
		deadline, canceled_by, executed_by, started_at, finished_at FROM kreplay.commands WHERE id = $1`, id).Scan(
		&c.ID, &c.Command, &replay, &projection, &c.State, &ok, &errMsg, &c.Result, &by, &issued,
		&c.Deadline, &canceledBy, &execBy, &c.StartedAt, &c.FinishedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	deref := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	c.Replay, c.Projection, c.Error, c.IssuedBy, c.ExecutedBy = deref(replay), deref(projection), deref(errMsg), deref(by), deref(execBy)
	c.CanceledBy = deref(canceledBy)
	c.OK = ok != nil && *ok
	if issued != nil {
		c.IssuedAt = *issued
	}
	return &c, nil
}

// ControlPosition is where the control-topic reader resumes (0 if it never read).
func (s *Store) ControlPosition(ctx context.Context, topic string) (int64, error) {
	var next int64
	err := s.pool.QueryRow(ctx, `SELECT next_offset FROM kreplay.control_positions WHERE topic = $1 AND partition = 0`, topic).Scan(&next)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return next, err
}

// SetControlPosition records that the control topic was read up to next.
func (s *Store) SetControlPosition(ctx context.Context, topic string, next int64) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO kreplay.control_positions (topic, partition, next_offset) VALUES ($1, 0, $2)
		ON CONFLICT (topic, partition) DO UPDATE SET next_offset = greatest(kreplay.control_positions.next_offset, EXCLUDED.next_offset), updated_at = now()`,
		topic, next)
	return err
}
