package layout

import (
	"testing"

	"github.com/tapes-go/tapes/wire"
)

// FuzzValidate checks header validation alone: no panic, and anything it
// accepts describes a file no larger than the size it was given.
func FuzzValidate(f *testing.F) {
	g, _ := NewGeometry(2, 16, 4)
	hdr := make([]byte, HeaderSize)
	g.PutHeader(hdr)
	f.Add(hdr, int64(g.FileSize))
	f.Add(hdr, int64(g.FileSize-1))
	f.Add(hdr[:10], int64(10))
	f.Add(make([]byte, HeaderSize), int64(HeaderSize))
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		g, err := ValidateHeader(b, size)
		if err != nil {
			return
		}
		if int64(g.FileSize) > size || g.SlotSize < g.RingOffset+g.RingRecs*wire.RecordSize ||
			g.RingOffset < g.DefOffset+g.MaxDefs*DefSize || g.FileSize != HeaderSize+g.Slots*g.SlotSize+TrailerSize {
			t.Fatalf("accepted an inconsistent geometry %+v for size %d", g, size)
		}
	})
}
