// Package statsd reports a registry to a StatsD server over UDP, through
// github.com/cactus/go-statsd-client/v5's buffered client (many metrics per
// packet). Run it with the reporters scheduler:
//
//	rep, err := statsd.New("127.0.0.1:8125", reg, statsd.Options{Prefix: "myapp"})
//	s := reporters.Start(ctx, rep, 10*time.Second)
//	...
//	s.StopAndFlush(ctx) // a last report
//	rep.Close()         // sends what is still buffered
//
// Names follow tapes (prefix "myapp." omitted below):
//
//	counter    <name>.total        |c  change since the previous report
//	gauge      <name>.value        |g
//	meter      <name>.total        |c  events since the previous report
//	           <name>.m1_rate, .m5_rate, .m15_rate, .mean_rate  |g  events/s
//	histogram  <name>.total        |c  values recorded since the previous report
//	           <name>.min, .max, .mean, .stddev,
//	           .q50, .q75, .q95, .q98, .q99, .q999             |g
//	timer      <name>              |ms each duration recorded since the
//	                                   previous report, in milliseconds
//	           <name>.m1_rate, .m5_rate, .m15_rate, .mean_rate  |g  events/s
//
// A name whose last segment is already the suffix is not given it twice:
// tapes-host's counter tapes.host.shm.dropped.total goes out as
// tapes.host.shm.dropped.total, a gauge x.value as x.value (the registry
// refuses "x" beside "x.total", so no two metrics can meet that way).
//
// The names stay dotted: a mapping file (package mapping, tapes-host
// -mapping) does not apply here, StatsD has no labels. A statsd_exporter
// receiving this output can apply a mapping file itself: timers arrive
// under their own names, as its observers (in seconds); counters, meters
// and gauges under the names above, with their .total or .value segment,
// which its rules must match (docs/fleet.md, Mapping).
//
// Timers go as StatsD timings, so that StatsD computes its percentiles,
// counts and rates from the durations themselves, like for any timer it
// receives. The registry keeps buckets (0.54% wide), not raw durations: the
// reporter sends, per report, every duration recorded since the previous
// one as the middle of its bucket (the value the registry's own quantiles
// report, within registry.RelativeError of the duration). Beyond
// Options.TimerSamples durations in one report (default 1000), each sample
// stands for w consecutive durations in value order
// (w = ceil(count/TimerSamples)) and carries the sample rate 1/w: StatsD
// counts every duration, its percentiles are those of the durations within
// w/count of rank, and its "sum" and "mean" (which StatsD takes from the
// samples alone, as for any sampled timer) cover only the samples. A timer
// that recorded nothing since the previous report sends nothing.
//
// Histograms (values of any unit) go as counts and gauges as tapes sent
// them: a StatsD timing is in milliseconds, and Etsy's StatsD reads other
// sample types (the "|h" of statsd_exporter and DogStatsD) as counters.
//
// Unlike tapes, which re-sent a counter's cumulative value as an increment
// on every report (so StatsD's sums grew quadratically), a counter sends only
// what changed since the previous report: StatsD then sums exactly to the
// counter's value. A counter that went down sends a negative increment (a
// valid StatsD counter value), keeping the sum right. A change of 0 is not
// sent, except on the first report, so the series exists.
//
// Rates, quantiles and the other window statistics of histograms are
// already aggregated, so they go as gauges: sent as StatsD timings they
// would be re-aggregated into percentiles of percentiles. The window
// statistics of a histogram whose window holds no values are not sent (0
// would read as a measured value of zero). Gauge values that are NaN or
// infinite are not sent: StatsD has no way to say them. A negative gauge is
// sent as 0 and then the value, because StatsD reads a leading '-' as a
// change of the current value.
//
// Errors: UDP sends are fire-and-forget, so a StatsD that is down is only
// noticed when the kernel reports the ICMP rejection of an earlier packet.
// The reporter uses a connected socket, which sees those rejections, counts
// them (SendErrors) and returns them from the next Report, so the scheduler
// logs and counts them. What was sent while StatsD was down is lost, as with
// any StatsD client; counters resume with the changes after the outage.
package statsd

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cactus/go-statsd-client/v5/statsd"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/wire"
)

// Options configures a Reporter. The zero value is ready to use.
type Options struct {
	// Prefix is prepended to every name with a '.'; it follows the
	// registry's name rule.
	Prefix string
	// FlushInterval is the longest a stat waits in the buffer before it is
	// sent; default 100ms.
	FlushInterval time.Duration
	// FlushBytes is the largest packet; default 1432 (safe on most networks).
	FlushBytes int
	// TimerSamples is the most |ms samples one timer sends per report;
	// default 1000. Beyond it each sample stands for several values (see
	// the package doc).
	TimerSamples int
}

// Reporter sends a registry to StatsD. Its Report is safe for concurrent use.
type Reporter struct {
	addr string
	reg  *registry.Registry
	opts Options

	mu     sync.Mutex
	client *statsd.Client
	sender *countingSender
	last   map[string]*sent
	timers map[string]*timerState
	native registry.NativeHistogram // every timer's buckets in turn, memory reused
	gen    uint64
	closed bool
}

// sent is the last cumulative count reported for one metric.
type sent struct {
	count int64
	gen   uint64 // report that last saw the metric, to forget unregistered ones
}

// New returns a Reporter sending r to addr ("host:port"). The socket is
// opened on the first Report, and opened again by later reports if that
// fails (say, while a host name does not resolve).
func New(addr string, r *registry.Registry, opts Options) (*Reporter, error) {
	if r == nil {
		return nil, errors.New("statsd: nil registry")
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("statsd: address %q: %w", addr, err)
	}
	if opts.Prefix != "" {
		if err := wire.ValidateName(opts.Prefix); err != nil {
			return nil, fmt.Errorf("statsd: prefix: %w", err)
		}
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = 100 * time.Millisecond
	}
	if opts.FlushBytes <= 0 {
		opts.FlushBytes = 1432
	}
	if opts.TimerSamples <= 0 {
		opts.TimerSamples = 1000
	}
	return &Reporter{addr: addr, reg: r, opts: opts, last: map[string]*sent{}, timers: map[string]*timerState{}}, nil
}

// countingSender is the base sender under the library's buffered sender:
// a connected UDP socket, so that ICMP rejections come back as errors, which
// the buffered sender would otherwise drop.
type countingSender struct {
	conn    net.Conn
	errors  atomic.Uint64
	pending atomic.Pointer[error] // first error since the last Report
	lost    atomic.Uint64         // failed sends since the last Report
}

func (s *countingSender) Send(b []byte) (int, error) {
	n, err := s.conn.Write(b)
	if err != nil {
		s.errors.Add(1)
		s.lost.Add(1)
		s.pending.CompareAndSwap(nil, &err)
	}
	return n, err
}

func (s *countingSender) Close() error { return s.conn.Close() }

func (r *Reporter) connectLocked() error {
	if r.client != nil {
		return nil
	}
	conn, err := net.Dial("udp", r.addr)
	if err != nil {
		return fmt.Errorf("statsd: %w", err)
	}
	cs := &countingSender{conn: conn}
	buffered, err := statsd.NewBufferedSenderWithSender(cs, r.opts.FlushInterval, r.opts.FlushBytes)
	if err != nil {
		conn.Close()
		return fmt.Errorf("statsd: %w", err)
	}
	client, err := statsd.NewClientWithSender(buffered, r.opts.Prefix, 0)
	if err != nil {
		buffered.Close()
		return fmt.Errorf("statsd: %w", err)
	}
	// The concrete client has GaugeFloat, which the Statter interface lacks.
	r.client, r.sender = client.(*statsd.Client), cs
	return nil
}

// SendErrors returns the number of packets that failed to send so far.
func (r *Reporter) SendErrors() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sender == nil {
		return 0
	}
	return r.sender.errors.Load()
}

// Report sends the current values. It returns an error if the socket cannot
// be opened, or if sends failed since the previous Report (the buffered
// client sends in the background, so a failure shows up one report late).
func (r *Reporter) Report(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errors.New("statsd: reporter closed")
	}
	if err := r.connectLocked(); err != nil {
		return err
	}
	var failed error
	if p := r.sender.pending.Swap(nil); p != nil {
		failed = fmt.Errorf("statsd: %d packets to %s failed since the previous report: %w", r.sender.lost.Swap(0), r.addr, *p)
	}

	r.gen++
	c := r.client
	var errs []error
	add := func(err error) {
		if err != nil && len(errs) < 3 {
			errs = append(errs, err)
		}
	}
	r.reg.Each(func(name string, m registry.Metric) {
		switch m := m.(type) {
		case *registry.Counter:
			add(r.delta(c, name, m.Value()))
		case *registry.Gauge:
			add(gauge(c, suffixed(name, "value"), m.Value()))
		case *registry.Meter:
			s := m.Snapshot()
			add(r.delta(c, name, s.Count))
			add(rates(c, name, s))
		case *registry.Histogram:
			s := m.Snapshot()
			add(r.delta(c, name, int64(s.Count)))
			add(window(c, name, &s))
		case *registry.Timer:
			add(r.timer(c, name, m))
			add(rates(c, name, m.Snapshot().Rates))
		}
	})
	for name, s := range r.last {
		if s.gen != r.gen {
			delete(r.last, name) // unregistered: start from 0 if it comes back
		}
	}
	for name, s := range r.timers {
		if s.gen != r.gen {
			delete(r.timers, name)
		}
	}
	if len(errs) > 0 {
		return errors.Join(append([]error{failed}, errs...)...)
	}
	return failed
}

// delta sends the change of a cumulative count since the previous report.
func (r *Reporter) delta(c *statsd.Client, name string, count int64) error {
	s := r.last[name]
	if s == nil {
		s = &sent{}
		r.last[name] = s
	} else if count == s.count {
		s.gen = r.gen
		return nil
	}
	d := count - s.count
	s.count, s.gen = count, r.gen
	return c.Inc(suffixed(name, "total"), d, 1)
}

// suffixed returns name.suffix, or name if its last segment is already
// suffix: tapes-host's tapes.host.shm.dropped.total goes out as
// ".dropped.total", not ".dropped.total.total". No other metric can have
// that name: the registry refuses a name that is both a metric and the
// path to another ("x" and "x.total").
func suffixed(name, suffix string) string {
	if name == suffix || strings.HasSuffix(name, suffix) && name[len(name)-len(suffix)-1] == '.' {
		return name
	}
	return name + "." + suffix
}

func gauge(c *statsd.Client, name string, v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	if v == 0 {
		v = 0 // -0 would be written "-0", a change of the current value
	}
	if v < 0 {
		if err := c.GaugeFloat(name, 0, 1); err != nil {
			return err
		}
	}
	return c.GaugeFloat(name, v, 1)
}

func rates(c *statsd.Client, name string, s registry.MeterSnapshot) error {
	return errors.Join(
		gauge(c, name+".m1_rate", s.M1),
		gauge(c, name+".m5_rate", s.M5),
		gauge(c, name+".m15_rate", s.M15),
		gauge(c, name+".mean_rate", s.MeanRate),
	)
}

func window(c *statsd.Client, name string, s *registry.HistogramSnapshot) error {
	if s.WindowCount == 0 {
		return nil
	}
	err := errors.Join(
		gauge(c, name+".min", s.Min),
		gauge(c, name+".max", s.Max),
		gauge(c, name+".mean", s.Mean),
		gauge(c, name+".stddev", s.Stddev),
	)
	for i, k := range registry.QuantileKeys {
		if e := gauge(c, name+"."+k, s.Quantiles[i]); e != nil && err == nil {
			err = e
		}
	}
	return err
}

// Close sends what is still buffered and closes the socket. Reports after
// Close fail.
func (r *Reporter) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.client == nil {
		return nil
	}
	err := r.client.Close()
	r.client = nil
	return err
}
