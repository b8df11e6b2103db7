package prometheus

import (
	"io"
	"math"
	"strconv"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/internal/expo"
	"github.com/tapes-go/tapes/reporters/mapping"
)

// quantileValues are the quantile label values, formatted once.
var quantileValues = func() (l [registry.NumQuantiles]string) {
	for i, q := range registry.Quantiles {
		l[i] = strconv.FormatFloat(q, 'g', -1, 64)
	}
	return l
}()

// writeText writes st.fams in the text format 0.0.4, by hand rather than
// through expfmt: a scrape of 10k timers must not build 10k protobuf
// messages first.
func (st *state) writeText(w io.Writer, o *Options) error {
	for i := range st.fams {
		f := &st.fams[i]
		st.family(f, o)
		if len(st.buf) >= flushAt {
			if _, err := w.Write(st.buf); err != nil {
				return err
			}
			st.buf = st.buf[:0]
		}
	}
	if len(st.buf) > 0 {
		if _, err := w.Write(st.buf); err != nil {
			return err
		}
	}
	return nil
}

func (st *state) family(f *expo.Family, o *Options) {
	typ := f.Type.String()
	if f.Type == expo.Histogram && !classic(f, o) {
		typ = "summary"
	}
	b := append(st.buf, "# HELP "...)
	b = append(b, f.Name...)
	b = append(b, ' ')
	if f.Help != "" {
		b = appendEscaped(b, f.Help, false) // the user's: may hold \ or newlines
	} else {
		b = f.AppendHelp(b) // a registry name and a kind: nothing to escape
	}
	b = append(b, "\n# TYPE "...)
	b = append(b, f.Name...)
	b = append(b, ' ')
	b = append(b, typ...)
	b = append(b, '\n')
	st.buf = b

	if f.Type != expo.Histogram {
		for i := range f.Samples {
			s := &f.Samples[i]
			b = st.buf
			b = append(b, f.Name...)
			b = appendLabels(b, s.Labels, "", "")
			b = append(b, ' ')
			b = appendValue(b, s.Value)
			st.buf = append(b, '\n')
		}
		return
	}
	if classic(f, o) {
		st.classicFamily(f, o)
		return
	}
	for i := range f.Samples {
		s := &f.Samples[i]
		snap := s.Snapshot
		b = st.buf
		qs, vs := quantileValues[:], snap.Quantiles[:]
		if f.Quantiles != nil { // the mapping's summary_options
			qs, vs = nil, s.Quantiles
		}
		for q, v := range vs {
			if snap.WindowCount == 0 {
				v = math.NaN()
			}
			b = append(b, f.Name...)
			if qs != nil {
				b = appendLabels(b, s.Labels, "quantile", qs[q])
			} else {
				st.le = strconv.AppendFloat(st.le[:0], f.Quantiles[q], 'g', -1, 64)
				b = appendLabels(b, s.Labels, "quantile", st.le)
			}
			b = append(b, ' ')
			b = appendFloat(b, v)
			b = append(b, '\n')
		}
		st.buf = st.sumCount(b, f.Name, s.Labels, snap.Sum, snap.Count)
	}
}

func (st *state) sumCount(b []byte, name string, labels []mapping.Label, sum float64, count uint64) []byte {
	b = append(b, name...)
	b = append(b, "_sum"...)
	b = appendLabels(b, labels, "", "")
	b = append(b, ' ')
	b = appendFloat(b, sum)
	b = append(b, '\n')
	b = append(b, name...)
	b = append(b, "_count"...)
	b = appendLabels(b, labels, "", "")
	b = append(b, ' ')
	b = strconv.AppendUint(b, count, 10)
	return append(b, '\n')
}

func (st *state) classicFamily(f *expo.Family, o *Options) {
	bounds := st.familyBounds(f, o)
	for i := range f.Samples {
		s := &f.Samples[i]
		n := s.Native
		st.cum = expo.ClassicCounts(st.cum[:0], n, bounds)
		b := st.buf
		for j, ub := range bounds {
			st.le = appendFloat(st.le[:0], ub)
			b = append(b, f.Name...)
			b = append(b, "_bucket"...)
			b = appendLabels(b, s.Labels, "le", st.le)
			b = append(b, ' ')
			b = strconv.AppendUint(b, st.cum[j], 10)
			b = append(b, '\n')
		}
		b = append(b, f.Name...)
		b = append(b, "_bucket"...)
		b = appendLabels(b, s.Labels, "le", "+Inf")
		b = append(b, ' ')
		b = strconv.AppendUint(b, n.Count, 10)
		b = append(b, '\n')
		st.buf = st.sumCount(b, f.Name, s.Labels, n.Sum, n.Count)
	}
}

// appendLabels appends {labels,extra="value"}, or nothing when there are
// none. The extra label (quantile, le) comes last, as client libraries
// write it.
func appendLabels[V string | []byte](b []byte, ls []mapping.Label, extra string, value V) []byte {
	if len(ls) == 0 && extra == "" {
		return b
	}
	b = append(b, '{')
	for i, l := range ls {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, l.Name...)
		b = append(b, `="`...)
		b = appendEscaped(b, l.Value, true)
		b = append(b, '"')
	}
	if extra != "" {
		if len(ls) > 0 {
			b = append(b, ',')
		}
		b = append(b, extra...)
		b = append(b, `="`...)
		b = append(b, value...)
		b = append(b, '"')
	}
	return append(b, '}')
}

// appendEscaped escapes a HELP text (backslash, newline) or a label value
// (also double quotes), as the text format requires.
func appendEscaped(b []byte, s string, quote bool) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b = append(b, `\\`...)
		case c == '\n':
			b = append(b, `\n`...)
		case c == '"' && quote:
			b = append(b, `\"`...)
		default:
			b = append(b, c)
		}
	}
	return b
}

// appendValue writes integral values as integers ("6000", not "6e+03"
// style for larger ones), which parsers read alike and people read better.
func appendValue(b []byte, v float64) []byte {
	if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
		return strconv.AppendInt(b, int64(v), 10)
	}
	return appendFloat(b, v)
}

func appendFloat(b []byte, v float64) []byte {
	switch {
	case math.IsNaN(v):
		return append(b, "NaN"...)
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}
