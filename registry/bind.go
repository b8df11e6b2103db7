package registry

import (
	"fmt"
	"reflect"
	"strings"
)

// Bind fills the metric fields of the struct that ptr points to, replacing
// tapes' metered_meta: every field of type *Counter, *Meter, *Timer,
// *Histogram or *Gauge (a settable gauge) with a `tapes:"name"` tag gets the
// metric of that name, where "{}" in the name stands for the struct's type
// name. So each handler type gets its own metrics without repeating itself:
//
//	type UsersHandler struct {
//		Latency *registry.Timer   `tapes:"http.{}.latency"` // http.UsersHandler.latency
//		Errors  *registry.Counter `tapes:"http.{}.errors"`
//	}
//	h := &UsersHandler{}
//	err := r.Bind(h)
//
// For a generic type "{}" is the name without its type arguments.
//
// Bind returns an error, and fills nothing and leaves no metric behind, if
// ptr is not a pointer to a struct, a tagged field has another type, or a
// name is rejected (invalid, used by another kind, a prefix conflict with
// an existing metric or another field, or past WithMaxMetrics).
func (r *Registry) Bind(ptr any) error {
	v := reflect.ValueOf(ptr)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("tapes: Bind needs a non-nil pointer to a struct, got %T", ptr)
	}
	sv := v.Elem()
	st := sv.Type()
	typeName := st.Name()
	if i := strings.IndexByte(typeName, '['); i >= 0 {
		typeName = typeName[:i] // Pair[int,string] -> Pair
	}
	var fields []int
	var kinds []Kind
	var names []string
	for i := 0; i < st.NumField(); i++ {
		f := st.Field(i)
		tag, ok := f.Tag.Lookup("tapes")
		if !ok {
			continue
		}
		k, ok := bindKinds[f.Type]
		if !ok {
			return fmt.Errorf("tapes: Bind: field %s.%s has type %s; tagged fields must be *registry.Counter, *Meter, *Timer, *Histogram or *Gauge", st.Name(), f.Name, f.Type)
		}
		if !f.IsExported() {
			return fmt.Errorf("tapes: Bind: field %s.%s is not exported", st.Name(), f.Name)
		}
		fields, kinds, names = append(fields, i), append(kinds, k), append(names, strings.ReplaceAll(tag, "{}", typeName))
	}
	ms, bad, err := r.getOrCreateAll(kinds, names)
	if err != nil {
		return fmt.Errorf("tapes: Bind: field %s.%s: %w", st.Name(), st.Field(fields[bad]).Name, err)
	}
	for i, f := range fields {
		sv.Field(f).Set(reflect.ValueOf(ms[i]))
	}
	return nil
}

var bindKinds = map[reflect.Type]Kind{
	reflect.TypeFor[*Counter]():   KindCounter,
	reflect.TypeFor[*Gauge]():     KindGauge,
	reflect.TypeFor[*Meter]():     KindMeter,
	reflect.TypeFor[*Timer]():     KindTimer,
	reflect.TypeFor[*Histogram](): KindHistogram,
}
