//! Coroutine stacks: carved out of large shared reservations ("chunks") and pooled, so
//! that spawning a task rarely maps memory and a process can hold far more stacks than
//! `vm.max_map_count` would allow with one mapping per stack.
//!
//! Each stack of the default size is a slot of a chunk: a guard page at its low end, then
//! its usable pages. On Linux 6.13 and later the guard pages are installed with
//! `madvise(MADV_GUARD_INSTALL)`, which needs no mapping of its own, so a whole chunk is one
//! kernel mapping; elsewhere (or if that fails) they are `mprotect(PROT_NONE)`, which
//! splits the mapping as corosensei's `DefaultStack` does. Stacks of other sizes are
//! corosensei `DefaultStack`s, not pooled.
//!
//! Invariants:
//! - A chunk's slots never overlap, and each slot's lowest page is a guard page before the
//!   slot is handed out. A chunk is unmapped only when no `ArenaStack` refers to it.
//! - Every stack in the pool's free list has the current default size and belongs to no
//!   coroutine.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::io;
use std::ptr;
use std::rc::{Rc, Weak};

use corosensei::stack::valgrind::ValgrindStackRegistration;
use corosensei::stack::{DefaultStack, Stack, StackPointer};

/// The default usable size of a task's stack: 128 KiB of address space. Only the pages a
/// task actually touches take memory.
pub const DEFAULT_STACK_SIZE: usize = 128 * 1024;

/// Slots per chunk.
const SLOTS_PER_CHUNK: usize = 64;

/// Free stacks beyond this many have their pages given back to the kernel
/// (`MADV_DONTNEED`) when they return to the pool: the address space stays reserved, the
/// memory does not.
const KEEP_RESIDENT: usize = 1024;

/// `MADV_GUARD_INSTALL` (Linux 6.13): guard pages without a mapping of their own.
#[cfg(target_os = "linux")]
const MADV_GUARD_INSTALL: libc::c_int = 102;

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).unwrap_or(4096)
}

/// One reservation holding `SLOTS_PER_CHUNK` stacks.
struct Chunk {
    /// # Invariant
    /// Start of a live mapping of `len` bytes, owned by this chunk.
    base: *mut u8,
    len: usize,
    slot_len: usize,
    /// Slots handed out at least once (their guard page is installed).
    carved: Cell<usize>,
}

impl Chunk {
    fn new(slot_len: usize) -> io::Result<Rc<Chunk>> {
        let len = slot_len
            .checked_mul(SLOTS_PER_CHUNK)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "stack size too large"))?;
        // SAFETY: an anonymous private mapping with no address hint; checked below.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Rc::new(Chunk {
            base: base.cast(),
            len,
            slot_len,
            carved: Cell::new(0),
        }))
    }

    /// Hands out the next never-used slot, with its guard page installed.
    fn carve(self: &Rc<Chunk>, page: usize) -> io::Result<Option<ArenaStack>> {
        let i = self.carved.get();
        if i == SLOTS_PER_CHUNK {
            return Ok(None);
        }
        // SAFETY: `i < SLOTS_PER_CHUNK`, so the slot lies inside the mapping.
        let lo = unsafe { self.base.add(i * self.slot_len) };
        install_guard(lo, page)?;
        self.carved.set(i + 1);
        Ok(Some(ArenaStack {
            chunk: self.clone(),
            lo: lo as usize,
            // Tells Valgrind (a no-op otherwise) that switching onto this range is a stack
            // switch, so memcheck can check the tasks' stacks.
            _valgrind: ValgrindStackRegistration::new(lo, self.slot_len),
        }))
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: by the invariant, `base`/`len` is our live mapping, and no stack refers
        // to it any more (each holds an `Rc` to the chunk).
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

fn install_guard(lo: *mut u8, page: usize) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `lo..lo + page` lies inside a mapping this module owns and no live stack
        // uses it.
        if unsafe { libc::madvise(lo.cast(), page, MADV_GUARD_INSTALL) } == 0 {
            return Ok(());
        }
    }
    // SAFETY: as above; PROT_NONE makes the page fault on any access.
    if unsafe { libc::mprotect(lo.cast(), page, libc::PROT_NONE) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A stack carved from a chunk.
pub(crate) struct ArenaStack {
    chunk: Rc<Chunk>,
    /// Lowest address of the slot: the guard page.
    lo: usize,
    _valgrind: ValgrindStackRegistration,
}

impl ArenaStack {
    /// Gives the slot's usable pages back to the kernel (they read as zero when touched
    /// again); the guard page stays.
    fn release_memory(&self, page: usize) {
        let usable = (self.lo + page) as *mut libc::c_void;
        // SAFETY: the slot's usable range belongs to this stack, which no coroutine uses
        // (it is on its way into the free list). Guard regions survive MADV_DONTNEED.
        unsafe { libc::madvise(usable, self.chunk.slot_len - page, libc::MADV_DONTNEED) };
    }

    /// The slot's stack depth in use (see [`resident_depth`]).
    fn depth(&self, page: usize) -> usize {
        resident_depth(self.lo + page, self.lo + self.chunk.slot_len, page)
    }
}

/// How deep a stack whose usable pages are `[lo, hi)` (page-aligned, growing down from
/// `hi`) has been used: `hi` minus the lowest page that is resident (`mincore`), 0 if none
/// is or the call fails. Pages stay resident once touched, so this is the deepest any
/// user of the memory went since it was last released; a page swapped out reads as
/// untouched.
pub(crate) fn resident_depth(lo: usize, hi: usize, page: usize) -> usize {
    if hi <= lo {
        return 0;
    }
    let pages = (hi - lo) / page;
    let mut vec = vec![0u8; pages];
    // SAFETY: `[lo, hi)` is page-aligned and lies in a live mapping of this module or of
    // corosensei (callers hold the stack or its chunk); `vec` has one byte per page.
    let r = unsafe { libc::mincore(lo as *mut libc::c_void, hi - lo, vec.as_mut_ptr().cast()) };
    if r != 0 {
        return 0;
    }
    match vec.iter().position(|b| b & 1 != 0) {
        Some(i) => (pages - i) * page,
        None => 0,
    }
}

/// The stack of one task, with its top address kept at hand (corosensei asks for it at
/// every resume).
pub(crate) struct TaskStack {
    base: StackPointer,
    kind: StackKind,
}

enum StackKind {
    /// A pooled slot of the default size.
    Arena(ArenaStack),
    /// A stack of another size, mapped on its own.
    Mapped(DefaultStack),
}

impl TaskStack {
    fn arena(a: ArenaStack) -> TaskStack {
        TaskStack {
            base: StackPointer::new(a.lo + a.chunk.slot_len)
                .expect("a mapping is never at address zero"),
            kind: StackKind::Arena(a),
        }
    }

    fn mapped(d: DefaultStack) -> TaskStack {
        TaskStack {
            base: d.base(),
            kind: StackKind::Mapped(d),
        }
    }
}

// SAFETY: an `Arena` stack's range `[lo, lo + slot_len)` is inside a live mapping kept alive
// by the `Rc<Chunk>`, page-aligned (so 16-byte aligned), with a guard page at `lo` and at
// least one usable page above it (`slot_len >= usable size + page`, usable size >= 16 KiB);
// `base` is `lo + slot_len`, computed when the stack was taken (neither field changes).
// `Mapped` delegates to corosensei's own implementation (`base` is its `base()`).
unsafe impl Stack for TaskStack {
    #[inline]
    fn base(&self) -> StackPointer {
        self.base
    }

    fn limit(&self) -> StackPointer {
        match &self.kind {
            StackKind::Arena(a) => {
                StackPointer::new(a.lo).expect("a mapping is never at address zero")
            }
            StackKind::Mapped(d) => d.limit(),
        }
    }
}

/// The usable size rounded up to whole pages, plus the guard page.
fn slot_len_for(size: usize, page: usize) -> usize {
    size.div_ceil(page) * page + page
}

pub(crate) struct StackPool {
    default_size: usize,
    page: usize,
    free: Vec<ArenaStack>,
    /// The default size rounded up to whole pages, plus the guard page (kept: `give`
    /// compares it at every task's end).
    slot_len: usize,
    /// The chunk new slots are carved from.
    current: Option<Rc<Chunk>>,
    /// Every chunk created at the current default size (for the high-water mark).
    chunks: Vec<Weak<Chunk>>,
    /// The deepest mark of stacks whose memory was released or whose chunk is gone.
    deepest_released: usize,
}

impl StackPool {
    pub(crate) fn new() -> Self {
        let page = page_size();
        StackPool {
            default_size: DEFAULT_STACK_SIZE,
            page,
            free: Vec::new(),
            slot_len: slot_len_for(DEFAULT_STACK_SIZE, page),
            current: None,
            chunks: Vec::new(),
            deepest_released: 0,
        }
    }

    pub(crate) fn default_size(&self) -> usize {
        self.default_size
    }

    pub(crate) fn set_default_size(&mut self, size: usize) {
        if size != self.default_size {
            self.deepest_released = self.high_water();
            self.default_size = size;
            self.slot_len = slot_len_for(size, self.page);
            self.free.clear();
            self.current = None;
            self.chunks.clear();
        }
    }

    fn slot_len(&self) -> usize {
        self.slot_len
    }

    /// A stack of `size` usable bytes: a pooled slot when the size is the default one.
    pub(crate) fn take(&mut self, size: usize) -> io::Result<TaskStack> {
        if size != self.default_size {
            return DefaultStack::new(size).map(TaskStack::mapped);
        }
        if let Some(stack) = self.free.pop() {
            return Ok(TaskStack::arena(stack));
        }
        if let Some(chunk) = &self.current {
            if let Some(stack) = chunk.carve(self.page)? {
                return Ok(TaskStack::arena(stack));
            }
        }
        let chunk = Chunk::new(self.slot_len())?;
        self.chunks.retain(|c| c.strong_count() > 0);
        self.chunks.push(Rc::downgrade(&chunk));
        let stack = chunk.carve(self.page)?.expect("a new chunk has free slots");
        self.current = Some(chunk);
        Ok(TaskStack::arena(stack))
    }

    /// Gives back the stack of a finished coroutine.
    pub(crate) fn give(&mut self, stack: TaskStack) {
        match stack.kind {
            StackKind::Arena(a) if a.chunk.slot_len == self.slot_len() => {
                if self.free.len() >= KEEP_RESIDENT {
                    self.deepest_released = self.deepest_released.max(a.depth(self.page));
                    a.release_memory(self.page);
                }
                self.free.push(a);
            }
            // Of an old default size, or mapped on its own: unmapped now (a chunk once its
            // last stack is gone).
            other => drop(other),
        }
    }

    pub(crate) fn pooled(&self) -> usize {
        self.free.len()
    }

    pub(crate) fn page(&self) -> usize {
        self.page
    }

    /// The deepest stack use of any task that had a pooled stack (of the current default
    /// size), as far as resident pages tell: one `mincore` per chunk of 64 stacks. Stacks
    /// released to the kernel were measured before.
    pub(crate) fn high_water(&self) -> usize {
        let mut deepest = self.deepest_released;
        for chunk in self.chunks.iter().filter_map(Weak::upgrade) {
            let carved = chunk.carved.get();
            let per_slot = chunk.slot_len / self.page;
            let lo = chunk.base as usize;
            let mut vec = vec![0u8; carved * per_slot];
            // SAFETY: `[lo, lo + carved * slot_len)` lies inside the chunk's live mapping
            // (we hold an `Rc` to it) and is page-aligned; `vec` has one byte per page.
            let r = unsafe {
                libc::mincore(
                    lo as *mut libc::c_void,
                    carved * chunk.slot_len,
                    vec.as_mut_ptr().cast(),
                )
            };
            if r != 0 {
                continue;
            }
            for slot in vec.chunks(per_slot) {
                // Page 0 of a slot is its guard page.
                if let Some(i) = slot[1..].iter().position(|b| b & 1 != 0) {
                    deepest = deepest.max((per_slot - 1 - i) * self.page);
                }
            }
        }
        deepest
    }
}
