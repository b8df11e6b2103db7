package wire

import "fmt"

// Status is what a host function of the WebAssembly ABI returns to a
// guest: 0 or a positive result on success, one of the negative codes
// below on failure (docs/guest-abi.md, "Status codes"). The values are part
// of the ABI and never change; hostabi returns them, the Go guest SDK
// returns them as errors, and guest/c/tapes.h spells them TAPES_ERR_*.
type Status int32

const (
	StatusOK Status = 0
	// StatusMemory: a pointer or length reaches outside the guest's memory.
	StatusMemory Status = -1
	// StatusInvalidName: the name (with the plugin's prefix) breaks the
	// name rule of ValidateName, or is longer than MaxNameLen.
	StatusInvalidName Status = -2
	// StatusInvalidKind: the kind is not one of the five kinds.
	StatusInvalidKind Status = -3
	// StatusKindConflict: the name already exists with another kind.
	StatusKindConflict Status = -4
	// StatusPrefixConflict: the name is a path prefix of another metric or
	// the other way round ("a.b" beside "a.b.c").
	StatusPrefixConflict Status = -5
	// StatusTooManyMetrics: the plugin's metric cap or the registry's own
	// limit is reached.
	StatusTooManyMetrics Status = -6
	// StatusUnknownID: no metric has this id in this plugin.
	StatusUnknownID Status = -7
	// StatusWrongKind: the id was defined with another kind than the
	// function or record used.
	StatusWrongKind Status = -8
	// StatusBadRecord: a batch record's kind byte is invalid or its
	// reserved bytes are not zero (Decode failed).
	StatusBadRecord Status = -9
	// StatusBadValue: a timer duration is negative.
	StatusBadValue Status = -10
)

var statusText = [...]string{
	-StatusOK:             "ok",
	-StatusMemory:         "pointer or length outside guest memory",
	-StatusInvalidName:    "invalid metric name",
	-StatusInvalidKind:    "invalid metric kind",
	-StatusKindConflict:   "name already used by a metric of another kind",
	-StatusPrefixConflict: "name conflicts with another metric's path",
	-StatusTooManyMetrics: "metric limit reached",
	-StatusUnknownID:      "unknown metric id",
	-StatusWrongKind:      "metric id has another kind",
	-StatusBadRecord:      "corrupt batch record",
	-StatusBadValue:       "invalid value",
}

// String describes s: the meaning of a status code, "result N" for a
// positive result.
func (s Status) String() string {
	switch {
	case s > 0:
		return fmt.Sprintf("result %d", int32(s))
	case int64(-s) < int64(len(statusText)):
		return statusText[-s]
	}
	return fmt.Sprintf("status %d", int32(s))
}

// Error makes a failure status an error, as the Go guest SDK returns it:
// the host refused what the guest asked.
func (s Status) Error() string { return "tapes host: " + s.String() }
