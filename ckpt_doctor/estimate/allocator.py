"""How much device memory a sequence of allocations and frees reserves: a model of PyTorch's CUDA caching allocator.

``torch.cuda.max_memory_reserved`` (and so ``nvidia-smi`` and the out-of-memory decision) follows the segments the
allocator asked CUDA for, not the bytes the tensors hold.  What it reserves beyond them depends on the order of the
allocations, their sizes and the allocator's rules, which this module replays (pytorch/pytorch
``c10/cuda/CUDACachingAllocator.cpp``, read at 001074d2; the rules are unchanged since torch 2.1):

- sizes are rounded up to 512 bytes (``kMinBlockSize``, ``round_size``);
- requests of at most 1 MiB come from the small pool, which gets 2 MiB segments (``kSmallBuffer``); larger ones from
  the large pool: a request under 10 MiB gets a 20 MiB segment (``kLargeBuffer``), a larger one a segment of its own
  size rounded up to 2 MiB (``get_allocation_size``);
- a request takes the smallest cached free block of its pool that is large enough, the lowest address among equal
  sizes (``get_free_block``, ``BlockComparatorSize``), and only asks CUDA for a new segment when none is;
- the block is split when what remains is more than 1 MiB (large pool) or at least 512 bytes (small pool, and every
  pool under ``expandable_segments``) (``should_split``); a freed block merges with its free neighbours of the same
  segment (``free_block``, ``try_merge_blocks``); segments are never merged and, without ``empty_cache``, never
  returned;
- with ``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`` each pool has one segment that grows by mapping pages
  (20 MiB for the large pool, 2 MiB for the small one) at its end; a request that no free block fits extends the free
  block at the end of the segment, and best fit avoids that block while another fits (``find_expandable_block``,
  ``try_allocate_expandable_block``, ``get_free_block``'s ``expandable_size``).

Not modelled: ``max_split_size_mb``, ``roundup_power2_divisions``, garbage collection, several streams, CUDA graphs
and what CUDA itself keeps (the context; see ``memory.CUDA_CONTEXT_BYTES``).
"""

from __future__ import annotations

from bisect import bisect_left, insort

MiB = 1 << 20
MIN_BLOCK = 512            # kMinBlockSize
SMALL_SIZE = 1 * MiB       # kSmallSize: the largest request of the small pool
SMALL_BUFFER = 2 * MiB     # kSmallBuffer: a small-pool segment; the page of an expandable small pool
LARGE_BUFFER = 20 * MiB    # kLargeBuffer: the segment of a 1-10 MiB request; the page of an expandable large pool
MIN_LARGE_ALLOC = 10 * MiB  # kMinLargeAlloc
ROUND_LARGE = 2 * MiB      # kRoundLarge


def round_size(nbytes: int) -> int:
    return MIN_BLOCK if nbytes < MIN_BLOCK else -(-nbytes // MIN_BLOCK) * MIN_BLOCK


def segment_size(size: int) -> int:
    """What ``cudaMalloc`` is asked for when no cached block fits a request of ``size`` (rounded) bytes."""
    if size <= SMALL_SIZE:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return -(-size // ROUND_LARGE) * ROUND_LARGE


class Block:
    __slots__ = ("addr", "free", "mapped", "next", "pool", "prev", "size")

    def __init__(self, pool: _Pool, addr: int, size: int, prev: Block | None = None, next: Block | None = None,
                 mapped: bool = True) -> None:
        self.pool = pool
        self.addr = addr
        self.size = size
        self.prev = prev
        self.next = next
        self.free = True
        self.mapped = mapped


ADDR = 1 << 56  # a free block's key is size * ADDR + address: (size, address) order in one int (addresses < 2**56)


class _Pool:
    """The cached free blocks of one pool, ordered by (size, address) as ``BlockComparatorSize`` orders them."""

    def __init__(self, small: bool) -> None:
        self.small = small
        self.page = SMALL_BUFFER if small else LARGE_BUFFER
        self.keys: list[int] = []
        self.blocks: dict[int, Block] = {}
        self.tail: Block | None = None  # expandable segments: the unmapped rest of the pool's segment

    def insert(self, b: Block) -> None:
        key = b.size * ADDR + b.addr
        insort(self.keys, key)
        self.blocks[key] = b

    def remove(self, b: Block) -> None:
        key = b.size * ADDR + b.addr
        del self.keys[bisect_left(self.keys, key)]
        del self.blocks[key]

    def best_fit(self, size: int) -> Block | None:
        """The smallest free block of at least ``size`` bytes, under expandable segments: the block before the
        unmapped rest counts as large as it could grow, so the next larger block is taken while it could grow less."""
        keys, blocks = self.keys, self.blocks
        i = bisect_left(keys, size * ADDR)
        if i == len(keys):
            return None
        b = blocks[keys[i]]

        def reach(x: Block) -> int:
            return x.size + (x.next.size if x.next is not None and not x.next.mapped else 0)
        j = i + 1
        while j < len(keys) and reach(blocks[keys[j]]) < reach(b):
            b = blocks[keys[j]]
            j += 1
        return b


class CachingAllocator:
    """``malloc`` and ``free`` as the caching allocator answers them; ``reserved`` and its peak, ``allocated`` and
    its peak (block bytes, as ``memory_allocated`` counts them), and ``in_use`` and its peak: the reserved bytes that
    hold an allocated block, which is what the allocator cannot give back when the card is full.  Before it fails, a
    request that no cached block fits makes the allocator free every cached segment no block is allocated in and try
    again (``malloc``: ``release_cached_blocks`` then ``alloc_block``; expandable segments unmap their free pages), so
    a step runs on a card that holds the peak of ``in_use``, although on a larger card it reserves up to
    ``peak_reserved``."""

    ADDRESS_SPACE = 1 << 50  # an expandable segment's virtual size: never the limit here

    def __init__(self, expandable_segments: bool = False) -> None:
        self.expandable = expandable_segments
        self.small = _Pool(small=True)
        self.large = _Pool(small=False)
        self.reserved = self.peak_reserved = 0
        self.allocated = self.peak_allocated = 0
        self.in_use = self.peak_in_use = 0
        self._next_addr = 0

    def malloc(self, nbytes: int) -> Block:
        size = MIN_BLOCK if nbytes < MIN_BLOCK else -(-nbytes // MIN_BLOCK) * MIN_BLOCK
        small = size <= SMALL_SIZE
        pool = self.small if small else self.large
        keys = pool.keys
        i = bisect_left(keys, size * ADDR)
        expandable = self.expandable
        if i < len(keys):
            if expandable:
                b = pool.best_fit(size)
                pool.remove(b)
            else:
                b = pool.blocks.pop(keys.pop(i))
                if b.prev is None and b.next is None:  # a whole cached segment: in use again
                    self.in_use += b.size
        else:
            b = self._grow(pool, size) if expandable else self._segment(pool, size)
            if not expandable:
                self.in_use += b.size
        remaining = b.size - size
        if remaining >= MIN_BLOCK if (small or expandable) else remaining > SMALL_SIZE:
            nxt = b.next
            rest = Block(pool, b.addr + size, remaining, b, nxt)
            if nxt is not None:
                nxt.prev = rest
            b.next = rest
            b.size = size
            key = remaining * ADDR + rest.addr
            insort(keys, key)
            pool.blocks[key] = rest
        b.free = False
        allocated = self.allocated = self.allocated + b.size
        if allocated > self.peak_allocated:
            self.peak_allocated = allocated
        if expandable:  # the free pages of an expandable segment can be unmapped: what is in use are the pages
            self.in_use = -(-allocated // LARGE_BUFFER) * LARGE_BUFFER  # allocated blocks touch (about)
        if self.in_use > self.peak_in_use:
            self.peak_in_use = self.in_use
        return b

    def free(self, b: Block) -> None:
        pool = b.pool
        self.allocated -= b.size
        b.free = True
        prev, nxt = b.prev, b.next
        if prev is not None and prev.free and prev.mapped:
            pool.remove(prev)
            b.addr = prev.addr
            b.size += prev.size
            b.prev = prev = prev.prev
            if prev is not None:
                prev.next = b
        if nxt is not None and nxt.free and nxt.mapped:
            pool.remove(nxt)
            b.size += nxt.size
            b.next = nxt = nxt.next
            if nxt is not None:
                nxt.prev = b
        pool.insert(b)
        if self.expandable:
            self.in_use = -(-self.allocated // LARGE_BUFFER) * LARGE_BUFFER
        elif b.prev is None and b.next is None:  # the whole segment is free: it could be given back
            self.in_use -= b.size

    def empty_cache(self) -> None:
        """``torch.cuda.empty_cache()``: whole free segments go back to CUDA (expandable ones: not modelled)."""
        if self.expandable:
            return
        for pool in (self.small, self.large):
            for b in [b for b in pool.blocks.values() if b.prev is None and b.next is None]:
                pool.remove(b)
                self.reserved -= b.size  # (not in use: nothing to take from in_use)

    # -- new memory ---------------------------------------------------------------------------------------------------
    def _segment(self, pool: _Pool, size: int) -> Block:
        seg = segment_size(size)
        b = Block(pool, self._next_addr, seg)
        self._next_addr += seg + ROUND_LARGE  # segments are never adjacent
        self._reserve(seg)
        return b

    def _grow(self, pool: _Pool, size: int) -> Block:
        """Map pages at the end of the pool's expandable segment, merged with the free block before them."""
        if pool.tail is None:
            pool.tail = Block(pool, self._next_addr, self.ADDRESS_SPACE, mapped=False)
            self._next_addr += self.ADDRESS_SPACE
        tail = pool.tail
        before = tail.prev if tail.prev is not None and tail.prev.free else None
        have = before.size if before is not None else 0
        need = -(-(size - have) // pool.page) * pool.page
        self._reserve(need)
        if before is not None:
            pool.remove(before)
            before.size += need
            b = before
        else:
            b = Block(pool, tail.addr, need, prev=tail.prev, next=tail)
            if tail.prev is not None:
                tail.prev.next = b
            tail.prev = b
        tail.addr += need
        tail.size -= need
        return b

    def _reserve(self, nbytes: int) -> None:
        self.reserved += nbytes
        self.peak_reserved = max(self.peak_reserved, self.reserved)
