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
//	 "issued_at": "2026-11-23T10:00:00Z", "issued_by": "ops@host"}
//
// [ParseCommand] checks one strictly. With a control secret, its value is signed with
// HMAC-SHA256 in the kreplay-signature header ([Sign]). Its [Outcome] is published on the
// status topic under [OutcomeKey](id), beside one record per version with its latest [Status].
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
	Command    string          `json:"command"` // create start pause resume promote rollback verify remove
	Replay     string          `json:"replay,omitempty"`
	Projection string          `json:"projection,omitempty"`
	Options    json.RawMessage `json:"options,omitempty"`
	IssuedAt   time.Time       `json:"issued_at"`
	IssuedBy   string          `json:"issued_by,omitempty"`
}

// Commands lists the control commands.
var Commands = []string{"create", "start", "pause", "resume", "promote", "rollback", "verify", "remove"}

// Outcome is the result of a command, published on the status topic under OutcomeKey(id).
type Outcome struct {
	CommandID  string          `json:"command_id"`
	Command    string          `json:"command"`
	Replay     string          `json:"replay,omitempty"`
	Projection string          `json:"projection,omitempty"`
	OK         bool            `json:"ok"`
	Error      string          `json:"error,omitempty"`
	Result     json.RawMessage `json:"result,omitempty"`
	ExecutedBy string          `json:"executed_by,omitempty"`
	ExecutedAt time.Time       `json:"executed_at"`
	// Duplicate is set when the id had been executed before: nothing was done again; OK and
	// Error are those of the first execution.
	Duplicate bool `json:"duplicate,omitempty"`
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
	for _, f := range []struct{ name, v string }{{"id", c.ID}, {"command", c.Command}, {"replay", c.Replay}, {"projection", c.Projection}, {"issued_by", c.IssuedBy}} {
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
	if c.Command == "rollback" {
		if c.Projection == "" {
			return &c, errors.New(`rollback needs "projection"`)
		}
	} else if c.Replay == "" {
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
