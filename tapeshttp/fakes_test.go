package tapeshttp

import (
	"bufio"
	"io"
	"net"
	"net/http"
)

// fakeBase is an http.ResponseWriter that records what reached it; the
// carriers add the optional interfaces, combined like the wrapper's.
type fakeBase struct {
	header    http.Header
	codes     []int
	body      []byte
	flushes   int
	hijacks   int
	pushes    []string
	readFroms int
}

func (b *fakeBase) Header() http.Header         { return b.header }
func (b *fakeBase) WriteHeader(code int)        { b.codes = append(b.codes, code) }
func (b *fakeBase) Write(p []byte) (int, error) { b.body = append(b.body, p...); return len(p), nil }

type fFlusher struct{ b *fakeBase }

func (f fFlusher) Flush() { f.b.flushes++ }

type fHijacker struct{ b *fakeBase }

func (f fHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	f.b.hijacks++
	c1, c2 := net.Pipe()
	c2.Close()
	return c1, nil, nil
}

type fPusher struct{ b *fakeBase }

func (f fPusher) Push(target string, _ *http.PushOptions) error {
	f.b.pushes = append(f.b.pushes, target)
	return nil
}

type fReaderFrom struct{ b *fakeBase }

func (f fReaderFrom) ReadFrom(r io.Reader) (int64, error) {
	f.b.readFroms++
	p, err := io.ReadAll(r)
	f.b.body = append(f.b.body, p...)
	return int64(len(p)), err
}

// fakeWriter returns a writer with the optional interfaces in set (bit 0
// Flusher, 1 Hijacker, 2 Pusher, 3 ReaderFrom).
func fakeWriter(set int) (http.ResponseWriter, *fakeBase) {
	b := &fakeBase{header: http.Header{}}
	return fakeCombo(set, b), b
}

func fakeCombo(set int, b *fakeBase) http.ResponseWriter {
	switch set {
	case 0:
		return b
	case 1:
		return struct {
			*fakeBase
			fFlusher
		}{b, fFlusher{b}}
	case 2:
		return struct {
			*fakeBase
			fHijacker
		}{b, fHijacker{b}}
	case 3:
		return struct {
			*fakeBase
			fFlusher
			fHijacker
		}{b, fFlusher{b}, fHijacker{b}}
	case 4:
		return struct {
			*fakeBase
			fPusher
		}{b, fPusher{b}}
	case 5:
		return struct {
			*fakeBase
			fFlusher
			fPusher
		}{b, fFlusher{b}, fPusher{b}}
	case 6:
		return struct {
			*fakeBase
			fHijacker
			fPusher
		}{b, fHijacker{b}, fPusher{b}}
	case 7:
		return struct {
			*fakeBase
			fFlusher
			fHijacker
			fPusher
		}{b, fFlusher{b}, fHijacker{b}, fPusher{b}}
	case 8:
		return struct {
			*fakeBase
			fReaderFrom
		}{b, fReaderFrom{b}}
	case 9:
		return struct {
			*fakeBase
			fFlusher
			fReaderFrom
		}{b, fFlusher{b}, fReaderFrom{b}}
	case 10:
		return struct {
			*fakeBase
			fHijacker
			fReaderFrom
		}{b, fHijacker{b}, fReaderFrom{b}}
	case 11:
		return struct {
			*fakeBase
			fFlusher
			fHijacker
			fReaderFrom
		}{b, fFlusher{b}, fHijacker{b}, fReaderFrom{b}}
	case 12:
		return struct {
			*fakeBase
			fPusher
			fReaderFrom
		}{b, fPusher{b}, fReaderFrom{b}}
	case 13:
		return struct {
			*fakeBase
			fFlusher
			fPusher
			fReaderFrom
		}{b, fFlusher{b}, fPusher{b}, fReaderFrom{b}}
	case 14:
		return struct {
			*fakeBase
			fHijacker
			fPusher
			fReaderFrom
		}{b, fHijacker{b}, fPusher{b}, fReaderFrom{b}}
	case 15:
		return struct {
			*fakeBase
			fFlusher
			fHijacker
			fPusher
			fReaderFrom
		}{b, fFlusher{b}, fHijacker{b}, fPusher{b}, fReaderFrom{b}}
	}
	panic("set out of range")
}
