package topology

// jsonDecoder decodes the json format: one JSON object per record, with
// configurable field names. See NewDecoder for the rules.
type jsonDecoder struct {
	fields FieldNames
	st     decodeState
}

func (d *jsonDecoder) Decode(r *Record, ev *Event) error {
	st := &d.st
	if err := st.begin(r); err != nil {
		return err
	}
	f := &d.fields
	var m envelope
	var v value
	for {
		name, more, err := st.next(r, &v)
		if err != nil {
			return err
		}
		if !more {
			break
		}
		// Comparisons of string(name) do not allocate.
		switch {
		case string(name) == f.Type:
			m.typ = v
		case string(name) == f.ID:
			m.id = v
		case string(name) == f.AggregateID:
			m.aggregateID = v
		case string(name) == f.Version:
			m.version = v
		case string(name) == f.CreatedAt:
			m.createdAt = v
		case string(name) == f.Data:
			m.data = v
		}
	}
	return st.build(r, ev, &m, f)
}
