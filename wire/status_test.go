package wire

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"testing"
)

// docs/guest-abi.md's status table is the ABI's reference: every row must
// name a code defined here, with its value, and every code must have a row.
func TestStatusTableMatchesDoc(t *testing.T) {
	doc, err := os.ReadFile("../docs/guest-abi.md")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]Status{
		"StatusOK": StatusOK, "StatusMemory": StatusMemory, "StatusInvalidName": StatusInvalidName,
		"StatusInvalidKind": StatusInvalidKind, "StatusKindConflict": StatusKindConflict,
		"StatusPrefixConflict": StatusPrefixConflict, "StatusTooManyMetrics": StatusTooManyMetrics,
		"StatusUnknownID": StatusUnknownID, "StatusWrongKind": StatusWrongKind,
		"StatusBadRecord": StatusBadRecord, "StatusBadValue": StatusBadValue,
	}
	rows := regexp.MustCompile("(?m)^\\| (-?\\d+) \\| `wire\\.(Status\\w+)` \\|").FindAllSubmatch(doc, -1)
	if len(rows) != len(names) {
		t.Fatalf("docs/guest-abi.md has %d status rows naming wire.Status*, want %d", len(rows), len(names))
	}
	for _, r := range rows {
		code, _ := strconv.Atoi(string(r[1]))
		s, ok := names[string(r[2])]
		if !ok || int(s) != code {
			t.Errorf("doc row %s = %d; wire has %d (defined: %v)", r[2], code, s, ok)
		}
		delete(names, string(r[2]))
	}
	if len(names) != 0 {
		t.Errorf("codes without a doc row: %v", names)
	}
}

func TestStatusText(t *testing.T) {
	for _, c := range []struct {
		s   Status
		str string
		err string
	}{
		{StatusTooManyMetrics, "metric limit reached", "tapes host: metric limit reached"},
		{StatusBadValue, "invalid value", "tapes host: invalid value"},
		{-99, "status -99", "tapes host: status -99"},
		{3, "result 3", "tapes host: result 3"},
	} {
		if got := c.s.String(); got != c.str {
			t.Errorf("Status(%d).String() = %q, want %q", int32(c.s), got, c.str)
		}
		var err error = c.s
		if got := err.Error(); got != c.err {
			t.Errorf("Status(%d).Error() = %q, want %q", int32(c.s), got, c.err)
		}
	}
	// Every defined failure code has its own text.
	seen := map[string]bool{}
	for s := StatusOK; s >= StatusBadValue; s-- {
		txt := s.String()
		if txt == fmt.Sprintf("status %d", int32(s)) || seen[txt] {
			t.Errorf("Status(%d) has text %q", int32(s), txt)
		}
		seen[txt] = true
	}
}
