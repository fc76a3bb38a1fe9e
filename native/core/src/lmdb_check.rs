//! Structural checks of an LMDB data file done with ordinary file reads, never
//! through the memory map. LMDB trusts its file: a truncated `data.mdb` makes it
//! touch the map past the end of the file (SIGBUS), and a page overwritten with
//! junk makes it follow wild offsets (SIGSEGV). Reading the same bytes with
//! `pread` first turns that damage into an `ERR_CORRUPT` the caller can handle.
//!
//! The layout read here is LMDB 0.9's (`MDB_DATA_VERSION` 1, 64-bit `pgno_t`,
//! `PAGEBASE` 0), the one `lmdb-master-sys` builds.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};

const MDB_MAGIC: u32 = 0xBEEF_C0DE;
const MDB_DATA_VERSION: u32 = 1;
const PAGE_HEADER: usize = 16;
const NODE_HEADER: usize = 8;
const DB_RECORD: usize = 48;
const P_INVALID: u64 = u64::MAX;

const P_BRANCH: u16 = 0x01;
const P_LEAF: u16 = 0x02;
const P_OVERFLOW: u16 = 0x04;
const P_LEAF2: u16 = 0x20;

const F_BIGDATA: u16 = 0x01;
const F_SUBDATA: u16 = 0x02;
const F_DUPDATA: u16 = 0x04;

/// One B-tree's record (`MDB_db`), as stored in a meta page or in the main database.
#[derive(Debug, Clone, Copy)]
struct DbRecord {
    pad: u32,
    depth: u16,
    branch_pages: u64,
    leaf_pages: u64,
    overflow_pages: u64,
    entries: u64,
    root: u64,
}

impl DbRecord {
    fn parse(b: &[u8]) -> DbRecord {
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        DbRecord {
            pad: u32::from_le_bytes(b[0..4].try_into().unwrap()),
            depth: u16::from_le_bytes(b[6..8].try_into().unwrap()),
            branch_pages: u64_at(8),
            leaf_pages: u64_at(16),
            overflow_pages: u64_at(24),
            entries: u64_at(32),
            root: u64_at(40),
        }
    }
}

/// The meta page LMDB would use: the valid one with the higher transaction id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub page_size: u64,
    pub last_page: u64,
    pub txn_id: u64,
    free: DbRecord,
    main: DbRecord,
}

fn parse_meta(page: &[u8]) -> Option<Meta> {
    let m = &page[PAGE_HEADER..];
    if u32::from_le_bytes(m[0..4].try_into().unwrap()) != MDB_MAGIC
        || u32::from_le_bytes(m[4..8].try_into().unwrap()) != MDB_DATA_VERSION
    {
        return None;
    }
    let free = DbRecord::parse(&m[24..24 + DB_RECORD]);
    let main = DbRecord::parse(&m[24 + DB_RECORD..24 + 2 * DB_RECORD]);
    let at = 24 + 2 * DB_RECORD;
    Some(Meta {
        page_size: free.pad as u64,
        last_page: u64::from_le_bytes(m[at..at + 8].try_into().unwrap()),
        txn_id: u64::from_le_bytes(m[at + 8..at + 16].try_into().unwrap()),
        free,
        main,
    })
}

fn damaged(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::corrupt(format!(
        "{} is damaged: {what}; restore the database from a backup",
        path.display()
    ))
}

/// Reads both meta pages of `path` and checks that the file holds every page the
/// newer one names. `Ok(None)` for a file too short to hold a meta page (LMDB
/// initialises an empty one).
pub(crate) fn read_meta(path: &Path) -> Result<Option<Meta>> {
    Ok(read_metas(path)?.map(|(newest, _)| newest))
}

/// Both valid meta pages, newest first, after the file-length check.
fn read_metas(path: &Path) -> Result<Option<(Meta, Option<Meta>)>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut first = vec![0u8; 4096];
    let n = read_up_to(&file, &mut first, 0)?;
    if n < PAGE_HEADER + 160 {
        // Shorter than one meta page: as good as empty (another process may be
        // creating it right now); the caller decides from the directory around it.
        return Ok(None);
    }
    let meta0 = parse_meta(&first);
    // The second meta page sits one page in; the page size is recorded in the first.
    let page_size = match meta0 {
        Some(m) => m.page_size,
        None => 4096,
    };
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(damaged(
            path,
            format!("its page size {page_size} is invalid"),
        ));
    }
    let mut second = vec![0u8; 4096];
    let meta1 = if read_up_to(&file, &mut second, page_size)? >= PAGE_HEADER + 160 {
        parse_meta(&second).filter(|m| m.page_size == page_size)
    } else {
        None
    };
    let (newest, older) = match (meta0, meta1) {
        (Some(a), Some(b)) if b.txn_id > a.txn_id => (b, Some(a)),
        (Some(a), b) => (a, b),
        (None, Some(b)) => (b, None),
        (None, None) => return Err(damaged(path, "neither meta page is an LMDB meta page")),
    };
    let needed = newest.last_page.saturating_add(1).saturating_mul(page_size);
    if len < needed {
        return Err(damaged(
            path,
            format!(
                "it is {len} bytes but its last committed page ends at byte {needed} (the file was truncated)"
            ),
        ));
    }
    Ok(Some((newest, older)))
}

fn read_up_to(file: &File, buf: &mut [u8], at: u64) -> Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], at + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

/// What [`walk`] found: pages and entries per tree, for the caller's report.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct WalkStats {
    pub pages: u64,
    pub trees: u64,
}

struct Walker<'a> {
    path: &'a Path,
    file: File,
    meta: Meta,
    /// One bit per page of the file: reached already.
    seen: Vec<u64>,
    page: Vec<u8>,
    stats: WalkStats,
}

/// Counts gathered while walking one tree, compared with its `MDB_db` record.
#[derive(Default)]
struct TreeCount {
    branch: u64,
    leaf: u64,
    overflow: u64,
    entries: u64,
}

/// Checks the page structure of `path` as committed in transaction `txn_id`
/// (the caller keeps a read transaction of that id open, so none of its pages are
/// reused meanwhile): every page a tree reaches has the number it is reached by,
/// a known type, node offsets and sizes inside the page, children and overflow
/// runs inside the file, no page reached twice, and page and entry counts equal
/// to its tree record. Walks the free list, the main database and the named
/// databases in `named` (`None`: all of them). `Ok(None)` when neither meta page
/// is at `txn_id` any more (a writer moved on twice; try again).
pub(crate) fn walk(
    path: &Path,
    txn_id: Option<u64>,
    named: Option<&[&str]>,
) -> Result<Option<WalkStats>> {
    let Some((newest, older)) = read_metas(path)? else {
        return Ok(Some(WalkStats::default()));
    };
    let meta = match txn_id {
        None => newest,
        Some(id) if newest.txn_id == id => newest,
        Some(id) => match older {
            Some(o) if o.txn_id == id => o,
            _ => return Ok(None),
        },
    };
    let mut w = Walker {
        path,
        file: File::open(path)?,
        meta,
        seen: vec![0u64; (meta.last_page / 64 + 1) as usize],
        page: vec![0u8; meta.page_size as usize],
        stats: WalkStats::default(),
    };
    w.tree("the free list", meta.free, false)?;
    let subs = w.tree("the main database", meta.main, true)?;
    for (name, rec) in subs {
        if named.is_none_or(|list| list.contains(&name.as_str())) {
            w.tree(&format!("database {name:?}"), rec, false)?;
        }
    }
    Ok(Some(w.stats))
}

impl Walker<'_> {
    fn bad(&self, what: impl std::fmt::Display) -> Error {
        damaged(self.path, what)
    }

    /// Walks one tree; returns the named databases it records (only the main database has any).
    fn tree(&mut self, name: &str, rec: DbRecord, main: bool) -> Result<Vec<(String, DbRecord)>> {
        self.stats.trees += 1;
        let mut subs = Vec::new();
        if rec.root == P_INVALID {
            if rec.entries != 0 || rec.depth != 0 {
                return Err(self.bad(format!(
                    "{name} has no root but records {} entries",
                    rec.entries
                )));
            }
            return Ok(subs);
        }
        let mut count = TreeCount::default();
        // (page, depth below the root): depth-first with an explicit stack.
        let mut stack = vec![(rec.root, 1u16)];
        while let Some((pgno, depth)) = stack.pop() {
            if depth > rec.depth || depth > 64 {
                return Err(self.bad(format!(
                    "{name} is deeper than its recorded depth {}",
                    rec.depth
                )));
            }
            self.read_page(name, pgno)?;
            let flags = u16::from_le_bytes(self.page[10..12].try_into().unwrap());
            let lower = u16::from_le_bytes(self.page[12..14].try_into().unwrap()) as usize;
            let upper = u16::from_le_bytes(self.page[14..16].try_into().unwrap()) as usize;
            let psize = self.page.len();
            if lower < PAGE_HEADER
                || lower > upper
                || upper > psize
                || !(lower - PAGE_HEADER).is_multiple_of(2)
            {
                return Err(self.bad(format!(
                    "page {pgno} of {name} has free-space bounds {lower}..{upper}"
                )));
            }
            let keys = (lower - PAGE_HEADER) / 2;
            let is_leaf = flags & (P_LEAF | P_LEAF2) != 0;
            if flags & P_BRANCH != 0 && !is_leaf {
                if depth == rec.depth {
                    return Err(
                        self.bad(format!("branch page {pgno} of {name} sits at leaf depth"))
                    );
                }
                count.branch += 1;
                for i in 0..keys {
                    let (node_flags, lo, hi, ksize, at) = self.node(name, pgno, i, upper)?;
                    if at + NODE_HEADER + ksize > psize {
                        return Err(
                            self.bad(format!("a key on page {pgno} of {name} runs past the page"))
                        );
                    }
                    let child = lo as u64 | (hi as u64) << 16 | (node_flags as u64) << 32;
                    stack.push((child, depth + 1));
                }
            } else if is_leaf && flags & P_BRANCH == 0 {
                if depth != rec.depth {
                    return Err(self.bad(format!(
                        "leaf page {pgno} of {name} is at depth {depth} of {}",
                        rec.depth
                    )));
                }
                count.leaf += 1;
                if flags & P_LEAF2 != 0 {
                    // Fixed-size keys packed after the header (DUPFIXED); athanor creates none.
                    if keys * rec.pad as usize > psize - PAGE_HEADER {
                        return Err(
                            self.bad(format!("page {pgno} of {name} holds more keys than fit"))
                        );
                    }
                    count.entries += keys as u64;
                    continue;
                }
                let mut overflows = Vec::new();
                for i in 0..keys {
                    let (node_flags, lo, hi, ksize, at) = self.node(name, pgno, i, upper)?;
                    let dsize = lo as usize | (hi as usize) << 16;
                    let data_at = at + NODE_HEADER + ksize;
                    let stored = if node_flags & F_BIGDATA != 0 {
                        8
                    } else {
                        dsize
                    };
                    if data_at + stored > psize {
                        return Err(self.bad(format!(
                            "a record on page {pgno} of {name} runs past the page"
                        )));
                    }
                    count.entries += 1;
                    let data = &self.page[data_at..data_at + stored];
                    if node_flags & F_BIGDATA != 0 {
                        overflows.push((u64::from_le_bytes(data.try_into().unwrap()), dsize));
                    } else if node_flags & F_SUBDATA != 0 {
                        if stored != DB_RECORD {
                            return Err(self.bad(format!(
                                "a database record on page {pgno} of {name} is {stored} bytes"
                            )));
                        }
                        let sub = DbRecord::parse(data);
                        if main && node_flags & F_DUPDATA == 0 {
                            let key =
                                String::from_utf8_lossy(&self.page[at + NODE_HEADER..data_at])
                                    .into_owned();
                            subs.push((key, sub));
                        }
                    }
                }
                for (first, size) in overflows {
                    count.overflow += self.overflow(name, first, size)?;
                }
            } else {
                return Err(self.bad(format!(
                    "page {pgno} of {name} has page flags {flags:#x}, not a branch or leaf page"
                )));
            }
        }
        if count.branch != rec.branch_pages
            || count.leaf != rec.leaf_pages
            || count.overflow != rec.overflow_pages
        {
            return Err(self.bad(format!(
                "{name} has {}/{}/{} branch/leaf/overflow pages but records {}/{}/{}",
                count.branch,
                count.leaf,
                count.overflow,
                rec.branch_pages,
                rec.leaf_pages,
                rec.overflow_pages
            )));
        }
        if count.entries != rec.entries {
            return Err(self.bad(format!(
                "{name} has {} entries but records {}",
                count.entries, rec.entries
            )));
        }
        Ok(subs)
    }

    /// Marks page `pgno` (within `last_page`) as reached; false if it already was.
    fn mark(&mut self, pgno: u64) -> bool {
        let (word, bit) = ((pgno / 64) as usize, 1u64 << (pgno % 64));
        let fresh = self.seen[word] & bit == 0;
        self.seen[word] |= bit;
        fresh
    }

    /// Reads page `pgno` into `self.page` after checking it is a page the file
    /// holds and not one reached before; checks the page number it records.
    fn read_page(&mut self, name: &str, pgno: u64) -> Result<()> {
        if pgno < 2 || pgno > self.meta.last_page {
            return Err(self.bad(format!(
                "{name} refers to page {pgno}, outside pages 2..={}",
                self.meta.last_page
            )));
        }
        if !self.mark(pgno) {
            return Err(self.bad(format!("page {pgno} is reached twice (from {name})")));
        }
        self.stats.pages += 1;
        let at = pgno * self.meta.page_size;
        if read_up_to(&self.file, &mut self.page, at)? != self.page.len() {
            return Err(self.bad(format!("page {pgno} lies past the end of the file")));
        }
        let recorded = u64::from_le_bytes(self.page[0..8].try_into().unwrap());
        if recorded != pgno {
            return Err(self.bad(format!(
                "page {pgno} of {name} records page number {recorded}"
            )));
        }
        Ok(())
    }

    /// The `i`th node of the page in `self.page`: `(flags, lo, hi, key size, offset)`.
    fn node(
        &self,
        name: &str,
        pgno: u64,
        i: usize,
        upper: usize,
    ) -> Result<(u16, u16, u16, usize, usize)> {
        let p = PAGE_HEADER + 2 * i;
        let at = u16::from_le_bytes(self.page[p..p + 2].try_into().unwrap()) as usize;
        if at < upper || at + NODE_HEADER > self.page.len() {
            return Err(self.bad(format!(
                "node {i} of page {pgno} of {name} is at offset {at}, outside the page's nodes"
            )));
        }
        let h = |o: usize| u16::from_le_bytes(self.page[at + o..at + o + 2].try_into().unwrap());
        Ok((h(4), h(0), h(2), h(6) as usize, at))
    }

    /// Checks the overflow run starting at `first` that holds `size` bytes; returns its page count.
    fn overflow(&mut self, name: &str, first: u64, size: usize) -> Result<u64> {
        self.read_page(name, first)?;
        let flags = u16::from_le_bytes(self.page[10..12].try_into().unwrap());
        let pages = u32::from_le_bytes(self.page[12..16].try_into().unwrap()) as u64;
        if flags & P_OVERFLOW == 0 {
            return Err(self.bad(format!(
                "page {first} of {name} should be an overflow page (flags {flags:#x})"
            )));
        }
        let psize = self.meta.page_size;
        if pages == 0
            || first + pages - 1 > self.meta.last_page
            || (size as u64 + PAGE_HEADER as u64) > pages * psize
        {
            return Err(self.bad(format!(
                "overflow run at page {first} of {name} spans {pages} pages for {size} bytes"
            )));
        }
        for p in first + 1..first + pages {
            if !self.mark(p) {
                return Err(self.bad(format!("page {p} is reached twice (overflow of {name})")));
            }
        }
        Ok(pages)
    }
}
