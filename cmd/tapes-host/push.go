package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tapes-go/tapes/reporters/mapping"
	"github.com/tapes-go/tapes/reporters/otlp"
	"github.com/tapes-go/tapes/reporters/remotewrite"
)

// pushFlags are the settings of the remote write and OTLP pushers. They
// report every -interval (reloaded on SIGHUP like the other push
// reporters); the rest needs a restart.
type pushFlags struct {
	remoteWriteURL string
	otlpURL        string
	timeout        time.Duration
	queue          int
	attempts       int
	classic        bool
	labels         labelList
	service        string
}

// labelList is the repeatable -push-label name=value.
type labelList []mapping.Label

func (l *labelList) String() string {
	var s []string
	for _, x := range *l {
		s = append(s, x.Name+"="+x.Value)
	}
	return strings.Join(s, ",")
}

func (l *labelList) Set(v string) error {
	name, value, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("%q: want name=value", v)
	}
	if err := remotewrite.CheckLabels([]mapping.Label{{Name: name}}); err != nil {
		return err
	}
	for i, x := range *l {
		if x.Name == name {
			(*l)[i].Value = value
			return nil
		}
	}
	*l = append(*l, mapping.Label{Name: name, Value: value})
	return nil
}

func addPushFlags(fs *flag.FlagSet, p *pushFlags) {
	fs.StringVar(&p.remoteWriteURL, "remote-write-url", "", "push every -interval to this Prometheus remote write endpoint (e.g. http://prom:9090/api/v1/write; Prometheus needs --web.enable-remote-write-receiver and --enable-feature=native-histograms); empty disables")
	fs.StringVar(&p.otlpURL, "otlp-url", "", "push every -interval to this OTLP/HTTP metrics endpoint (e.g. http://collector:4318/v1/metrics); empty disables")
	fs.DurationVar(&p.timeout, "push-timeout", remotewrite.DefaultTimeout, "deadline of one remote write or OTLP request; a receiver that does not answer costs the pusher this long per attempt and nothing else")
	fs.IntVar(&p.queue, "push-queue", remotewrite.DefaultQueue, "requests each pusher holds while its receiver is slow or down; beyond it the oldest is dropped (counted)")
	fs.IntVar(&p.attempts, "push-attempts", remotewrite.DefaultMaxAttempts, "tries of one request (5xx, 429, network errors; backoff 250ms doubling to 30s with jitter, Retry-After honoured) before it is given up; other 4xx are not retried")
	fs.BoolVar(&p.classic, "remote-write-classic", false, "also write classic _bucket/_sum/_count series of histograms and timers (for receivers without native histograms)")
	fs.Var(&p.labels, "push-label", "name=value added to every pushed series (remote write, where the series has no such label) and resource (OTLP); repeatable; default instance=<hostname>:<-http port>")
	fs.StringVar(&p.service, "otlp-service-name", "tapes-host", "the OTLP service.name resource attribute")
}

func (p *pushFlags) validate() error {
	for _, u := range []struct{ flag, v string }{{"-remote-write-url", p.remoteWriteURL}, {"-otlp-url", p.otlpURL}} {
		if u.v == "" {
			continue
		}
		pu, err := url.Parse(u.v)
		if err != nil {
			return fmt.Errorf("%s %q: %w", u.flag, u.v, errors.Unwrap(err))
		}
		if pu.Scheme != "http" && pu.Scheme != "https" || pu.Host == "" {
			return fmt.Errorf("%s %q: want an http:// or https:// URL with a host", u.flag, u.v)
		}
	}
	switch {
	case p.timeout <= 0:
		return fmt.Errorf("-push-timeout %v: must be positive", p.timeout)
	case p.queue < 1:
		return fmt.Errorf("-push-queue %d: must be at least 1", p.queue)
	case p.attempts < 1:
		return fmt.Errorf("-push-attempts %d: must be at least 1", p.attempts)
	case p.service == "":
		return errors.New("-otlp-service-name: must not be empty")
	}
	return nil
}

// pushInstance is the default instance label: what a Prometheus scraping
// this host would call it (host:port of -http), so that pushed and scraped
// series of one host agree and hosts of a fleet differ.
func (h *host) pushInstance() string {
	name, err := os.Hostname()
	if err != nil || name == "" {
		name = "localhost"
	}
	if _, port, err := net.SplitHostPort(h.httpAddr); err == nil {
		return name + ":" + port // the port bound, also for -http :0
	}
	return name
}

// remotePush holds the running remote write and OTLP reporters, so that
// a reload can replace them and shutdown closes whichever run last.
type remotePush struct {
	mu     sync.Mutex
	rw     *remotewrite.Reporter
	ot     *otlp.Reporter
	gauges map[string]bool // the queued gauges registered
}

// take returns the running reporters as one closer and forgets them.
func (rp *remotePush) take() pushClosers {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	var pc pushClosers
	if rp.rw != nil {
		pc = append(pc, rp.rw)
	}
	if rp.ot != nil {
		pc = append(pc, rp.ot)
	}
	rp.rw, rp.ot = nil, nil
	return pc
}

// Close flushes and stops the running reporters (after their last report).
func (rp *remotePush) Close() error { return rp.take().Close() }

// queued reads a pusher's queue length; 0 while none runs.
func (rp *remotePush) queued(name string) float64 {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	switch {
	case name == "remote_write" && rp.rw != nil:
		return float64(rp.rw.Stats().Queued)
	case name == "otlp" && rp.ot != nil:
		return float64(rp.ot.Stats().Queued)
	}
	return 0
}

// startRemotePush starts the remote write and OTLP reporters the flags
// ask for, each on the push schedule, with self-metrics under
// tapes.host.push.<name>: sent, failed, retries, dropped (counters) and
// queued (a gauge).
func (h *host) startRemotePush(ctx context.Context) error {
	p := &h.cfg.push
	if p.remoteWriteURL == "" && p.otlpURL == "" {
		return nil
	}
	if h.remote == nil {
		h.remote = &remotePush{gauges: map[string]bool{}}
		h.closers = append(h.closers, h.remote)
	}
	rp := h.remote
	labels := labelList{{Name: "instance", Value: h.pushInstance()}}
	for _, l := range p.labels {
		if l.Name == "instance" {
			labels[0] = l
		} else {
			labels = append(labels, l)
		}
	}
	po := func(name string) remotewrite.PushOptions {
		pre := selfPrefix + ".push." + name + "."
		if !rp.gauges[name] {
			rp.gauges[name] = true
			h.reg.Gauge(pre+"queued", func() float64 { return rp.queued(name) })
		}
		return remotewrite.PushOptions{Name: name, Timeout: p.timeout, Queue: p.queue, MaxAttempts: p.attempts, Logger: h.log,
			Metrics: remotewrite.PushMetrics{Sent: h.reg.Counter(pre + "sent"), Failed: h.reg.Counter(pre + "failed"),
				Retries: h.reg.Counter(pre + "retries"), Dropped: h.reg.Counter(pre + "dropped")}}
	}
	// Shutdown waits this long for queued requests; both pushers at once.
	closeWait := min(p.timeout, 5*time.Second)
	if p.remoteWriteURL != "" {
		rep, err := remotewrite.New(h.reg, remotewrite.Options{URL: p.remoteWriteURL, Namespace: h.cfg.namespace,
			Mapper: h.cfg.mapper, CountersMonotonic: h.cfg.prom.counters == "counter", Rates: h.cfg.prom.rates,
			ClassicBuckets: p.classic, Labels: labels, Push: po("remote_write"), CloseTimeout: closeWait,
			OnSkip: h.onPushSkip("remote_write")})
		if err != nil {
			return err
		}
		rp.mu.Lock()
		rp.rw = rep
		rp.mu.Unlock()
		h.startPushReporter(ctx, rep, "remote_write")
	}
	if p.otlpURL != "" {
		res := make([]mapping.Label, 0, len(labels))
		for _, l := range labels {
			if l.Name == "instance" {
				l.Name = "service.instance.id" // what the Collector turns into instance
			}
			res = append(res, l)
		}
		rep, err := otlp.New(h.reg, otlp.Options{URL: p.otlpURL, Namespace: h.cfg.namespace, ServiceName: p.service,
			Mapper: h.cfg.mapper, CountersMonotonic: h.cfg.prom.counters == "counter", Rates: h.cfg.prom.rates,
			Resource: res, Push: po("otlp"), CloseTimeout: closeWait, OnSkip: h.onPushSkip("otlp")})
		if err != nil {
			return err
		}
		rp.mu.Lock()
		rp.ot = rep
		rp.mu.Unlock()
		h.startPushReporter(ctx, rep, "otlp")
	}
	return nil
}

// pushSettings are the reloadable settings that restart the pushers.
var pushSettings = map[string]bool{"remote-write-url": true, "otlp-url": true, "push-timeout": true,
	"push-queue": true, "push-attempts": true, "remote-write-classic": true, "push-label": true,
	"otlp-service-name": true}

// reloadPush replaces the remote write and OTLP reporters with ones for
// p (validated with the rest of the configuration). The old ones stop
// reporting now and send what they queued in the background, within
// their close bound; the new ones report at once.
func (h *host) reloadPush(p pushFlags) {
	kept := h.push[:0]
	keptReps := h.pushReps[:0]
	for i, s := range h.push {
		if n := h.pushReps[i].name; n == "remote_write" || n == "otlp" {
			s.Stop()
			continue
		}
		kept, keptReps = append(kept, s), append(keptReps, h.pushReps[i])
	}
	h.push, h.pushReps = kept, keptReps
	if h.remote != nil {
		old := h.remote.take()
		go old.Close()
	}
	h.cfg.push = p
	ctx := h.pushCtx
	if ctx == nil {
		ctx = context.Background()
	}
	if err := h.startRemotePush(ctx); err != nil {
		h.log.Error("SIGHUP: pushers not restarted", "err", err)
		return
	}
	h.log.Info("SIGHUP: pushers restarted", "remote_write", p.remoteWriteURL, "otlp", p.otlpURL)
}

// onPushSkip logs a metric a pusher leaves out, once per name: it is
// left out of every report alike.
func (h *host) onPushSkip(pusher string) func(name string, err error) {
	var mu sync.Mutex
	seen := map[string]bool{}
	return func(name string, err error) {
		mu.Lock()
		first := !seen[name]
		seen[name] = true
		mu.Unlock()
		if first {
			h.log.Warn("metric left out of push", "pusher", pusher, "metric", name, "err", err)
		}
	}
}

// pushClosers flush every pusher at once at shutdown, so that two dead
// receivers delay it by one close timeout, not two.
type pushClosers []interface{ Close() error }

func (pc pushClosers) Close() error {
	errs := make([]error, len(pc))
	var wg sync.WaitGroup
	for i, c := range pc {
		wg.Go(func() { errs[i] = c.Close() })
	}
	wg.Wait()
	return errors.Join(errs...)
}
