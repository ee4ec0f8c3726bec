package processor

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/kreplay/kreplay/processor/projector"
	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/topology"
)

// Projections whose handlers are Go code (package projector). A projector is added to the config
// as a projection whose definition records its code version (topology.Code), so that bootstrap,
// create, drift, status, verify, promote, rollback and remove treat it as any projection. What a
// definition cannot hold is the code itself: a version runs the projector registered under its
// projection's name and its code version, and a version whose code this binary does not have does
// not run here (see runner.waitForCode).

// codeRegistry is the Go code of this binary: every projector it can run, by name and version.
type codeRegistry map[string]map[string]*projector.Projector

// handlers are the Go handlers of a version's definition: nil for SQL handlers, and an error
// that says what to do when this binary has not the code of the definition's version.
func (c codeRegistry) handlers(def topology.Definition, instance string) (store.CodeHandlers, error) {
	if def.Code == nil {
		return nil, nil
	}
	if p := c[def.Projection][def.Code.Version]; p != nil {
		return p.CodeHandlers(), nil
	}
	has := "none"
	if vs := slices.Sorted(maps.Keys(c[def.Projection])); len(vs) > 0 {
		has = strings.Join(vs, ", ")
	}
	return nil, fmt.Errorf("instance %s has no code of projector %s version %s (its binary registers versions: %s), so it does not run this version here. "+
		"A version runs the code it was created with: roll out a binary that registers both the live version's projector and the new one "+
		"(processor.Options.PreviousProjectors), then create, verify and promote, and drop the old projector from a later binary once its version is removed",
		instance, def.Projection, def.Code.Version, has)
}

// withProjectors returns cfg with the projectors added as projections (a copy; cfg itself when
// there are none), validated, and the code registry of the current and previous projectors.
func withProjectors(cfg *topology.Config, opts Options) (*topology.Config, codeRegistry, error) {
	reg := codeRegistry{}
	if len(opts.Projectors) == 0 && len(opts.PreviousProjectors) == 0 && len(opts.Reactors) == 0 {
		return cfg, reg, nil
	}
	var errs []error
	add := func(p *projector.Projector) bool {
		if err := p.Validate(); err != nil {
			errs = append(errs, err)
			return false
		}
		if reg[p.Name][p.Version] != nil {
			errs = append(errs, fmt.Errorf("projector %q version %q is registered twice; register each version once (the current one under Projectors, older ones under PreviousProjectors)", p.Name, p.Version))
			return false
		}
		if reg[p.Name] == nil {
			reg[p.Name] = map[string]*projector.Projector{}
		}
		reg[p.Name][p.Version] = p
		return true
	}
	c := *cfg
	c.Projections = slices.Clone(cfg.Projections)
	c.Sources = slices.Clone(cfg.Sources)
	current := map[string]bool{}
	for _, p := range opts.Projectors {
		if !add(p) {
			continue
		}
		if current[p.Name] {
			errs = append(errs, fmt.Errorf("projector %q: two versions under Projectors; new versions snapshot one: list the older one under PreviousProjectors", p.Name))
			continue
		}
		current[p.Name] = true
		if pc, ok := c.Projection(p.Name); ok {
			if pc.Code == nil || pc.Code.Version != p.Version {
				errs = append(errs, fmt.Errorf("projection %q is declared both in the config and as a projector; keep one", p.Name))
			}
			continue // added already (a config given to New twice)
		}
		c.Projections = append(c.Projections, p.Projection())
		for _, topic := range p.Sources {
			if _, ok := c.Source(topic); !ok {
				c.Sources = append(c.Sources, topology.Source{Topic: topic})
			}
		}
	}
	for _, p := range opts.PreviousProjectors {
		add(p)
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		errs = append(errs, err)
	}
	seen := map[[2]string]bool{}
	for _, r := range opts.Reactors {
		if err := r.Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		if _, ok := c.Projection(r.Projection); !ok {
			errs = append(errs, fmt.Errorf("reactor %q: projection %q is neither in the config nor a projector", r.Name, r.Projection))
		}
		if k := [2]string{r.Projection, r.Name}; seen[k] {
			errs = append(errs, fmt.Errorf("reactor %q of projection %q is registered twice", r.Name, r.Projection))
		} else {
			seen[k] = true
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, fmt.Errorf("projectors and reactors:\n%w", err)
	}
	return &c, reg, nil
}

// waitForCode returns true when this binary has the Go code the version runs (always for SQL
// handlers). Otherwise the version does not run here: it says why (log, and status every
// stallReportEvery, as for a batch that cannot advance) until the runner stops, and returns false.
// It does not join the version's consumer group, so that an instance whose binary has the code
// consumes it.
func (r *runner) waitForCode() bool {
	_, err := r.p.code.handlers(r.version().Definition, r.p.instance)
	if err == nil {
		return true
	}
	r.log.Error("version not run by this instance", "reason", err)
	for {
		sctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
		if serr := r.p.store.SetStalled(sctx, r.key, err.Error()); serr != nil && r.ctx.Err() == nil {
			r.p.retries.Failed("say why version "+r.key+" does not run", serr)
		}
		cancel()
		select {
		case <-r.ctx.Done():
			return false
		case <-time.After(stallReportEvery):
		}
	}
}
