package shm_test

import (
	"github.com/tapes-go/tapes"
	"github.com/tapes-go/tapes/shm"
)

// The client implements the root package's Recorder (wire's, aliased), so
// code written against it runs unchanged in a worker; package shm itself
// does not import the root package (TestWorkerImportsNoRegistry).
var (
	_ tapes.Recorder        = (*shm.Client)(nil)
	_ tapes.CounterHandle   = (*shm.Counter)(nil)
	_ tapes.GaugeHandle     = (*shm.Gauge)(nil)
	_ tapes.MeterHandle     = (*shm.Meter)(nil)
	_ tapes.TimerHandle     = (*shm.Timer)(nil)
	_ tapes.HistogramHandle = (*shm.Histogram)(nil)
)
