// Package jsonstats encodes a registry's stats tree as JSON for the httpjson
// and stream reporters.
package jsonstats

import (
	"encoding/json"
	"errors"
	"math"
)

// Marshal encodes v, a tree of map[string]any with numeric leaves. JSON has
// no NaN or infinity, and encoding/json refuses the whole tree if one gauge
// function returns one; such values are written as null instead, so one bad
// gauge loses only its own value.
func Marshal(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	var unsupported *json.UnsupportedValueError
	if err != nil && errors.As(err, &unsupported) {
		b, err = json.Marshal(finite(v))
	}
	return b, err
}

// finite returns a copy of v with every non-finite float replaced by nil.
func finite(v any) any {
	switch v := v.(type) {
	case map[string]any:
		c := make(map[string]any, len(v))
		for k, x := range v {
			c[k] = finite(x)
		}
		return c
	case []any:
		c := make([]any, len(v))
		for i, x := range v {
			c[i] = finite(x)
		}
		return c
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil
		}
	case float32:
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil
		}
	}
	return v
}
