package shm

import (
	"sync/atomic"

	"github.com/tapes-go/tapes/wire"
)

// ringView is one worker's ring as the host reads it: ringRecs records of
// wire.RecordSize bytes, index i at (i & mask). It finds what the worker
// committed and hands it on; what is done with the records is the
// handler's (Agrona's RingBuffer.read(handler, limit) split the same way).
type ringView struct {
	buf  []byte
	mask uint64
}

func (h *Host) ringOf(i int) ringView {
	off := h.g.slotOff(i) + h.g.ringOffset
	return ringView{buf: h.m[off : off+h.g.ringRecs*wire.RecordSize], mask: uint64(h.g.ringRecs - 1)}
}

// read hands the records committed from index from on, at most limit of
// them, to handle in runs of contiguous bytes (a run ends at the end of the
// ring or at a record not committed), and returns the index after the last
// record read and whether it stopped at a record not yet committed
// (blocked). A record is committed once its first word is not 0 (the
// worker's release store of it, wire.Word0); its value word is read after
// that load. With skipHoles (the worker is gone), records below reserve
// that were claimed but never committed are passed over and counted in
// holes instead of ending the read.
func (r ringView) read(from uint64, limit int, skipHoles bool, reserve uint64, handle func(recs []byte)) (end uint64, holes int, blocked bool) {
	end = from
	start := from // first record of the run being gathered
	flush := func() {
		if end > start {
			a := int(start&r.mask) * wire.RecordSize
			handle(r.buf[a : a+int(end-start)*wire.RecordSize])
		}
	}
	for k := 0; k < limit; k++ {
		p := u64(r.buf, int(end&r.mask)*wire.RecordSize)
		if atomic.LoadUint64(p) == 0 { // not committed (yet)
			if !skipHoles || end >= reserve {
				blocked = true
				break
			}
			flush()
			holes++
			end++
			start = end
			continue
		}
		end++
		if end&r.mask == 0 { // the run reaches the end of the ring
			flush()
			start = end
		}
	}
	flush()
	return end, holes, blocked
}
