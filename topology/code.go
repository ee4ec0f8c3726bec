package topology

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
)

// Code marks a projection whose handlers are Go code (package processor/projector) instead of SQL
// statements: what a definition records of that code. Code cannot be snapshotted, so a version
// of such a projection runs the Go handlers that its binary registers under the same projection
// name and Version; Version is part of the definition and its hash, so a code change rolled out
// with a new Version is a new definition (drift, a new replay), exactly as a changed SQL handler.
// It is never read from YAML: a program sets it (processor.Options.Projectors).
type Code struct {
	// Version names the code of the handlers, such as "2" or "2026-11-30": a program registers
	// the projector of each version it must run.
	Version string `json:"version"`
	// EventTypes are the event types that have a Go handler, sorted.
	EventTypes []string `json:"event_types"`
}

// maxCodeVersion bounds a code version's length: it appears in logs, statuses and errors.
const maxCodeVersion = 64

// clone returns a copy with the event types sorted (nil stays nil).
func (c *Code) clone() *Code {
	if c == nil {
		return nil
	}
	out := &Code{Version: c.Version, EventTypes: slices.Clone(c.EventTypes)}
	slices.Sort(out.EventTypes)
	return out
}

// validate checks the code version and the event types.
func (c *Code) validate() []error {
	var errs []error
	switch {
	case strings.TrimSpace(c.Version) == "":
		errs = append(errs, errors.New("code version is empty; set the projector's Version (it names the code, such as \"1\", and goes into the definition hash)"))
	case len(c.Version) > maxCodeVersion:
		errs = append(errs, fmt.Errorf("code version %q is %d bytes; use at most %d", c.Version, len(c.Version), maxCodeVersion))
	case strings.IndexFunc(c.Version, func(r rune) bool { return !unicode.IsPrint(r) || unicode.IsSpace(r) }) >= 0:
		errs = append(errs, fmt.Errorf("code version %q has a space or a control character; use letters, digits and punctuation", c.Version))
	}
	if len(c.EventTypes) == 0 {
		errs = append(errs, errors.New("handlers: none; give the projector a Go handler for at least one event type"))
	}
	seen := map[string]bool{}
	for _, t := range c.EventTypes {
		switch {
		case strings.TrimSpace(t) == "":
			errs = append(errs, fmt.Errorf("handler %q: blank event type; use the event's type as the key", t))
		case seen[t]:
			errs = append(errs, fmt.Errorf("handler %q is listed twice", t))
		}
		seen[t] = true
	}
	return errs
}

// HandlesType reports whether the definition applies events of type t: a SQL handler, a Go
// handler or a fold reads them.
func (d Definition) HandlesType(t string) bool {
	if _, ok := d.Handlers[t]; ok {
		return true
	}
	if d.Code != nil && slices.Contains(d.Code.EventTypes, t) {
		return true
	}
	for _, f := range d.Folds {
		if slices.Contains(f.Events, t) {
			return true
		}
	}
	return false
}

// HandledTypes are the event types the definition applies (see HandlesType), sorted.
func (d Definition) HandledTypes() []string {
	var out []string
	for t := range d.Handlers {
		out = append(out, t)
	}
	if d.Code != nil {
		out = append(out, d.Code.EventTypes...)
	}
	for _, f := range d.Folds {
		out = append(out, f.Events...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
