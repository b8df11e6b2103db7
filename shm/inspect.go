package shm

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"runtime/debug"
	"text/tabwriter"

	"github.com/tapes-go/tapes/shm/internal/sys"
	"github.com/tapes-go/tapes/wire"
)

// Report describes a shm file without draining it; see Inspect.
type Report struct {
	Path        string
	Version     uint32
	Slots       int
	RingRecords int
	MaxMetrics  int
	FileSize    int
	// Locked reports whether a host holds the file's flock.
	Locked bool
	// Refused counts the workers that gave up with ErrNoSlot.
	Refused uint64
	Workers []SlotReport // the slots that are not free
}

// SlotReport is one non-free slot.
type SlotReport struct {
	Slot       int
	State      string // "active", "closed", "reclaiming" or "invalid(N)"
	PID        uint32
	StartTime  uint64 // clock ticks since boot (/proc/<pid>/stat field 22)
	Alive      bool   // the process with that pid and start time still runs
	Generation uint32
	Reserved   uint64 // records claimed by the worker
	Consumed   uint64 // records drained by the host
	Pending    uint64 // Reserved - Consumed, capped at the ring size
	Dropped    uint64
	Metrics    []MetricDef
	Error      string // a problem found in this slot, if any
}

// MetricDef is one entry of a worker's definition table.
type MetricDef struct {
	ID    uint32
	Kind  wire.Kind
	Mode  GaugeMode // gauges only
	Name  string
	Value float64 // gauges only: the last value the worker set
	Set   bool    // gauges only: whether Value was ever set
}

// Inspect reads the shm file at path (read-only, without taking its lock)
// and reports its geometry and every non-free slot. A corrupt or truncated
// file gives an error, never a panic.
func Inspect(path string) (rep *Report, err error) {
	f, fi, err := sys.OpenFile(path, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	hdr := make([]byte, HeaderSize)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return nil, fmt.Errorf("%w: %s: reading header: %v", ErrTruncated, path, err)
	}
	g, err := validateHeader(hdr, fi.Size)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	m, err := sys.MapFile(f, g.FileSize, false)
	if err != nil {
		return nil, err
	}
	defer m.Unmap()
	rep = &Report{Path: path, Version: Version, Slots: g.Slots, RingRecords: g.RingRecs, MaxMetrics: g.MaxDefs, FileSize: g.FileSize,
		Refused: binary.LittleEndian.Uint64(hdr[hdrRefused:])}
	rep.Locked = sys.ProbeLock(f)
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if p := recover(); p != nil {
			rep, err = nil, fmt.Errorf("%w: fault reading %s (truncated while inspected?): %v", ErrTruncated, path, p)
		}
	}()
	le := binary.LittleEndian
	for i := 0; i < g.Slots; i++ {
		b := m[g.SlotOff(i):][:g.SlotSize]
		pid, gen, st := unpackState(le.Uint64(b[slotState:]))
		if st == StateFree {
			continue
		}
		s := SlotReport{Slot: i, PID: pid, Generation: gen, StartTime: le.Uint64(b[slotStart:]),
			Reserved: le.Uint64(b[slotReserve:]), Consumed: le.Uint64(b[slotConsumer:]), Dropped: le.Uint64(b[slotDropped:])}
		switch st {
		case StateActive:
			s.State = "active"
		case StateClosed:
			s.State = "closed"
		case StateReclaiming:
			s.State = "reclaiming"
		case StateClaiming:
			s.State = "claiming"
		default:
			s.State = fmt.Sprintf("invalid(%d)", st)
		}
		if start, ok, err := sys.ProcStart(int(pid)); err == nil {
			s.Alive = ok && (s.StartTime == 0 || start == s.StartTime)
		}
		if s.Reserved >= s.Consumed {
			s.Pending = min(s.Reserved-s.Consumed, uint64(g.RingRecs))
		} else {
			s.Error = "reserve index is behind the consumer index"
		}
		n := le.Uint64(b[slotDefCount:])
		if n > uint64(g.MaxDefs) {
			s.Error = fmt.Sprintf("definition count %d exceeds the table (%d)", n, g.MaxDefs)
			n = uint64(g.MaxDefs)
		}
		for id := 0; id < int(n); id++ {
			e := b[g.DefOffset+id*DefSize:][:DefSize]
			nl := int(e[defNameLen])
			d := MetricDef{ID: uint32(id), Kind: wire.Kind(e[defKind]), Name: string(e[defName : defName+nl])}
			if d.Kind == wire.KindGauge {
				d.Mode = GaugeMode(e[defMode])
				d.Set = le.Uint32(e[defGaugeSet:]) != 0
				d.Value = math.Float64frombits(le.Uint64(e[defGaugeVal:]))
			}
			s.Metrics = append(s.Metrics, d)
		}
		rep.Workers = append(rep.Workers, s)
	}
	return rep, nil
}

// WriteText writes the report for people: the geometry, then one block per
// non-free slot.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "file\t%s\n", r.Path)
	fmt.Fprintf(tw, "version\t%d\n", r.Version)
	fmt.Fprintf(tw, "slots\t%d (%d in use, %d workers refused)\n", r.Slots, len(r.Workers), r.Refused)
	fmt.Fprintf(tw, "ring\t%d records of %d bytes\n", r.RingRecords, wire.RecordSize)
	fmt.Fprintf(tw, "metrics per worker\t%d\n", r.MaxMetrics)
	fmt.Fprintf(tw, "size\t%d bytes\n", r.FileSize)
	fmt.Fprintf(tw, "host attached\t%v\n", r.Locked)
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range r.Workers {
		fmt.Fprintf(w, "\nslot %d: %s pid %d (start %d, alive %v) generation %d\n", s.Slot, s.State, s.PID, s.StartTime, s.Alive, s.Generation)
		fmt.Fprintf(w, "  ring: %d claimed, %d drained, %d pending, %d dropped\n", s.Reserved, s.Consumed, s.Pending, s.Dropped)
		if s.Error != "" {
			fmt.Fprintf(w, "  error: %s\n", s.Error)
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, d := range s.Metrics {
			switch {
			case d.Kind == wire.KindGauge && d.Set:
				fmt.Fprintf(tw, "  %d\t%v\t%s\t%v = %g\n", d.ID, d.Kind, d.Name, d.Mode, d.Value)
			case d.Kind == wire.KindGauge:
				fmt.Fprintf(tw, "  %d\t%v\t%s\t%v\n", d.ID, d.Kind, d.Name, d.Mode)
			default:
				fmt.Fprintf(tw, "  %d\t%v\t%s\t\n", d.ID, d.Kind, d.Name)
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}
