package tapeshttp

import (
	"bufio"
	"io"
	"net"
	"net/http"
)

// Response is what a wrapped http.ResponseWriter has seen so far.
type Response struct {
	// Status is the final status sent: the first WriteHeader with a code
	// other than 1xx (101 Switching Protocols is final), or 200 at the
	// first Write, ReadFrom or Flush. 0 while nothing was sent.
	Status int
	// Bytes counts the body bytes written (Write and ReadFrom).
	Bytes int64
	// Hijacked is set once Hijack succeeded: the handler owns the
	// connection and no status goes through the ResponseWriter.
	Hijacked bool
}

// snoop is the wrapper's core: the http.ResponseWriter methods, plus
// Unwrap for http.ResponseController. The optional interfaces live on
// separate carrier types (flusher, ...), combined in Wrap only when the
// wrapped writer has them, so that a type assertion on the wrapper answers
// exactly as it would on the original (the approach of
// github.com/felixge/httpsnoop). A wrapper that always had Flush would
// claim to stream on a writer that cannot; one that never had it would
// hide streaming, hijacking and sendfile, as hand-written status writers
// do.
type snoop struct {
	w http.ResponseWriter
	Response
}

func (s *snoop) Header() http.Header { return s.w.Header() }

func (s *snoop) WriteHeader(code int) {
	// net/http treats 1xx other than 101 as informational: more may
	// follow, and the final status comes later.
	if s.Status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		s.Status = code
	}
	s.w.WriteHeader(code)
}

func (s *snoop) implicit200() {
	if s.Status == 0 {
		s.Status = http.StatusOK
	}
}

func (s *snoop) Write(b []byte) (int, error) {
	s.implicit200()
	n, err := s.w.Write(b)
	s.Bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the original writer's other
// methods (SetReadDeadline, EnableFullDuplex, ...).
func (s *snoop) Unwrap() http.ResponseWriter { return s.w }

type flusher struct{ s *snoop }

func (f flusher) Flush() {
	f.s.implicit200()
	f.s.w.(http.Flusher).Flush()
}

type hijacker struct{ s *snoop }

func (h hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := h.s.w.(http.Hijacker).Hijack()
	if err == nil {
		h.s.Hijacked = true
	}
	return c, rw, err
}

type pusher struct{ s *snoop }

func (p pusher) Push(target string, opts *http.PushOptions) error {
	return p.s.w.(http.Pusher).Push(target, opts)
}

type readerFrom struct{ s *snoop }

func (r readerFrom) ReadFrom(src io.Reader) (int64, error) {
	r.s.implicit200()
	n, err := r.s.w.(io.ReaderFrom).ReadFrom(src)
	r.s.Bytes += n
	return n, err
}

// Wrap returns a ResponseWriter that records into the returned Response
// what goes through it, and implements http.Flusher, http.Hijacker,
// http.Pusher and io.ReaderFrom exactly when w does.
func Wrap(w http.ResponseWriter) (http.ResponseWriter, *Response) {
	ww, s := wrap(w)
	return ww, &s.Response
}

// wrap makes the wrapper in one allocation: the carriers point into the
// struct that holds the snoop.
func wrap(w http.ResponseWriter) (http.ResponseWriter, *snoop) {
	const (
		F = 1 << iota
		H
		P
		R
	)
	set := 0
	if _, ok := w.(http.Flusher); ok {
		set |= F
	}
	if _, ok := w.(http.Hijacker); ok {
		set |= H
	}
	if _, ok := w.(http.Pusher); ok {
		set |= P
	}
	if _, ok := w.(io.ReaderFrom); ok {
		set |= R
	}
	switch set {
	case 0:
		x := &snoop{w: w}
		return x, x
	case F:
		x := &struct {
			snoop
			flusher
		}{snoop: snoop{w: w}}
		x.flusher.s = &x.snoop
		return x, &x.snoop
	case H:
		x := &struct {
			snoop
			hijacker
		}{snoop: snoop{w: w}}
		x.hijacker.s = &x.snoop
		return x, &x.snoop
	case F | H:
		x := &struct {
			snoop
			flusher
			hijacker
		}{snoop: snoop{w: w}}
		x.flusher.s = &x.snoop
		x.hijacker.s = &x.snoop
		return x, &x.snoop
	case P:
		x := &struct {
			snoop
			pusher
		}{snoop: snoop{w: w}}
		x.pusher.s = &x.snoop
		return x, &x.snoop
	case F | P:
		x := &struct {
			snoop
			flusher
			pusher
		}{snoop: snoop{w: w}}
		x.flusher.s = &x.snoop
		x.pusher.s = &x.snoop
		return x, &x.snoop
	case H | P:
		x := &struct {
			snoop
			hijacker
			pusher
		}{snoop: snoop{w: w}}
		x.hijacker.s = &x.snoop
		x.pusher.s = &x.snoop
		return x, &x.snoop
	case F | H | P:
		x := &struct {
			snoop
			flusher
			hijacker
			pusher
		}{snoop: snoop{w: w}}
		x.flusher.s = &x.snoop
		x.hijacker.s = &x.snoop
		x.pusher.s = &x.snoop
		return x, &x.snoop
	case R:
		x := &struct {
			snoop
			readerFrom
		}{snoop: snoop{w: w}}
		x.readerFrom.s = &x.snoop
		return x, &x.snoop
	case F | R:
		x := &struct {
			snoop
			flusher
			readerFrom
		}{snoop: snoop{w: w}}
		x.flusher.s = &x.snoop
		x.readerFrom.s = &x.snoop
		return x, &x.snoop
	case H | R:
		x := &struct {
			snoop
			hijacker
			readerFrom
		}{snoop: snoop{w: w}}
		x.hijacker.s = &x.snoop
		x.readerFrom.s = &x.snoop
		return x, &x.snoop
	case F | H | R:
		x := &struct {
			snoop
			flusher
			hijacker
			readerFrom
		}{snoop: snoop{w: w}}
		x.flusher.s = &x.snoop
		x.hijacker.s = &x.snoop
		x.readerFrom.s = &x.snoop
		return x, &x.snoop
	case P | R:
		x := &struct {
			snoop
			pusher
			readerFrom
		}{snoop: snoop{w: w}}
		x.pusher.s = &x.snoop
		x.readerFrom.s = &x.snoop
		return x, &x.snoop
	case F | P | R:
		x := &struct {
			snoop
			flusher
			pusher
			readerFrom
		}{snoop: snoop{w: w}}
		x.flusher.s = &x.snoop
		x.pusher.s = &x.snoop
		x.readerFrom.s = &x.snoop
		return x, &x.snoop
	case H | P | R:
		x := &struct {
			snoop
			hijacker
			pusher
			readerFrom
		}{snoop: snoop{w: w}}
		x.hijacker.s = &x.snoop
		x.pusher.s = &x.snoop
		x.readerFrom.s = &x.snoop
		return x, &x.snoop
	default: // F | H | P | R
		x := &struct {
			snoop
			flusher
			hijacker
			pusher
			readerFrom
		}{snoop: snoop{w: w}}
		x.flusher.s = &x.snoop
		x.hijacker.s = &x.snoop
		x.pusher.s = &x.snoop
		x.readerFrom.s = &x.snoop
		return x, &x.snoop
	}
}
