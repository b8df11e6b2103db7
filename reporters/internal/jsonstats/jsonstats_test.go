package jsonstats

import (
	"math"
	"testing"
)

func TestNonFiniteBecomesNull(t *testing.T) {
	tree := map[string]any{
		"a": map[string]any{"value": math.NaN()},
		"b": map[string]any{"value": math.Inf(1), "count": int64(3)},
		"c": map[string]any{"value": 1.5},
	}
	b, err := Marshal(tree)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"a":{"value":null},"b":{"count":3,"value":null},"c":{"value":1.5}}`
	if string(b) != want {
		t.Fatalf("got %s, want %s", b, want)
	}
	if tree["a"].(map[string]any)["value"] == nil {
		t.Fatal("Marshal modified its input")
	}
}
