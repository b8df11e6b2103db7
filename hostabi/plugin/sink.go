package plugin

import (
	"fmt"

	"github.com/tapes-go/tapes/hostabi"
	"github.com/tapes-go/tapes/shm"
	"github.com/tapes-go/tapes/wire"
)

// ClientSink is the Sink that records through c into its slot of a shm
// file. Gauges are defined with shm.GaugeLast, the registry gauge's Set
// semantics; like every value of a worker, the host drops them when the
// client's process ends.
func ClientSink(c *shm.Client) hostabi.Sink { return clientSink{c} }

type clientSink struct{ c *shm.Client }

func (s clientSink) Define(k wire.Kind, name string) (any, error) {
	// Each Get returns a typed pointer, nil on error: return the error
	// alone so that the caller never holds a non-nil interface to nil.
	var m any
	var err error
	switch k {
	case wire.KindCounter:
		m, err = s.c.GetCounter(name)
	case wire.KindMeter:
		m, err = s.c.GetMeter(name)
	case wire.KindTimer:
		m, err = s.c.GetTimer(name)
	case wire.KindHistogram:
		m, err = s.c.GetHistogram(name)
	case wire.KindGauge:
		m, err = s.c.GetGauge(name, shm.GaugeLast, nil)
	default:
		return nil, fmt.Errorf("plugin: ClientSink: kind %v", k)
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}
