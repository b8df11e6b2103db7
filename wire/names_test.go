package wire

import (
	"errors"
	"testing"
)

func TestNamesRule(t *testing.T) {
	n := NewNames(3)
	add := func(k Kind, name string, want error) {
		t.Helper()
		_, err := n.Add(k, name)
		if !errors.Is(err, want) && !(want == nil && err == nil) {
			t.Errorf("Add(%v, %q) = %v, want %v", k, name, err, want)
		}
		var ne *NameError
		if err != nil && (!errors.As(err, &ne) || ne.Name != name) {
			t.Errorf("Add(%v, %q): %v is not a *NameError for the name", k, name, err)
		}
	}
	add(KindCounter, "a.b", nil)
	add(KindCounter, "a.b", nil) // again, same kind
	add(KindGauge, "a.b", ErrKindConflict)
	add(KindCounter, "a", ErrPrefixConflict)     // a path of a.b
	add(KindCounter, "a.b.c", ErrPrefixConflict) // below a.b
	add(KindCounter, "a..b", ErrInvalidName)
	add(Kind(9), "x", ErrInvalidKind)
	add(KindTimer, "x", nil)
	add(KindTimer, "y", nil)
	add(KindTimer, "z", ErrTooManyMetrics)
	if _, err := n.Add(KindCounter, "a"); err == nil {
		t.Fatal("a accepted beside a.b")
	} else if ne := err.(*NameError); ne.Other != "a.b" {
		t.Errorf("prefix conflict names %q, want a.b", ne.Other)
	}
	if !n.Remove("a.b") || n.Remove("a.b") {
		t.Error("Remove")
	}
	add(KindCounter, "a", nil) // the path is free again
	if k, ok := n.Kind("a"); !ok || k != KindCounter || n.Len() != 3 {
		t.Errorf("Kind(a) = %v, %v; Len %d", k, ok, n.Len())
	}
}

func TestUnder(t *testing.T) {
	for _, c := range []struct {
		name, prefix string
		want         bool
	}{{"tapes", "tapes", true}, {"tapes.host", "tapes", true}, {"tapesx", "tapes", false}, {"tape", "tapes", false}, {"a.tapes", "tapes", false}} {
		if got := Under(c.name, c.prefix); got != c.want {
			t.Errorf("Under(%q, %q) = %v", c.name, c.prefix, got)
		}
	}
}
