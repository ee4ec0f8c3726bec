package control

import (
	"errors"
	"fmt"
	"time"

	"github.com/kreplay/kreplay/store"
)

// The wire format of what serve answers: the outcome's results (create, promote, rollback,
// verify) and the statuses published on the status topic, served on /api/replays and printed by
// `kreplay status -o json`.

// Status is a version's status: the `kreplay status -o json` fields, the records of the status
// topic and GET /api/replays.
type Status struct {
	Key             string            `json:"key"`
	Projection      string            `json:"projection"`
	State           string            `json:"state"`
	Live            bool              `json:"live"`
	LiveVersion     string            `json:"live_version"`     // the projection's live version
	PreviousVersion string            `json:"previous_version"` // the one live before it ("" if none)
	AppliedEvents   int64             `json:"applied_events"`
	SkippedEvents   int64             `json:"skipped_events"`
	LateEvents      int64             `json:"late_events"` // applied behind a greater event while tailing (see max_lateness)
	Progress        float64           `json:"progress"`    // 0..1 of the high watermarks at start
	ETASeconds      *float64          `json:"eta_seconds"` // null when unknown (no rate yet)
	Rate            float64           `json:"rate"`        // events/s over the last minute
	LagEvents       int64             `json:"lag_events"`
	LagSeconds      float64           `json:"lag_seconds"`
	Error           string            `json:"error"`
	DefinitionHash  string            `json:"definition_hash"`
	Drift           bool              `json:"drift"` // the config's definition differs from this version's snapshot
	Options         store.Options     `json:"options"`
	Partitions      []PartitionStatus `json:"partitions,omitempty"`
	CreatedAt       time.Time         `json:"created_at"`
	UpdatedAt       time.Time         `json:"updated_at"` // when this status was computed
	RemovedAt       *time.Time        `json:"removed_at,omitempty"`
	// AutoPromoteHeld says why auto-promotion holds this --auto-promote version instead of
	// promoting it (its promotion would change the shape of the live views).
	AutoPromoteHeld string `json:"auto_promote_held,omitempty"`
}

// PartitionStatus is a version's position in one partition.
type PartitionStatus struct {
	Topic      string `json:"topic"`
	Partition  int32  `json:"partition"`
	NextOffset int64  `json:"next_offset"`
	// LastStableOffset is the end lag is measured against: kreplay reads committed, so the
	// records of a transaction still open are out of reach (see lifecycle.PartitionLag).
	LastStableOffset int64 `json:"last_stable_offset"`
	// HighWatermark is one past the last record written, committed or not: past
	// LastStableOffset while a transaction is open on the partition.
	HighWatermark int64 `json:"high_watermark"`
	TargetOffset  int64 `json:"target_offset"`
	Lag           int64 `json:"lag"` // LastStableOffset - NextOffset, at least 0
}

// LagReport is how far a version is behind the brokers: `kreplay lag`.
type LagReport struct {
	Key        string            `json:"key"`
	LagEvents  int64             `json:"lag_events"`
	LagSeconds float64           `json:"lag_seconds"`
	Partitions []PartitionStatus `json:"partitions"`
}

// PromoteOptions are `kreplay promote`'s options.
type PromoteOptions struct {
	// MaxLag is the most events the version may be behind the brokers' last stable offsets (the
	// lag of its status). Default 0.
	MaxLag int64 `json:"max_lag,omitempty"`
	// Wait is how long to wait for the version to be tailing with lag <= MaxLag (0: not at all).
	Wait Duration `json:"wait,omitempty"`
	// Verified refuses the promotion unless the version's last verify, against the current live
	// version, passed.
	Verified bool `json:"verified,omitempty"`
	// AllowShapeChange lets the promotion remove, retype or move a column of a live view, or
	// drop a view (store.ShapeChange.Breaking); without it such a promotion is refused, naming
	// the columns. Columns added at the end and new views need no permission.
	AllowShapeChange bool `json:"allow_shape_change,omitempty"`
}

// SwapReport is what a promote or rollback did.
type SwapReport struct {
	Projection      string  `json:"projection"`
	From            string  `json:"from"`
	To              string  `json:"to"`
	Kind            string  `json:"kind"`
	Attempts        int     `json:"attempts"`
	SwapDurationMS  float64 `json:"swap_duration_ms"`
	WaitedSeconds   float64 `json:"waited_seconds"`
	PreviousRetired bool    `json:"previous_retired"`
	// PreviousState is the previous live version's state now: retired, or paused or failed
	// (it resumes as retired).
	PreviousState string `json:"previous_state,omitempty"`
	// ShapeChanges is how the swap changed the columns readers of the live views see (a
	// rollback is never refused for its shape, but lists it too).
	ShapeChanges []store.ShapeChange `json:"shape_changes,omitempty"`
	// Routed: the live views already read both versions (routed views): the swap only updated
	// the catalog and took no lock readers wait for.
	Routed bool `json:"routed,omitempty"`
}

// VerifyReport is what verify found.
type VerifyReport struct {
	Version string              `json:"version"`
	Against string              `json:"against"` // the live version
	Passed  bool                `json:"passed"`
	Offsets store.Hold          `json:"offsets"` // the offsets both had applied when compared
	Results []store.CheckResult `json:"results"`
	Differs []string            `json:"differs,omitempty"` // the checks and tables that differ
	Skipped []string            `json:"skipped,omitempty"` // what could not be compared, and why
	// ShapeChanges is how promoting Version would change the columns readers of the live views
	// see; ShapeChangeNeedsFlag says whether promote would need --allow-shape-change for it.
	ShapeChanges         []store.ShapeChange `json:"shape_changes,omitempty"`
	ShapeChangeNeedsFlag bool                `json:"shape_change_needs_flag,omitempty"`
}

// CreateOptions are the options of a create command.
type CreateOptions struct {
	Topics                []string `json:"topics,omitempty"`
	Since                 string   `json:"since,omitempty"` // RFC 3339
	EventTypes            []string `json:"event_types,omitempty"`
	AutoPromote           bool     `json:"auto_promote,omitempty"`
	AllowTruncatedHistory bool     `json:"allow_truncated_history,omitempty"`
	Start                 bool     `json:"start,omitempty"`
	// DefinitionHash, when set, is the definition the operator means (the CLI sends the hash
	// of the projection in its config file): refused if serve's config has another.
	DefinitionHash string `json:"definition_hash,omitempty"`
}

// CancelReport is what became of the command a cancel names: a successful cancel's result.
type CancelReport struct {
	CommandID  string `json:"command_id"`
	Command    string `json:"command"`
	Replay     string `json:"replay,omitempty"`
	Projection string `json:"projection,omitempty"`
	// State is canceled or expired: either way it was not run and never will be.
	State string `json:"state"`
	// CanceledBy is the id of the cancel that canceled it (this one, or an earlier one).
	CanceledBy string `json:"canceled_by,omitempty"`
}

// ErrInvalid marks a request refused as such (unknown projection or key, bad option, truncated
// history...): nothing was changed.
var ErrInvalid = errors.New("invalid request")

type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return e.msg }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

// Invalid returns an error that is ErrInvalid, with the message formatted as fmt.Sprintf does.
func Invalid(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...)}
}

// AsInvalid marks err's message as an invalid request.
func AsInvalid(err error) error { return &invalidError{msg: err.Error()} }
