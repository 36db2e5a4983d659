"""A BPF ring buffer (BPF_MAP_TYPE_RINGBUF) read straight from its memory map, a batch at a time.

Why not libbpf's ring_buffer__poll (bcc's open_ring_buffer): it calls back into Python once per record through
ctypes, which alone caps a Python consumer near 130,000 records/s. Here the consumer walks the record headers in
the shared memory itself, copies the whole span of a batch out with ONE memcpy (the kernel maps the data pages
twice, back to back, so a span that wraps around the end is still contiguous), hands the consumer position back
to the kernel at once (the space is free for the producer while the batch is decoded) and returns the bytes with
each record's (offset, length). bcc still compiles, loads and creates the map; this module only needs its fd.

The kernel's layout (kernel/bpf/ringbuf.c, stable uapi since 5.8), in pages of the map's mmap:
- page 0, read-write: the consumer position (an unsigned long at offset 0), which only user space writes;
- page 1, read-only: the producer position, which the kernel advances when it reserves space;
- from page 2, read-only: the data area of max_entries bytes, mapped twice.
Each record starts on an 8-byte boundary with an 8-byte header: u32 length whose bit 31 (BUSY) says the producer
has reserved but not yet committed it and bit 30 (DISCARD) says it was discarded (skip it), then a u32 page
offset the kernel uses internally. Positions only grow; a position's place in the data area is pos & (size-1).

Memory ordering: the kernel publishes a record by clearing BUSY with a release store after writing the data, and
reads the consumer position with an acquire load. This consumer reads the producer position, then each header,
then the data, in program order, and stores the consumer position after it has copied the data out. On x86-64
(the sensor's only architecture, sensor.syscalls.check_arch) plain loads are acquire and plain aligned stores
are release (TSO), so those program-ordered accesses through memoryview (one aligned 4- or 8-byte access each)
are the orderings libbpf gets from smp_load_acquire/smp_store_release. Another architecture needs real barriers.

Waiting is epoll on the map fd: the kernel reports it readable while the producer is ahead of the consumer (so a
level-triggered wait never misses data already there) and wakes a sleeping consumer when a record is committed
into a buffer the consumer had emptied (the default adaptive notification of bpf_ringbuf_output).
"""

from __future__ import annotations

import mmap
import select
from dataclasses import dataclass

BUSY = 1 << 31
DISCARD = 1 << 30
HDR_BYTES = 8
PAGE = mmap.PAGESIZE


class RingBufferError(Exception):
    """The map cannot be mapped as a BPF ring buffer (wrong fd, size, or permissions)."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Records taken in one go: `data` holds them all (headers included); record i is
    data[offsets[i] : offsets[i] + lengths[i]]. Discarded records are not listed. `consumed` counts the ring
    bytes (headers and padding included) this batch handed back to the producer."""

    data: bytes
    offsets: list[int]
    lengths: list[int]
    consumed: int

    def __len__(self) -> int:
        return len(self.offsets)

    def records(self) -> list[bytes]:
        """Each record as its own bytes object (copies: for callers that keep records, not for the hot path)."""
        d = self.data
        return [d[o : o + n] for o, n in zip(self.offsets, self.lengths, strict=True)]


EMPTY = Batch(b"", [], [], 0)


class RingBuffer:
    """The consumer side of one BPF ring buffer map. Single consumer: not thread-safe."""

    def __init__(self, map_fd: int, size: int) -> None:
        if size < PAGE or size & (size - 1):
            raise RingBufferError(f"a BPF ring buffer is a power of two of pages, not {size} bytes")
        self.size = size
        self._mask = size - 1
        try:
            self._cons_map = mmap.mmap(map_fd, PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
            # the producer page and the data area mapped twice: 2 * size after it
            self._data_map = mmap.mmap(map_fd, PAGE + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=PAGE)
        except (OSError, ValueError) as exc:
            raise RingBufferError(f"cannot map the ring buffer (fd {map_fd}, {size} bytes): {exc}") from None
        self._cons = memoryview(self._cons_map).cast("Q")  # [0]: consumer position
        self._view = memoryview(self._data_map)
        self._prod = self._view[:8].cast("Q")  # [0]: producer position
        self._words = self._view.cast("I")  # record headers, by 4-byte index
        self._epoll = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN)

    def available(self) -> int:
        """Bytes the producer has reserved beyond the consumer (committed or not)."""
        return int(self._prod[0] - self._cons[0])

    def wait(self, timeout_ms: int) -> bool:
        """Waits up to timeout_ms (0: do not wait; negative: forever) until the producer is ahead of the
        consumer; True when it is."""
        if self._prod[0] != self._cons[0]:
            return True
        try:
            return bool(self._epoll.poll(timeout_ms / 1000 if timeout_ms >= 0 else -1, 1))
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
            return False

    def read(self, limit: int) -> Batch:
        """Takes up to `limit` committed records (discarded ones are skipped and not counted), stopping at the
        first one the producer is still writing; hands their space back to the kernel before returning."""
        cons = self._cons[0]
        prod = self._prod[0]
        if prod == cons:
            return EMPTY
        words = self._words
        mask = self._mask
        base = PAGE  # the data area's offset in self._view
        offsets: list[int] = []
        lengths: list[int] = []
        pos = cons
        taken = 0
        while pos < prod and taken < limit:
            hdr = words[(base + (pos & mask)) >> 2]
            if hdr & BUSY:
                break
            n = hdr & ~(BUSY | DISCARD)
            if not hdr & DISCARD:
                offsets.append(pos - cons + HDR_BYTES)
                lengths.append(n)
                taken += 1
            pos += (n + HDR_BYTES + 7) & ~7
        span = pos - cons
        if not span:
            return EMPTY
        start = base + (cons & mask)
        data = self._data_map[start : start + span]  # one copy; contiguous thanks to the double mapping
        self._cons[0] = pos  # after the copy: the producer may overwrite the span from now on
        return Batch(data, offsets, lengths, span)

    def close(self) -> None:
        """Unmaps and stops waiting; the map fd itself belongs to whoever created the map (bcc)."""
        if self._epoll.closed:
            return
        self._epoll.close()
        for view in (self._cons, self._prod, self._words, self._view):
            view.release()
        self._cons_map.close()
        self._data_map.close()
