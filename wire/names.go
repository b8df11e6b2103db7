package wire

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors of a name table, matched with errors.Is. Every error
// Names.Add returns is a *NameError wrapping one of them (or
// ErrInvalidName).
var (
	// ErrKindConflict: the name is already used by a metric of another kind.
	ErrKindConflict = errors.New("name already used by a metric of another kind")
	// ErrPrefixConflict: the name is a prefix of another metric's name, or
	// another metric's name is a prefix of it ("a.b" beside "a.b.c"), which
	// the nested stats tree could not represent.
	ErrPrefixConflict = errors.New("name conflicts with another metric's path")
	// ErrInvalidKind: the kind is not a metric kind.
	ErrInvalidKind = errors.New("not a metric kind")
	// ErrTooManyMetrics: the table's limit is reached.
	ErrTooManyMetrics = errors.New("registry metric limit reached")
)

// NameError reports why a name could not be used.
type NameError struct {
	Name     string
	Kind     Kind   // the kind that was asked for
	Existing Kind   // for ErrKindConflict: the kind already registered
	Other    string // for ErrPrefixConflict: the metric it collides with
	Err      error  // one of the sentinels above, or ErrInvalidName
	Detail   error  // for ErrInvalidName: ValidateName's own message
}

func (e *NameError) Error() string {
	switch {
	case e.Detail != nil:
		return fmt.Sprintf("tapes: %v", e.Detail)
	case e.Err == ErrKindConflict:
		return fmt.Sprintf("tapes: %s %q: name already registered as a %s", e.Kind, e.Name, e.Existing)
	case e.Err == ErrPrefixConflict:
		return fmt.Sprintf("tapes: %s %q conflicts with metric %q (a name cannot be both a metric and a path to others)", e.Kind, e.Name, e.Other)
	default:
		return fmt.Sprintf("tapes: %s %q: %v", e.Kind, e.Name, e.Err)
	}
}

func (e *NameError) Unwrap() error { return e.Err }

// Names is a table of metric names under the name rule: valid names, one
// kind per name, no name on another's path, at most a limit of them. A
// registry and a worker's definition table both keep one, so a worker is
// refused exactly what the host's registry would refuse, before anything
// is written. Not safe for concurrent use.
type Names struct {
	kinds map[string]Kind
	nodes map[string]int // internal path -> number of names below it
	max   int
}

// NewNames returns an empty table holding at most max names (0: no limit).
func NewNames(max int) *Names {
	return &Names{kinds: map[string]Kind{}, nodes: map[string]int{}, max: max}
}

// Kind returns the kind name was added with.
func (n *Names) Kind(name string) (Kind, bool) {
	k, ok := n.kinds[name]
	return k, ok
}

// Len is the number of names.
func (n *Names) Len() int { return len(n.kinds) }

// Add adds name of kind k, or reports why it cannot: a *NameError. A name
// already added with kind k is not an error (added is false).
func (n *Names) Add(k Kind, name string) (added bool, err error) {
	if old, ok := n.kinds[name]; ok {
		if old != k {
			return false, &NameError{Name: name, Kind: k, Existing: old, Err: ErrKindConflict}
		}
		return false, nil
	}
	if !k.Valid() {
		return false, &NameError{Name: name, Kind: k, Err: ErrInvalidKind}
	}
	if err := ValidateName(name); err != nil {
		return false, &NameError{Name: name, Kind: k, Err: ErrInvalidName, Detail: err}
	}
	if n.nodes[name] > 0 {
		// The first name below it, for a message that names one.
		other := ""
		for o := range n.kinds {
			if strings.HasPrefix(o, name+".") && (other == "" || o < other) {
				other = o
			}
		}
		return false, &NameError{Name: name, Kind: k, Other: other, Err: ErrPrefixConflict}
	}
	for i := strings.IndexByte(name, '.'); i >= 0; i = nextDot(name, i) {
		if _, ok := n.kinds[name[:i]]; ok {
			return false, &NameError{Name: name, Kind: k, Other: name[:i], Err: ErrPrefixConflict}
		}
	}
	if n.max > 0 && len(n.kinds) >= n.max {
		return false, &NameError{Name: name, Kind: k, Err: ErrTooManyMetrics}
	}
	n.kinds[name] = k
	for i := strings.IndexByte(name, '.'); i >= 0; i = nextDot(name, i) {
		n.nodes[name[:i]]++
	}
	return true, nil
}

// Remove removes name and reports whether it was there.
func (n *Names) Remove(name string) bool {
	if _, ok := n.kinds[name]; !ok {
		return false
	}
	delete(n.kinds, name)
	for i := strings.IndexByte(name, '.'); i >= 0; i = nextDot(name, i) {
		if n.nodes[name[:i]]--; n.nodes[name[:i]] == 0 {
			delete(n.nodes, name[:i])
		}
	}
	return true
}

func nextDot(name string, i int) int {
	j := strings.IndexByte(name[i+1:], '.')
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

// Under reports whether name is prefix itself or a path below it
// ("tapes" and "tapes.host.x" are under "tapes"; "tapesx" is not): the
// rule for reserved names and plugin prefixes.
func Under(name, prefix string) bool {
	return name == prefix || len(name) > len(prefix) && name[len(prefix)] == '.' && name[:len(prefix)] == prefix
}
