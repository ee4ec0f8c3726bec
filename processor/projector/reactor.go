package projector

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Reactor is Go code run for the events of a projection after its live version has committed
// them: side effects (an email, a webhook, a message to another system) that must happen once
// per event in production and never when a read model is rebuilt. It never runs for what a
// replay or a version that is not live applies. See the package documentation, "Reactors", for
// exactly what is guaranteed: at least once, in order per partition, never for history.
type Reactor struct {
	// Name names the reactor in logs and metrics (kreplay_reactions_total{reactor}); unique
	// per projection.
	Name string
	// Projection is the projection whose live version's events it reacts to: a projector's or
	// one of the config file's.
	Projection string
	// EventTypes are the types it reacts to. Defaults to every type.
	EventTypes []string
	// React reacts to one event. It may be called again for an event it has seen (after a
	// crash, or an error): deduplicate by ev.ID where that matters. An error is retried with
	// backoff (the projection's reactions wait meanwhile); return nil to give up on an event.
	React func(ctx context.Context, ev *Event) error
}

// Validate checks the reactor's fields.
func (r *Reactor) Validate() error {
	if r == nil {
		return errors.New("a nil *projector.Reactor")
	}
	var errs []error
	what := fmt.Sprintf("reactor %q of projection %q", r.Name, r.Projection)
	if strings.TrimSpace(r.Name) == "" {
		errs = append(errs, fmt.Errorf("%s: Name is empty; name it (for logs and metrics)", what))
	}
	if r.Projection == "" {
		errs = append(errs, fmt.Errorf("%s: Projection is empty; name the projection whose events it reacts to", what))
	}
	if r.React == nil {
		errs = append(errs, fmt.Errorf("%s: React is nil", what))
	}
	for i, t := range r.EventTypes {
		if strings.TrimSpace(t) == "" || slices.Contains(r.EventTypes[:i], t) {
			errs = append(errs, fmt.Errorf("%s: event type %q is blank or listed twice", what, t))
		}
	}
	return errors.Join(errs...)
}

// Reacts reports whether the reactor reacts to events of type t.
func (r *Reactor) Reacts(t string) bool {
	return len(r.EventTypes) == 0 || slices.Contains(r.EventTypes, t)
}
