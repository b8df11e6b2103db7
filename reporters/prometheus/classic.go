package prometheus

import (
	"github.com/tapes-go/tapes/reporters/internal/expo"
	"github.com/tapes-go/tapes/reporters/mapping"
)

// classic reports whether a histogram family gets classic buckets: its
// mapping's observer_type decides for the families it names, the options
// for the rest.
func classic(f *expo.Family, o *Options) bool {
	switch f.Observer {
	case mapping.ObserverHistogram:
		return true
	case mapping.ObserverSummary:
		return false
	}
	return o.ClassicBuckets
}

// familyBounds returns the classic bounds of a family: the mapping's
// buckets (histogram_options), o.ClassicBounds, or expo.ClassicBounds of
// its samples' native buckets.
func (st *state) familyBounds(f *expo.Family, o *Options) []float64 {
	if f.Observer == mapping.ObserverHistogram && len(f.Buckets) > 0 {
		return f.Buckets
	}
	if o.ClassicBounds != nil {
		return o.ClassicBounds
	}
	st.natives = st.natives[:0]
	for i := range f.Samples {
		st.natives = append(st.natives, f.Samples[i].Native)
	}
	return expo.ClassicBounds(st.natives)
}
