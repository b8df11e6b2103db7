// Reading one worker's ring: committed records handed on in runs, then
// released with the taking index for crash recovery.

package host

import (
	"sync/atomic"

	"github.com/tapes-go/tapes/internal/apply"
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
	off := h.g.SlotOff(i) + h.g.RingOffset
	return ringView{buf: h.m[off : off+h.g.RingRecs*wire.RecordSize], mask: uint64(h.g.RingRecs - 1)}
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

// drainSlot applies the records committed in slot i's ring, at most one
// ring's worth, and releases them in chunks of releaseEvery: for each
// chunk it records how far it consumed in the taking index, zeroes the
// records, and publishes the consumer index. A host killed anywhere in
// between leaves taking > consumer, and the next host skips exactly those
// records (they were applied to the dead host's registry), so records are
// never applied twice by live hosts nor lost by a stalled ring. With
// skipHoles (the worker is gone), records claimed below the reserve index
// but never committed are counted as aborted and passed over.
func (h *Host) drainSlot(i int, hs *hslot, ps *passStats, skipHoles bool, reserve uint64) {
	consP := h.slotU64(i, slotConsumer)
	if atomic.LoadUint64(consP) != hs.consumer {
		ps.malformed++ // someone other than this host wrote the consumer index
	}
	ring := h.ringOf(i)
	// A batch gathers a chunk's records, applied before they are released;
	// it is empty between chunks, so slots drained one after another share
	// one (a batch per slot would cost 4096-slot files 19 MiB).
	b := batchPool.Get().(*apply.Batch)
	defer batchPool.Put(b)
	handle := func(recs []byte) { b.Apply(hs.tab, recs) }
	for left := h.g.RingRecs; left > 0; {
		c := hs.consumer
		// A worker publishes a definition before any record naming it, so
		// definitions loaded after the records were seen cover them all.
		end, holes, blocked := ring.read(c, min(left, releaseEvery), skipHoles, reserve, func(recs []byte) {
			if len(hs.defs) < int(atomic.LoadUint64(h.slotU64(i, slotDefCount))) {
				h.loadDefs(i, hs)
			}
			handle(recs)
		})
		if end == c {
			return
		}
		discarded := b.Discarded() + hs.gaugeBad
		rejected, _ := b.Flush(hs.tab)
		hs.gaugeBad = 0
		ps.aborted += holes
		ps.discarded += discarded
		ps.malformed += int(rejected)
		ps.events += int(end-c) - holes - discarded - int(rejected)
		if testHookBeforeRelease != nil {
			testHookBeforeRelease(i, end-c)
		}
		h.release(i, c, end)
		hs.consumer = end
		left -= int(end - c)
		if blocked {
			return
		}
	}
	ps.more = true // the budget ran out with the last record committed: likely more
}

// releaseEvery is how many records drainSlot applies before it releases
// them (64 KiB of ring, still in cache when it zeroes them): a worker
// writing faster than the host drains sees room appear every 4 Ki records
// rather than once per pass, so fewer events are dropped against workers
// writing flat out (docs/RATIONALE.md has the measurement).
const releaseEvery = 4096

// testHookBeforeRelease lets a test kill a host process between applying
// records and releasing them; slots may be drained concurrently, so the
// hooks are told which slot.
var testHookBeforeRelease, testHookMidRelease func(slot int, records uint64)

// release zeroes records [from, to) and publishes to as the consumer index,
// bracketed by the taking index for crash recovery (see drainSlot).
func (h *Host) release(i int, from, to uint64) {
	atomic.StoreUint64(h.slotU64(i, slotTaking), to)
	if testHookMidRelease != nil {
		testHookMidRelease(i, to-from)
	}
	ring := h.m[h.g.SlotOff(i)+h.g.RingOffset:][:h.g.RingRecs*wire.RecordSize]
	a, b := int(from&uint64(h.g.RingRecs-1)), int(to-from)
	if a+b <= h.g.RingRecs {
		clear(ring[a*wire.RecordSize : (a+b)*wire.RecordSize])
	} else {
		clear(ring[a*wire.RecordSize:])
		clear(ring[:(a+b-h.g.RingRecs)*wire.RecordSize])
	}
	atomic.StoreUint64(h.slotU64(i, slotConsumer), to)
}
