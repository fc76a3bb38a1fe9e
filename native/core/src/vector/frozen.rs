//! The compact in-memory form of a built HNSW graph: every vector in one
//! contiguous array, the links of layer 0 in one array with per-node offsets,
//! the upper layers likewise (only for their nodes): no allocation per point.
//!
//! hnsw_rs builds graphs (a point is a reference-counted node with its own
//! vector and a `Vec` of neighbour records per layer, about 3x the vector's
//! size at M 16); once a build is done the index freezes it into this form and
//! drops hnsw_rs's copy, so a collection holds one copy of a built graph. Walks
//! here use an epoch-stamped visited array and plain heaps. The form is read
//! only: later inserts go to a small hnsw_rs delta graph, merged in at rebuild
//! (see `index`). Dumps store this form as is (see [`Frozen::write`]).

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::io::{Read, Write};

use super::collection::Quantization;
use super::distance::{dot, dot_i8, hamming, MetricDistance};
use super::graph::{BuiltGraph, LAYERS};

#[derive(Clone, Copy, PartialEq)]
struct Item(f32, u32);
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.total_cmp(&o.0).then(self.1.cmp(&o.1))
    }
}

/// Links of one upper layer, for the nodes on it: `nodes` sorted, node
/// `nodes[i]`'s links are `links[start[i]..start[i + 1]]`.
#[derive(Default)]
struct Layer {
    nodes: Vec<u32>,
    start: Vec<u32>,
    links: Vec<u32>,
}

impl Layer {
    fn links_of(&self, node: u32) -> &[u32] {
        match self.nodes.binary_search(&node) {
            Ok(i) => &self.links[self.start[i] as usize..self.start[i + 1] as usize],
            Err(_) => &[],
        }
    }
}

/// How a frozen graph holds its vectors (see [`Quantization`]).
enum Codes {
    /// Node `i`'s vector is `[i * dim..(i + 1) * dim]`.
    F32(Vec<f32>),
    /// Node `i`: `dim` signed bytes `codes[i * dim..]` standing for
    /// `codes * scale[i]`, and that vector's squared norm.
    Int8 {
        codes: Vec<i8>,
        scale: Vec<f32>,
        sqnorm: Vec<f32>,
    },
    /// Node `i`: `words` 64-bit words of sign bits from `bits[i * words..]`,
    /// and the vector's norm.
    Binary {
        words: usize,
        bits: Vec<u64>,
        norm: Vec<f32>,
    },
}

/// A query as a walk compares it: its vector, and its sign bits and squared
/// norm when the graph is quantized.
pub(crate) struct Query<'a> {
    v: &'a [f32],
    bits: Vec<u64>,
    sqnorm: f32,
}

fn sign_bits(v: &[f32], out: &mut Vec<u64>) {
    for chunk in v.chunks(64) {
        let mut w = 0u64;
        for (j, x) in chunk.iter().enumerate() {
            if *x > 0.0 {
                w |= 1 << j;
            }
        }
        out.push(w);
    }
}

/// A frozen graph. Node `i` is the `i`-th point; `slots[i]` is its slot (data id).
pub(crate) struct Frozen {
    /// Points (nodes) in the graph, live or not.
    pub(crate) points: usize,
    dim: usize,
    slots: Vec<u32>,
    codes: Codes,
    /// Node `i`'s layer-0 links are `l0[l0_start[i]..l0_start[i + 1]]`.
    l0_start: Vec<u32>,
    l0: Vec<u32>,
    /// Links of layers 1..=top (index 0 unused).
    upper: Vec<Layer>,
    entry: u32,
    top: usize,
}

/// Neighbours of one node a walk takes at a time (layer 0 holds at most `2 * m`, m <= 128).
const NEIGHBOUR_BATCH: usize = 256;
/// First bytes of a frozen graph's file, then its format version.
const MAGIC: &[u8; 4] = b"ATHG";
const FILE_VERSION: u32 = 1;

thread_local! {
    static VISITED: RefCell<(Vec<u32>, u32)> = const { RefCell::new((Vec::new(), 0)) };
}

/// A plain number any bytes are a valid value of (what graph files hold).
trait Word: Copy + Default {}
impl Word for u32 {}
impl Word for f32 {}
impl Word for i8 {}
impl Word for u64 {}

/// Arrays at least this large are backed by 2 MiB pages where the kernel allows.
const HUGE_PAGE_MIN_BYTES: usize = 4 << 20;

/// An empty vector with room for `n` items, its memory advised to the kernel
/// as huge pages before anything touches it. A walk reads vectors and links
/// at random across the whole graph (75 MB for 50,000 vectors of 384
/// dimensions); with 4 KiB pages nearly every vector it reads misses the TLB,
/// and transparent huge pages are usually granted only on request (`madvise`
/// mode). Memory use is unchanged: only the whole 2 MiB pages inside the
/// allocation are affected.
fn huge_vec<T>(n: usize) -> Vec<T> {
    let v = Vec::with_capacity(n);
    let bytes = n * std::mem::size_of::<T>();
    #[cfg(target_os = "linux")]
    if bytes >= HUGE_PAGE_MIN_BYTES {
        const HUGE: usize = 2 << 20;
        let start = (v.as_ptr() as usize).next_multiple_of(HUGE);
        let end = (v.as_ptr() as usize + bytes) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside this vector's allocation; the advice
            // changes how its pages are backed, never their contents. A refusal
            // (kernel without THP) leaves ordinary pages, so the result is ignored.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = bytes;
    v
}

/// Reads `n` little-endian numbers straight into a vector.
fn read_words<T: Word>(r: &mut impl Read, n: usize) -> std::io::Result<Vec<T>> {
    let size = std::mem::size_of::<T>();
    let mut v = huge_vec(n);
    v.resize(n, T::default());
    // SAFETY: `T` is a plain number (see `Word`), so any bytes are a valid value
    // and the vector's memory is `size * n` initialised bytes.
    let bytes = unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, n * size) };
    r.read_exact(bytes)?;
    Ok(v)
}

fn write_words<T: Word>(w: &mut impl Write, v: &[T]) -> std::io::Result<()> {
    // SAFETY: `T` is a plain number; its bytes are initialised.
    let bytes =
        unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) };
    w.write_all(bytes)
}

// The file stores numbers in the machine's byte order, which the version check
// pins to little-endian (every platform athanor ships for).
#[cfg(target_endian = "big")]
compile_error!("frozen graph files assume a little-endian machine");

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("frozen graph: {what}"),
    )
}

/// Checks offsets (`n + 1` of them, non-decreasing, ending at `links.len()`) and
/// that every link names one of `points` nodes.
fn check_csr(start: &[u32], links: &[u32], points: usize) -> std::io::Result<()> {
    if start.first() != Some(&0)
        || start.windows(2).any(|w| w[0] > w[1])
        || *start.last().unwrap() as usize != links.len()
        || links.iter().any(|&n| n as usize >= points)
    {
        return Err(bad("links out of range"));
    }
    Ok(())
}

impl Codes {
    fn new(quantization: Quantization, dim: usize, points: usize) -> Codes {
        match quantization {
            Quantization::None => Codes::F32(huge_vec(points * dim)),
            Quantization::Int8 => Codes::Int8 {
                codes: huge_vec(points * dim),
                scale: Vec::with_capacity(points),
                sqnorm: Vec::with_capacity(points),
            },
            Quantization::Binary => Codes::Binary {
                words: dim.div_ceil(64),
                bits: huge_vec(points * dim.div_ceil(64)),
                norm: Vec::with_capacity(points),
            },
        }
    }

    /// Appends one vector: symmetric int8 codes scale by the largest magnitude.
    fn push(&mut self, v: &[f32]) {
        match self {
            Codes::F32(all) => all.extend_from_slice(v),
            Codes::Int8 {
                codes,
                scale,
                sqnorm,
            } => {
                let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
                let s = if max > 0.0 { max / 127.0 } else { 1.0 };
                let start = codes.len();
                codes.extend(v.iter().map(|x| (x / s).round().clamp(-127.0, 127.0) as i8));
                let n: f32 = codes[start..].iter().map(|c| (*c as f32 * s).powi(2)).sum();
                scale.push(s);
                sqnorm.push(n);
            }
            Codes::Binary { bits, norm, .. } => {
                sign_bits(v, bits);
                norm.push(dot(v, v).sqrt());
            }
        }
    }
}

impl Frozen {
    /// Freezes a built hnsw_rs graph (copying its vectors, quantized as asked,
    /// and links); `None` when it is empty or a vector has another dimension.
    pub(crate) fn take(g: &BuiltGraph, dim: usize, quantization: Quantization) -> Option<Frozen> {
        let points = g.get_nb_point();
        if points == 0 {
            return None;
        }
        let pi = g.get_point_indexation();
        let mut slots = Vec::with_capacity(points);
        let mut codes = Codes::new(quantization, dim, points);
        let mut links = Vec::with_capacity(points);
        let mut top = 0usize;
        for layer in 0..LAYERS {
            for p in pi.get_layer_iterator(layer) {
                let v = p.get_v();
                if v.len() != dim {
                    return None;
                }
                slots.push(p.get_origin_id() as u32);
                codes.push(v);
                links.push((layer, p.get_neighborhood_id()));
                top = top.max(layer);
            }
        }
        let max_slot = slots.iter().copied().max().unwrap_or(0) as usize;
        let mut node_of = vec![u32::MAX; max_slot + 1];
        for (i, s) in slots.iter().enumerate() {
            node_of[*s as usize] = i as u32;
        }
        let node = |slot: usize| node_of.get(slot).copied().filter(|n| *n != u32::MAX);
        let mut l0_start = Vec::with_capacity(slots.len() + 1);
        let mut l0 = Vec::new();
        let mut upper: Vec<Layer> = (0..=top).map(|_| Layer::default()).collect();
        for (i, (level, nbs)) in links.iter().enumerate() {
            l0_start.push(l0.len() as u32);
            if let Some(layer0) = nbs.first() {
                l0.extend(layer0.iter().filter_map(|n| node(n.d_id)));
            }
            for (l, layer) in upper.iter_mut().enumerate().take(*level + 1).skip(1) {
                layer.nodes.push(i as u32);
                layer.start.push(layer.links.len() as u32);
                if let Some(ns) = nbs.get(l) {
                    layer.links.extend(ns.iter().filter_map(|n| node(n.d_id)));
                }
            }
        }
        l0_start.push(l0.len() as u32);
        for layer in upper.iter_mut().skip(1) {
            layer.start.push(layer.links.len() as u32);
        }
        // Held for the graph's lifetime: no spare capacity (a loaded dump has none either).
        l0.shrink_to_fit();
        for layer in upper.iter_mut() {
            layer.nodes.shrink_to_fit();
            layer.start.shrink_to_fit();
            layer.links.shrink_to_fit();
        }
        // Any node of the top layer is a valid entry for the greedy descent.
        let entry = links.iter().position(|(l, _)| *l == top)? as u32;
        Some(Frozen {
            points: slots.len(),
            dim,
            slots,
            codes,
            l0_start,
            l0,
            upper,
            entry,
            top,
        })
    }

    /// Writes this graph to `w` (read back by [`Self::read`]).
    pub(crate) fn write(&self, w: &mut impl Write) -> std::io::Result<()> {
        w.write_all(MAGIC)?;
        let quantization = match &self.codes {
            Codes::F32(_) => 0,
            Codes::Int8 { .. } => 1,
            Codes::Binary { .. } => 2,
        };
        let header = [
            FILE_VERSION,
            quantization,
            self.dim as u32,
            self.points as u32,
            self.entry,
            self.top as u32,
            self.l0.len() as u32,
        ];
        write_words(w, &header)?;
        write_words(w, &self.slots)?;
        write_words(w, &self.l0_start)?;
        write_words(w, &self.l0)?;
        for layer in self.upper.iter().skip(1) {
            write_words(w, &[layer.nodes.len() as u32, layer.links.len() as u32])?;
            write_words(w, &layer.nodes)?;
            write_words(w, &layer.start)?;
            write_words(w, &layer.links)?;
        }
        match &self.codes {
            Codes::F32(v) => write_words(w, v),
            Codes::Int8 {
                codes,
                scale,
                sqnorm,
            } => {
                write_words(w, scale)?;
                write_words(w, sqnorm)?;
                write_words(w, codes)
            }
            Codes::Binary { bits, norm, .. } => {
                write_words(w, norm)?;
                write_words(w, bits)
            }
        }
    }

    /// Reads a graph written by [`Self::write`], checking every offset and link,
    /// so a damaged file is refused rather than walked out of bounds.
    pub(crate) fn read(
        r: &mut impl Read,
        dim: usize,
        quantization: Quantization,
    ) -> std::io::Result<Frozen> {
        let mut magic = [0u8; 4];
        r.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(bad("not a frozen graph file"));
        }
        let h: Vec<u32> = read_words(r, 7)?;
        let [version, file_quantization, file_dim, points, entry, top, l0_len] = h[..] else {
            unreachable!()
        };
        let want = match quantization {
            Quantization::None => 0,
            Quantization::Int8 => 1,
            Quantization::Binary => 2,
        };
        if file_quantization != want {
            return Err(bad("another quantization"));
        }
        let (points, top) = (points as usize, top as usize);
        if version != FILE_VERSION || file_dim as usize != dim || points == 0 {
            return Err(bad("another version, dimension, or empty"));
        }
        if entry as usize >= points || top >= LAYERS {
            return Err(bad("entry or layer count out of range"));
        }
        let slots: Vec<u32> = read_words(r, points)?;
        let l0_start: Vec<u32> = read_words(r, points + 1)?;
        let l0: Vec<u32> = read_words(r, l0_len as usize)?;
        check_csr(&l0_start, &l0, points)?;
        let mut upper = vec![Layer::default()];
        for _ in 1..=top {
            let sizes: Vec<u32> = read_words(r, 2)?;
            let (n, links) = (sizes[0] as usize, sizes[1] as usize);
            if n > points || links > points * 256 {
                return Err(bad("layer larger than the graph"));
            }
            let nodes: Vec<u32> = read_words(r, n)?;
            let start: Vec<u32> = read_words(r, n + 1)?;
            let links: Vec<u32> = read_words(r, links)?;
            check_csr(&start, &links, points)?;
            if nodes.windows(2).any(|w| w[0] >= w[1]) || nodes.iter().any(|&x| x as usize >= points)
            {
                return Err(bad("layer nodes out of order"));
            }
            upper.push(Layer {
                nodes,
                start,
                links,
            });
        }
        let codes = match quantization {
            Quantization::None => Codes::F32(read_words(r, points * dim)?),
            Quantization::Int8 => {
                let scale = read_words(r, points)?;
                let sqnorm = read_words(r, points)?;
                Codes::Int8 {
                    scale,
                    sqnorm,
                    codes: read_words(r, points * dim)?,
                }
            }
            Quantization::Binary => {
                let words = dim.div_ceil(64);
                let norm = read_words(r, points)?;
                Codes::Binary {
                    words,
                    norm,
                    bits: read_words(r, points * words)?,
                }
            }
        };
        let mut rest = [0u8; 1];
        if r.read(&mut rest)? != 0 {
            return Err(bad("trailing bytes"));
        }
        Ok(Frozen {
            points,
            dim,
            slots,
            codes,
            l0_start,
            l0,
            upper,
            entry,
            top,
        })
    }

    /// Visits every point with its exact vector: `(slot, vector)`; `false`
    /// (visiting nothing) when the graph is quantized and holds none.
    pub(crate) fn for_each_point(&self, mut f: impl FnMut(u32, &[f32])) -> bool {
        let Codes::F32(v) = &self.codes else {
            return false;
        };
        for (i, s) in self.slots.iter().enumerate() {
            f(*s, &v[i * self.dim..(i + 1) * self.dim]);
        }
        true
    }

    /// Candidates a walk keeps for a search of width `ef`: wider on binary
    /// codes, whose sign bits rank candidates only roughly before they are
    /// rescored (20k low-rank vectors of 128 dimensions, `ef` 64: 4x reached
    /// recall@10 0.93 under cosine; 8x reached 0.98 under cosine but 0.945
    /// under l2 with norms spread over 0.5..2).
    pub(crate) fn walk_width(&self, ef: usize) -> usize {
        match self.codes {
            Codes::Binary { .. } => ef * 12,
            _ => ef,
        }
    }

    /// Whether the graph holds quantized vectors (and results need rescoring).
    pub(crate) fn quantized(&self) -> bool {
        !matches!(self.codes, Codes::F32(_))
    }

    /// Whether node `i` holds vector `v` (exactly, or quantized as `v` quantizes).
    pub(crate) fn holds(&self, i: usize, v: &[f32]) -> bool {
        let mut one = Codes::new(self.quantization(), self.dim, 1);
        one.push(v);
        let d = self.dim;
        match (&self.codes, &one) {
            (Codes::F32(a), Codes::F32(b)) => a[i * d..(i + 1) * d] == b[..],
            (
                Codes::Int8 { codes, scale, .. },
                Codes::Int8 {
                    codes: c, scale: s, ..
                },
            ) => codes[i * d..(i + 1) * d] == c[..] && scale[i] == s[0],
            (
                Codes::Binary { words, bits, norm },
                Codes::Binary {
                    bits: b, norm: n, ..
                },
            ) => bits[i * words..(i + 1) * words] == b[..] && norm[i] == n[0],
            _ => false,
        }
    }

    fn quantization(&self) -> Quantization {
        match self.codes {
            Codes::F32(_) => Quantization::None,
            Codes::Int8 { .. } => Quantization::Int8,
            Codes::Binary { .. } => Quantization::Binary,
        }
    }

    /// Prepares `q` for walks of this graph.
    pub(crate) fn query<'a>(&self, q: &'a [f32]) -> Query<'a> {
        let mut bits = Vec::new();
        if let Codes::Binary { .. } = self.codes {
            sign_bits(q, &mut bits);
        }
        Query {
            v: q,
            bits,
            sqnorm: dot(q, q),
        }
    }

    /// The walk's distance from `q` to node `i`: exact for `f32`, estimated
    /// from the codes otherwise (for binary, the Hamming distance of the signs).
    #[inline]
    pub(crate) fn distance(&self, dist: &MetricDistance, q: &Query<'_>, i: u32) -> f32 {
        let (i, d) = (i as usize, self.dim);
        match &self.codes {
            Codes::F32(v) => dist.distance(q.v, &v[i * d..(i + 1) * d]),
            Codes::Int8 {
                codes,
                scale,
                sqnorm,
            } => {
                let x = scale[i] * dot_i8(q.v, &codes[i * d..(i + 1) * d]);
                dist.from_dot(x, q.sqnorm, sqnorm[i])
            }
            Codes::Binary { words, bits, norm } => {
                // The angle estimated from the share of differing signs, then the
                // dot product from it and both norms (so l2 and dot see the norms).
                let h = hamming(&q.bits, &bits[i * words..(i + 1) * words]) as f32;
                let cos = (std::f32::consts::PI * h / d as f32).cos();
                let x = q.sqnorm.sqrt() * norm[i] * cos;
                dist.from_dot(x, q.sqnorm, norm[i] * norm[i])
            }
        }
    }

    /// Every point's slot, in node order.
    pub(crate) fn slots(&self) -> &[u32] {
        &self.slots
    }

    /// Bytes this graph holds in memory.
    pub(crate) fn heap_bytes(&self) -> usize {
        let codes = match &self.codes {
            Codes::F32(v) => 4 * v.capacity(),
            Codes::Int8 {
                codes,
                scale,
                sqnorm,
            } => codes.capacity() + 4 * (scale.capacity() + sqnorm.capacity()),
            Codes::Binary { bits, norm, .. } => 8 * bits.capacity() + 4 * norm.capacity(),
        };
        codes
            + 4 * (self.slots.capacity() + self.l0_start.capacity() + self.l0.capacity())
            + self
                .upper
                .iter()
                .map(|l| 4 * (l.nodes.capacity() + l.start.capacity() + l.links.capacity()))
                .sum::<usize>()
    }

    /// Start and length in bytes of node `i`'s codes.
    #[inline]
    fn code_bytes(&self, i: u32) -> (*const i8, usize) {
        let i = i as usize;
        match &self.codes {
            Codes::F32(v) => (v[i * self.dim..].as_ptr() as *const i8, 4 * self.dim),
            Codes::Int8 { codes, .. } => (codes[i * self.dim..].as_ptr(), self.dim),
            Codes::Binary { words, bits, .. } => {
                (bits[i * words..].as_ptr() as *const i8, 8 * words)
            }
        }
    }

    #[inline]
    fn prefetch(&self, i: u32) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetching is a hint; the address is a valid vector start.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch(self.code_bytes(i).0, _MM_HINT_T0);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = i;
    }

    /// Every cache line of node `i`'s vector (a 384-dimension vector spans 24).
    #[inline]
    fn prefetch_vector(&self, i: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            let (start, bytes) = self.code_bytes(i);
            let mut at = 64;
            while at < bytes {
                // SAFETY: prefetching is a hint; the address lies inside the vector.
                unsafe {
                    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                    _mm_prefetch(start.add(at), _MM_HINT_T0);
                }
                at += 64;
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = i;
    }

    /// The `ef` nearest points found by the standard HNSW walk, as `(distance, slot)`,
    /// nearest first, and the number of distances the walk computed.
    pub(crate) fn search(
        &self,
        dist: &MetricDistance,
        q: &[f32],
        ef: usize,
    ) -> (Vec<(f32, u32)>, usize) {
        self.search_filtered(dist, q, ef, None)
    }

    /// Like [`Self::search`], keeping only points whose slot `allow` accepts: the
    /// walk goes through every node, but only accepted ones enter the results
    /// (and decide when the walk stops).
    pub(crate) fn search_filtered(
        &self,
        dist: &MetricDistance,
        q: &[f32],
        ef: usize,
        allow: Option<&dyn Fn(u32) -> bool>,
    ) -> (Vec<(f32, u32)>, usize) {
        let ok = |n: u32| allow.is_none_or(|f| f(self.slots[n as usize]));
        let q = &self.query(q);
        let mut cur = self.entry;
        let mut cur_d = self.distance(dist, q, cur);
        let mut visits = 1usize;
        for l in (1..=self.top).rev() {
            loop {
                let mut changed = false;
                {
                    let ns = self.upper[l].links_of(cur);
                    visits += ns.len();
                    for &n in ns.iter() {
                        let d = self.distance(dist, q, n);
                        if d < cur_d {
                            cur = n;
                            cur_d = d;
                            changed = true;
                        }
                    }
                }
                if !changed {
                    break;
                }
            }
        }
        VISITED.with(|cell| {
            let mut cell = cell.borrow_mut();
            let (visited, epoch) = &mut *cell;
            if visited.len() < self.points {
                visited.clear();
                visited.resize(self.points, 0);
                *epoch = 0;
            }
            *epoch = epoch.wrapping_add(1);
            if *epoch == 0 {
                visited.iter_mut().for_each(|v| *v = 0);
                *epoch = 1;
            }
            let stamp = *epoch;
            let mut cand: BinaryHeap<Reverse<Item>> = BinaryHeap::with_capacity(ef * 2);
            let mut best: BinaryHeap<Item> = BinaryHeap::with_capacity(ef + 1);
            visited[cur as usize] = stamp;
            cand.push(Reverse(Item(cur_d, cur)));
            if ok(cur) {
                best.push(Item(cur_d, cur));
            }
            while let Some(Reverse(Item(d, c))) = cand.pop() {
                if best.len() >= ef && d > best.peek().unwrap().0 {
                    break;
                }
                let (s, e) = (
                    self.l0_start[c as usize] as usize,
                    self.l0_start[c as usize + 1] as usize,
                );
                // The unvisited neighbours first, so each distance can overlap
                // fetching the next one's whole vector from memory.
                let mut todo = [0u32; NEIGHBOUR_BATCH];
                for chunk in self.l0[s..e].chunks(NEIGHBOUR_BATCH) {
                    let mut t = 0;
                    for &n in chunk {
                        if visited[n as usize] != stamp {
                            visited[n as usize] = stamp;
                            self.prefetch(n);
                            todo[t] = n;
                            t += 1;
                        }
                    }
                    visits += t;
                    for j in 0..t {
                        let n = todo[j];
                        if j + 1 < t {
                            self.prefetch_vector(todo[j + 1]);
                        }
                        let dn = self.distance(dist, q, n);
                        if best.len() < ef || dn < best.peek().unwrap().0 {
                            cand.push(Reverse(Item(dn, n)));
                            if ok(n) {
                                best.push(Item(dn, n));
                                if best.len() > ef {
                                    best.pop();
                                }
                            }
                        }
                    }
                }
            }
            let found = best
                .into_sorted_vec()
                .into_iter()
                .map(|Item(d, n)| (d, self.slots[n as usize]))
                .collect();
            (found, visits)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vector::collection::{CollectionDef, CollectionParams, Metric};
    use crate::vector::graph::new_graph;

    /// With ef at least the number of points the walk reaches every node, so it
    /// must return the exact nearest neighbours, in order.
    #[test]
    fn full_width_walk_is_exact() {
        let dim = 10;
        for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
            let def = CollectionDef {
                id: 1,
                name: "t".into(),
                params: CollectionParams::new(dim as u32, metric),
            };
            let g = new_graph(&def, 400);
            let mut seed = 12345u64;
            let mut r = || {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            };
            let mut vecs = Vec::new();
            for i in 0..400 {
                let mut v: Vec<f32> = (0..dim).map(|_| r()).collect();
                if metric == Metric::Cosine {
                    crate::vector::distance::normalize(&mut v);
                }
                g.insert_slice((&v, i * 3));
                vecs.push(v);
            }
            let f = Frozen::take(&g, dim, Quantization::None).unwrap();
            // The file form walks the same.
            let mut file = Vec::new();
            f.write(&mut file).unwrap();
            let f = Frozen::read(&mut &file[..], dim, Quantization::None).unwrap();
            assert!(Frozen::read(&mut &file[..file.len() - 1], dim, Quantization::None).is_err());
            let dist = MetricDistance(metric);
            let q: Vec<f32> = (0..dim).map(|_| r()).collect();
            let got: Vec<u32> = f
                .search(&dist, &q, 400)
                .0
                .iter()
                .take(10)
                .map(|x| x.1)
                .collect();
            let mut all: Vec<(f32, u32)> = vecs
                .iter()
                .enumerate()
                .map(|(i, v)| (dist.distance(&q, v), (i * 3) as u32))
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let want: Vec<u32> = all.iter().take(10).map(|x| x.1).collect();
            assert_eq!(got, want, "{metric:?}");
            // Filtered: only accepted points, still exact at full width.
            let even = |s: u32| s.is_multiple_of(2);
            let got: Vec<u32> = f
                .search_filtered(&dist, &q, 400, Some(&even))
                .0
                .iter()
                .take(10)
                .map(|x| x.1)
                .collect();
            let want: Vec<u32> = all
                .iter()
                .filter(|x| even(x.1))
                .take(10)
                .map(|x| x.1)
                .collect();
            assert_eq!(got, want, "{metric:?} filtered");
            // Quantized: a full-width walk reaches every node, so rescoring what it
            // returns with the exact vectors gives the exact answer; the codes
            // survive the file, which refuses another quantization.
            for q8 in [Quantization::Int8, Quantization::Binary] {
                let f = Frozen::take(&g, dim, q8).unwrap();
                assert!(f.quantized());
                let mut file = Vec::new();
                f.write(&mut file).unwrap();
                assert!(Frozen::read(&mut &file[..], dim, Quantization::None).is_err());
                let f = Frozen::read(&mut &file[..], dim, q8).unwrap();
                for (node, slot) in f.slots().iter().enumerate() {
                    assert!(f.holds(node, &vecs[*slot as usize / 3]));
                }
                assert!(!f.holds(0, &vecs[f.slots()[1] as usize / 3]));
                let (found, _) = f.search(&dist, &q, 400);
                assert_eq!(found.len(), 400, "{metric:?} {q8:?}");
                let mut rescored: Vec<(f32, u32)> = found
                    .iter()
                    .map(|(_, s)| (dist.distance(&q, &vecs[*s as usize / 3]), *s))
                    .collect();
                rescored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                let got: Vec<u32> = rescored.iter().take(10).map(|x| x.1).collect();
                let want: Vec<u32> = all.iter().take(10).map(|x| x.1).collect();
                assert_eq!(got, want, "{metric:?} {q8:?}");
            }
        }
    }
}
