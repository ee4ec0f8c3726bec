// Package control is kreplay's control plane as seen from outside: the wire format of the
// commands published on the control topic, of their outcomes and of the statuses published on
// the status topic, and the [Client] that operators (the CLI) use to send commands and read
// statuses. It needs only Kafka: the client links none of the engine.
//
// # Commands
//
// A command is a JSON record on the control topic, keyed by replay key:
//
//	{"id": "c-42", "command": "promote", "replay": "balances_v2", "options": {"wait": "5m"},
//	 "installation": "kreplay", "issued_at": "2026-11-23T10:00:00Z",
//	 "deadline": "2026-11-23T10:06:00Z", "issued_by": "ops@host"}
//
// [ParseCommand] checks one strictly. With a control secret, its value is signed with
// HMAC-SHA256 in the kreplay-signature header ([Sign]). A command addresses one installation
// (serve ignores another's) and must start by its deadline ([Command.Expires]); `cancel` takes
// back a pending one. Its [Outcome] is published on the status topic under [OutcomeKey](id):
// an interim one (state running) when it starts, the final one when it is done, expired or
// canceled. The status topic also holds one record per version with its latest [Status], and
// each catalog's [Announcement].
package control

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/kreplay/kreplay/topology"
)

// Command is a control command: a JSON record on the control topic, keyed by replay key.
type Command struct {
	ID         string          `json:"id"`
	Command    string          `json:"command"` // create start pause resume promote rollback verify remove cancel
	Replay     string          `json:"replay,omitempty"`
	Projection string          `json:"projection,omitempty"`
	Options    json.RawMessage `json:"options,omitempty"`
	// Installation is the installation the command addresses (the config's installation:): a
	// serve of another installation ignores it. Empty: whichever installation reads it.
	Installation string    `json:"installation,omitempty"`
	IssuedAt     time.Time `json:"issued_at"`
	IssuedBy     string    `json:"issued_by,omitempty"`
	// Deadline is when the command must have started: serve never starts it later, it answers
	// expired. Empty: DefaultTTL after issued_at (or after the record's timestamp).
	Deadline *time.Time `json:"deadline,omitempty"`
}

// DefaultTTL is how long a command without a deadline may wait to be started.
const DefaultTTL = 10 * time.Minute

// Expires is when the command expires: its deadline, else DefaultTTL after it was issued
// (recorded is the record's timestamp, for a command without issued_at).
func (c *Command) Expires(recorded time.Time) time.Time {
	if c.Deadline != nil {
		return *c.Deadline
	}
	if !c.IssuedAt.IsZero() {
		return c.IssuedAt.Add(DefaultTTL)
	}
	return recorded.Add(DefaultTTL)
}

// Commands lists the control commands.
var Commands = []string{"create", "start", "pause", "resume", "promote", "rollback", "verify", "remove", "cancel"}

// Outcome is the result of a command, published on the status topic under OutcomeKey(id).
type Outcome struct {
	CommandID  string `json:"command_id"`
	Command    string `json:"command"`
	Replay     string `json:"replay,omitempty"`
	Projection string `json:"projection,omitempty"`
	// State is OutcomeRunning (an interim outcome: the command started and its final outcome
	// follows), OutcomeDone, OutcomeExpired or OutcomeCanceled.
	State  string          `json:"state"`
	OK     bool            `json:"ok"`
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	// Installation is the installation that answered.
	Installation string    `json:"installation,omitempty"`
	ExecutedBy   string    `json:"executed_by,omitempty"`
	ExecutedAt   time.Time `json:"executed_at"`
	// Duplicate is set when the id had been executed before: nothing was done again; OK and
	// Error are those of the first execution.
	Duplicate bool `json:"duplicate,omitempty"`
}

// The states of an outcome.
const (
	OutcomeRunning  = "running"  // interim: the command started; its final outcome follows
	OutcomeDone     = "done"     // executed, or refused: OK and Error say which
	OutcomeExpired  = "expired"  // not run: its deadline had passed when serve read it
	OutcomeCanceled = "canceled" // not run: a cancel came before it started
)

// Final reports whether this is a command's last outcome (not the interim one of a command that
// runs). An outcome without a state is final.
func (o *Outcome) Final() bool { return o.State != OutcomeRunning }

// CancelOptions are the options of a cancel command.
type CancelOptions struct {
	// CommandID is the id of the command to cancel.
	CommandID string `json:"command_id"`
}

// CancelTarget is the id a cancel command cancels.
func CancelTarget(c *Command) (string, error) {
	var o CancelOptions
	if err := DecodeOptions(c, &o); err != nil {
		return "", err
	}
	switch id := o.CommandID; {
	case strings.TrimSpace(id) == "":
		return "", Invalid(`cancel needs "options": {"command_id": "<the id of the command to cancel>"}`)
	case len(id) > 200:
		return "", Invalid("cancel: command id of %d bytes is too long (max 200)", len(id))
	case strings.IndexFunc(id, unicode.IsControl) >= 0:
		return "", Invalid("cancel: the command id holds a control character")
	default:
		return id, nil
	}
}

// OutcomeKey is the status-topic key of a command's outcome. Replay keys cannot contain ':', so
// outcomes never collide with a version's status record (keyed by the replay key).
func OutcomeKey(id string) string { return "command:" + id }

// SignatureHeader carries a command's HMAC-SHA256 (hex) over the record value, keyed by the
// shared control secret.
const SignatureHeader = "kreplay-signature"

// Sign returns the signature header value of a command value.
func Sign(secret, value []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(value)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Verify checks a signature header value against the record value in constant time.
func VerifySignature(secret, value []byte, signature string) bool {
	want := Sign(secret, value)
	return hmac.Equal([]byte(want), []byte(signature))
}

// NewCommandID returns a random command id.
func NewCommandID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// KnownCommand reports whether c is one of Commands.
func KnownCommand(c string) bool { return slices.Contains(Commands, c) }

// maxCommandBytes bounds a command record: anything larger is not a command.
const maxCommandBytes = 64 << 10

// ParseCommand decodes and checks a control record's value: valid JSON, known fields, an id,
// a known command and its required fields. Options are checked by the command itself.
func ParseCommand(value []byte) (*Command, error) {
	if len(value) == 0 {
		return nil, errors.New("empty record: a command is a JSON object")
	}
	if len(value) > maxCommandBytes {
		return nil, fmt.Errorf("record of %d bytes is too large for a command (max %d)", len(value), maxCommandBytes)
	}
	if !utf8.Valid(value) {
		return nil, errors.New("record is not UTF-8 JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.DisallowUnknownFields()
	var c Command
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("not a command: %w", err)
	}
	if dec.More() {
		return nil, errors.New("not a command: trailing data after the JSON object")
	}
	for _, f := range []struct{ name, v string }{{"id", c.ID}, {"command", c.Command}, {"replay", c.Replay}, {"projection", c.Projection},
		{"issued_by", c.IssuedBy}, {"installation", c.Installation}} {
		if i := strings.IndexFunc(f.v, unicode.IsControl); i >= 0 {
			c.ID = strings.Map(printable, c.ID)
			return &c, fmt.Errorf("field %q holds a control character (%q at byte %d)", f.name, f.v[i], i)
		}
	}
	if strings.TrimSpace(c.ID) == "" {
		return &c, errors.New(`command has no "id"`)
	}
	if len(c.ID) > 200 {
		return &c, fmt.Errorf(`command id of %d bytes is too long (max 200)`, len(c.ID))
	}
	if len(c.IssuedBy) > 200 {
		return &c, fmt.Errorf(`issued_by of %d bytes is too long (max 200)`, len(c.IssuedBy))
	}
	if !KnownCommand(c.Command) {
		return &c, fmt.Errorf("unknown command %q (known: %s)", c.Command, strings.Join(Commands, ", "))
	}
	switch {
	case c.Command == "rollback":
		if c.Projection == "" {
			return &c, errors.New(`rollback needs "projection"`)
		}
	case c.Command == "cancel":
		if _, err := CancelTarget(&c); err != nil {
			return &c, err
		}
	case c.Replay == "":
		return &c, fmt.Errorf(`%s needs "replay" (the replay key)`, c.Command)
	}
	if c.Command == "create" && c.Projection == "" {
		return &c, errors.New(`create needs "projection"`)
	}
	if c.Replay != "" {
		if err := topology.ValidateKey(c.Replay); err != nil {
			return &c, err
		}
	}
	if len(c.Projection) > 63 {
		return &c, fmt.Errorf("projection name of %d bytes is too long", len(c.Projection))
	}
	return &c, nil
}

// printable replaces control characters, so that an id can be echoed in an outcome.
func printable(r rune) rune {
	if unicode.IsControl(r) {
		return '?'
	}
	return r
}

// DecodeOptions decodes a command's options strictly into v ({} or absent: defaults); a bad
// option is ErrInvalid.
func DecodeOptions(c *Command, v any) error {
	if len(c.Options) == 0 || string(c.Options) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(c.Options))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Invalid("%s: bad options: %v", c.Command, err)
	}
	return nil
}
