//! Which of many literal patterns occur in a haystack, at a cost that grows with the
//! bytes scanned and hardly with the number of patterns.
//!
//! An Aho-Corasick DFA over OONI's ~1,300 body patterns misses the cache at almost
//! every byte of an HTML body (~260 MB/s, slower as the set grows). This scan reads the
//! haystack's 8-byte windows at every multiple of 8, hashes each, and tests one bit of
//! a table sized to the set (4 KiB to 256 KiB, one bit in 64 set), with no branch: the
//! bits of each 32-byte chunk form a mask, and the chunks with a bit set are buffered
//! and verified in batches.
//!
//! - Every pattern of 15 bytes or more is anchored on eight of its 8-byte windows, one
//!   at each offset modulo 8, each the rarest of its class by a static guess at byte
//!   frequencies in HTML and text. Wherever the pattern occurs, exactly one of its
//!   anchors lands on a window the scan reads. (8-byte windows of blockpage text hardly
//!   ever occur in other pages, so nearly every hit is a hash collision, cheap to
//!   reject.)
//! - Shorter patterns of `step + 3` bytes or more are anchored the same way on 4-byte
//!   windows ("quads") at every multiple of `step` (8, 4, 2 or 1): the first half of
//!   every window read, and of the windows between them when `step` is under 8, tested
//!   in a second table sized the same way. Even the rarest quad of an HTML fragment
//!   occurs every few hundred bytes of a body, so quads have more true hits to compare;
//!   only patterns too short for an 8-byte anchor take them.
//! - A hit is checked against a second bit table (other bits of the same hash), then
//!   looks the window up in a flat table of anchors (buckets in CSR layout) and
//!   compares whole each pattern anchored on it. A pattern found is not compared again
//!   in the same haystack.
//! - Patterns under `step + 3` bytes go to the "side" searcher: Teddy (the SIMD
//!   searcher of the `aho-corasick` crate) over a piece of each, or, past 64 of them or
//!   without SIMD, an Aho-Corasick automaton. `new` takes the largest step that leaves
//!   at most 64 patterns to the side: 8 for OONI's body rows (27 to the side), 4 for ten
//!   times those (2 to the side), so the cost per byte hardly moves as the set grows.

use aho_corasick::packed;
use aho_corasick::{AhoCorasick, Span};
use std::collections::HashSet;

/// The window length: one unaligned `u64` load. Windows are looked up in the gram
/// table at every multiple of `GRAM`.
const GRAM: usize = 8;
/// The length of a quad: the first bytes of a window.
const QUAD: usize = 4;
/// Bytes of haystack per round of the main loop (unrolled: `CHUNK / step` windows, a
/// bit each in a `u32`).
const CHUNK: usize = 32;
/// Multiplicative hash (the 64-bit golden ratio): the high 64 bits of the 128-bit
/// product `window * HASH_MUL`, and the top bits of the low 64, depend on every bit of
/// the window (bit `k` of the low half only on the window's bits up to `k`).
const HASH_MUL: u64 = 0x9E37_79B9_7F4A_7C15;
/// The bit table has `1 << bits` bits, `bits` in this range, for about one bit set in
/// 64: 2^15 bits are 4 KiB, 2^21 bits 256 KiB (within L2). The word index has up to
/// 15 bits: `hash` takes it from bit 64 of the product, `confirm_hash` from bit 81,
/// below 96 (a quad's product has no more).
const MIN_FILTER_BITS: u32 = 15;
const MAX_FILTER_BITS: u32 = 21;
const _: () = assert!(64 + MAX_FILTER_BITS - 6 <= 81 && 81 + MAX_FILTER_BITS - 6 <= 96);
/// Chunks with a hit buffered before they are verified.
const CANDIDATES: usize = 32;
/// The most patterns a packed searcher takes (Teddy's own limit).
const PACKED_MAX: usize = 64;
/// `new` takes the largest step that leaves at most this many patterns to the side
/// searcher: all of them fit in Teddy, which ran as fast with 55 patterns (five times
/// OONI's body set, scanned at step 4 before quads) as with 27.
const SIDE_MAX: usize = PACKED_MAX;

/// One anchor in a bucket.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    /// The window as read from a haystack (little-endian `u64`), or `quad_key` of the
    /// quad.
    gram: u64,
    /// The pattern's index in the list given to `new`.
    pattern: u32,
    /// Where the window starts in the pattern.
    offset: u32,
}

/// Patterns too short to be anchored at every `step`.
#[derive(Debug)]
enum Side {
    /// Teddy over a piece of each (from its rarest 4-byte window to its end): at the
    /// leftmost start of any piece, every pattern is compared where its piece would
    /// start there.
    Packed(packed::Searcher),
    /// The whole patterns, when there are too many for Teddy or it is unavailable.
    Automaton(AhoCorasick),
}

/// The anchors of one window length and the bit tables that sift the windows read.
#[derive(Debug)]
struct Table {
    /// `filter.len() - 1` (a power of two minus one).
    mask: usize,
    /// For each anchor window: bit `bit` of word `word & mask`, where
    /// `(word, bit) = hash(window)`.
    filter: Box<[u64]>,
    /// A second bit table of the same size, by other bits of the same product
    /// (`confirm_hash`), tested before the buckets: most windows that hit `filter` by
    /// a hash collision stop there, short of a cache miss in `starts` or `anchors`.
    confirm: Box<[u64]>,
    /// The bucket of a window whose bit is `h` (`64 * word + bit`): `h >> bucket_shift`.
    bucket_shift: u32,
    /// Bucket `b`'s anchors are `anchors[starts[b]..starts[b + 1]]`.
    starts: Box<[u32]>,
    anchors: Box<[Anchor]>,
}

/// A table's bit filter, sliced to `mask + 1` words so that `& mask` needs no bounds
/// check.
#[derive(Clone, Copy)]
struct Sieve<'a> {
    filter: &'a [u64],
    mask: usize,
}

impl Sieve<'_> {
    #[inline(always)]
    fn bit(self, window: u64) -> u32 {
        let (word, bit) = hash(window);
        (self.filter[word & self.mask] >> bit) as u32 & 1
    }
}

/// The bit of `window` in a table of `mask + 1` words, numbered `64 * word + bit`: the
/// bit `Sieve::bit` tests, and the order of buckets.
#[inline(always)]
fn slot(mask: usize, window: u64) -> usize {
    let (word, bit) = hash(window);
    ((word & mask) << 6) | bit as usize
}

impl Table {
    fn new(mut anchors: Vec<Anchor>) -> Table {
        // About one bit in 64 set. No anchors (the quads of most sets, and of most
        // header scans): one word, never looked up.
        let mut grams: Vec<u64> = anchors.iter().map(|a| a.gram).collect();
        grams.sort_unstable();
        grams.dedup();
        let filter_bits = if grams.is_empty() {
            6
        } else {
            (grams.len() * 64)
                .next_power_of_two()
                .trailing_zeros()
                .clamp(MIN_FILTER_BITS, MAX_FILTER_BITS)
        };
        let mask = (1usize << (filter_bits - 6)) - 1;
        let mut filter = vec![0u64; mask + 1].into_boxed_slice();
        let mut confirm = vec![0u64; mask + 1].into_boxed_slice();
        for &g in &grams {
            let h = slot(mask, g);
            filter[h >> 6] |= 1 << (h & 63);
            let (word, bit) = confirm_hash(g);
            confirm[word & mask] |= 1 << bit;
        }
        // About one bucket per distinct window, by the top bits of the window's bit.
        let bucket_bits = grams
            .len()
            .max(1)
            .next_power_of_two()
            .trailing_zeros()
            .min(filter_bits);
        let bucket_shift = filter_bits - bucket_bits;
        let bucket = |g: u64| slot(mask, g) >> bucket_shift;
        anchors.sort_by_key(|a| (bucket(a.gram), a.gram, a.pattern));
        let mut starts = vec![0u32; (1 << bucket_bits) + 1];
        for a in &anchors {
            starts[bucket(a.gram) + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        Table {
            mask,
            filter,
            confirm,
            bucket_shift,
            starts: starts.into_boxed_slice(),
            anchors: anchors.into_boxed_slice(),
        }
    }

    #[inline(always)]
    fn sieve(&self) -> Sieve<'_> {
        Sieve {
            filter: &self.filter[..=self.mask],
            mask: self.mask,
        }
    }

    /// The anchors whose window is `gram`, past the confirm table.
    #[inline(always)]
    fn anchored(&self, gram: u64) -> &[Anchor] {
        let (word, bit) = confirm_hash(gram);
        if (self.confirm[word & self.mask] >> bit) & 1 == 0 {
            return &[];
        }
        let b = slot(self.mask, gram) >> self.bucket_shift;
        &self.anchors[self.starts[b] as usize..self.starts[b + 1] as usize]
    }
}

/// Patterns this long or longer are anchored on 8-byte windows.
const GRAM_MIN: usize = GRAM + GRAM - 1;

/// Patterns shorter than this go to the side searcher at `step`.
fn side_below(step: usize) -> usize {
    step + QUAD - 1
}

/// A compiled set of literal patterns; see the module comment.
#[derive(Debug)]
pub struct LiteralScan {
    /// Quads read: one every `step` bytes.
    step: usize,
    /// Anchors on 8-byte windows.
    grams: Table,
    /// Anchors on quads (`quad_key`).
    quads: Table,
    /// Every pattern's bytes, one after another; see `pattern`.
    bytes: Box<[u8]>,
    spans: Box<[(u32, u32)]>,
    /// The patterns too short to anchor: (index, offset of the piece searched for).
    side: Box<[(u32, u32)]>,
    side_searcher: Option<Side>,
    /// Empty patterns: they occur in every haystack.
    empty: Box<[u32]>,
}

/// How rare byte `b` is in HTML and text, in quarter bits (about `-4 * log2(p)`): a
/// static guess, used only to pick anchors, so it need not be exact.
const fn rarity(b: u8) -> u32 {
    match b {
        b' ' => 12,
        b'e' | b't' | b'a' | b'o' | b'i' | b'n' | b's' | b'r' => 18,
        b'l' | b'c' | b'd' | b'h' | b'u' | b'm' | b'p' => 22,
        b'<' | b'>' | b'"' | b'=' | b'/' | b'\n' => 22,
        b'f' | b'g' | b'w' | b'y' | b'b' | b'v' | b'.' | b'-' => 26,
        b'0' | b'1' | b'2' => 27,
        b'\t' | b'\r' | b':' | b';' | b'_' | b',' | b'#' | b'\'' | b'(' | b')' | b'{' | b'}' => 30,
        b'k' | b'x' | b'&' | b'3'..=b'9' => 31,
        b'j' | b'q' | b'z' => 35,
        b'A' | b'B' | b'C' | b'D' | b'E' | b'F' | b'I' | b'L' | b'M' | b'N' | b'O' | b'P'
        | b'R' | b'S' | b'T' => 35,
        b'!' | b'?' | b'%' | b'+' | b'[' | b']' | b'*' | b'|' | b'@' | b'$' => 36,
        b'A'..=b'Z' | b'\\' | b'^' | b'`' | b'~' => 40,
        // UTF-8: Cyrillic lower-case continuation bytes and the leads of Cyrillic and
        // of the three-byte scripts are the common ones.
        0x80..=0x8F | 0xB0..=0xBF => 34,
        0x90..=0xAF => 38,
        0xD0 | 0xD1 | 0xE0..=0xEF => 34,
        0xC2..=0xCF | 0xD2..=0xDF | 0xF0..=0xF4 => 40,
        // Other controls and bytes that are never UTF-8.
        _ => 48,
    }
}

/// Words of HTML, CSS, JavaScript, URLs and English that are far more common than
/// their bytes suggest: a window inside one of them makes a poor anchor.
#[rustfmt::skip]
const COMMON: &[&str] = &[
    "http://", "https://", "www.", ".com", ".net", ".org", ".php", ".html", ".htm",
    ".jsp", ".js?", ".js\"", ".css", ".jpg", ".png", ".gif", ".svg", "<!--", "-->",
    "<!DOCTYPE", "<html", "</html>", "<head>", "</head>", "<body", "</body>", "<title>",
    "</title>", "<meta", "<link", "<script", "</script>", "<style", "</style>", "<div",
    "</div>", "<span", "</span>", "<p>", "</p>", "<a href=\"", "</a>", "<img", "<br",
    "<li>", "</li>", "<ul", "</ul>", "<table", "<td", "</td>", "<tr", "</tr>", "<input",
    "<form", "<button", "<iframe", "<center>", "</center>", "<h1>", "</h1>", "class=\"",
    "style=\"", "type=\"", "text/javascript", "text/css", "content=\"", "name=\"",
    "charset", "utf-8", "UTF-8", "width", "height", "margin", "padding", "border",
    "color", "background", "font-", "display", "block", "blank", "none", "flex",
    "position", "absolute", "relative", "-webkit-", "transform", "important", "center",
    "function", "return", "document", "window", "true", "false", "null", "undefined",
    "the ", " the", " and ", " to ", " of ", "tion", "ing ", "ment", "this", "that",
    "with", "have", "from", "page", "here",
];

/// The 4-byte windows of `COMMON`.
fn common_quads() -> HashSet<[u8; 4]> {
    COMMON
        .iter()
        .flat_map(|w| w.as_bytes().windows(4).map(|q| [q[0], q[1], q[2], q[3]]))
        .collect()
}

/// The rarity score of each 4-byte window of `pat`: the sum of its bytes' rarities,
/// halved if the window is common. An 8-byte window scores the sum of its five.
fn quad_scores(pat: &[u8], common: &HashSet<[u8; 4]>) -> Vec<u32> {
    pat.windows(4)
        .map(|q| {
            let s: u32 = q.iter().map(|&b| rarity(b)).sum();
            if common.contains(q) {
                s / 2
            } else {
                s
            }
        })
        .collect()
}

/// Where `window` falls in the bit table: the word (before masking) from the high half
/// of the product, the bit from the top of the low half. Neither needs a variable
/// shift, and the word only a mask.
#[inline(always)]
fn hash(window: u64) -> (usize, u32) {
    let p = u128::from(window) * u128::from(HASH_MUL);
    ((p >> 64) as usize, ((p as u64) >> 58) as u32)
}

/// As `hash`, for the `confirm` table: the word from above the bits `hash` takes from
/// the high half (below bit 96: a quad's product has none above), the bit from below
/// those it takes from the low half (they depend on all but a window's top 6 bits).
#[inline(always)]
fn confirm_hash(window: u64) -> (usize, u32) {
    let p = u128::from(window) * u128::from(HASH_MUL);
    ((p >> 81) as usize, ((p as u64) >> 52) as u32 & 63)
}

#[inline(always)]
fn gram_at(bytes: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(bytes[i..i + GRAM].try_into().expect("8 bytes"))
}

/// One bit per pattern: found in this haystack already.
struct Seen<'a>(&'a mut [u64]);

impl Seen<'_> {
    #[inline(always)]
    fn contains(&self, p: usize) -> bool {
        self.0[p / 64] & (1 << (p % 64)) != 0
    }

    #[inline(always)]
    fn insert(&mut self, p: usize) {
        self.0[p / 64] |= 1 << (p % 64);
    }
}

/// The table key of the quad that starts window `w`: its first four bytes.
#[inline(always)]
fn quad_key(w: u64) -> u64 {
    w & 0xFFFF_FFFF
}

/// The `N` bytes of `bytes` from `i`, padded with zeros past its end. A padded window
/// can hit the tables, but no pattern is found in it: every pattern is compared whole
/// against the haystack.
#[inline(always)]
fn padded<const N: usize>(bytes: &[u8], i: usize) -> [u8; N] {
    let rest = bytes.get(i..).unwrap_or(&[]);
    let rest = &rest[..rest.len().min(N)];
    let mut out = [0u8; N];
    out[..rest.len()].copy_from_slice(rest);
    out
}

/// The window at `i`, padded past the end of `bytes` (see `padded`).
#[inline(always)]
fn window_at(bytes: &[u8], i: usize) -> u64 {
    match bytes.get(i..i + GRAM) {
        Some(_) => gram_at(bytes, i),
        None => u64::from_le_bytes(padded(bytes, i)),
    }
}

/// The windows of `chunk` at multiples of `STEP` that hit a table (the gram table at
/// multiples of `GRAM`, the quad table at every one if `QUADS`): bit
/// `CHUNK / STEP - 1 - j` for the window at `j * STEP`.
#[inline(always)]
fn chunk_hits<const STEP: usize, const QUADS: bool>(
    chunk: &[u8; CHUNK + GRAM - 1],
    grams: Sieve,
    quads: Sieve,
) -> u32 {
    let mut hits = 0;
    for j in 0..CHUNK / STEP {
        let w = gram_at(chunk, j * STEP);
        let mut bit = 0;
        if (j * STEP).is_multiple_of(GRAM) {
            bit |= grams.bit(w);
        }
        if QUADS {
            bit |= quads.bit(quad_key(w));
        }
        hits = (hits << 1) | bit;
    }
    hits
}

impl LiteralScan {
    /// Compiles `patterns`; matches report indices into this list. Duplicates are
    /// allowed (each index is reported).
    pub fn new<P: AsRef<[u8]>>(patterns: &[P]) -> LiteralScan {
        let side = |step: usize| {
            patterns
                .iter()
                .filter(|p| (1..side_below(step)).contains(&p.as_ref().len()))
                .count()
        };
        let step = [8, 4, 2]
            .into_iter()
            .find(|&s| side(s) <= SIDE_MAX)
            .unwrap_or(1);
        LiteralScan::with_step(patterns, step)
    }

    /// As `new`, reading quads every `step` bytes (1, 2, 4 or 8); patterns shorter
    /// than `step + 3` bytes go to the side searcher. For tests and benchmarks: `new`
    /// picks the step.
    pub fn with_step<P: AsRef<[u8]>>(patterns: &[P], step: usize) -> LiteralScan {
        assert!(matches!(step, 1 | 2 | 4 | 8), "step is 1, 2, 4 or 8");
        assert!(
            u32::try_from(patterns.len()).is_ok(),
            "fewer than 2^32 patterns"
        );
        let common = common_quads();
        let mut bytes = Vec::new();
        let mut spans = Vec::with_capacity(patterns.len());
        let (mut gram_anchors, mut quad_anchors) = (Vec::new(), Vec::new());
        let (mut side_pieces, mut side, mut empty) = (Vec::new(), Vec::new(), Vec::new());
        for (p, pat) in patterns.iter().enumerate() {
            let pat = pat.as_ref();
            let start = u32::try_from(bytes.len()).expect("patterns total under 4 GiB");
            let len = u32::try_from(pat.len()).expect("patterns total under 4 GiB");
            spans.push((start, len));
            bytes.extend_from_slice(pat);
            if pat.is_empty() {
                empty.push(p as u32);
                continue;
            }
            let quad_scores = quad_scores(pat, &common);
            if pat.len() < side_below(step) {
                // The packed searcher looks for the pattern from its rarest 4-byte
                // window on (its first bytes sift the candidates).
                let offset = (0..quad_scores.len())
                    .rev()
                    .max_by_key(|&i| quad_scores[i])
                    .unwrap_or(0);
                side_pieces.push(&pat[offset..]);
                side.push((p as u32, offset as u32));
                continue;
            }
            // One anchor per offset class modulo the step its table is read at: the
            // rarest window, the first of equals. A window's score is that of its quads.
            let (width, every, anchors) = if pat.len() >= GRAM_MIN {
                (GRAM, GRAM, &mut gram_anchors)
            } else {
                (QUAD, step, &mut quad_anchors)
            };
            let score = |i: usize| quad_scores[i..=i + width - QUAD].iter().sum::<u32>();
            for class in 0..every {
                let offset = (class..pat.len() - width + 1)
                    .step_by(every)
                    .rev()
                    .max_by_key(|&i| score(i))
                    .expect("pattern has a window in every class");
                let w = window_at(&pat[..offset + width], offset);
                anchors.push(Anchor {
                    // A quad's window is padded past the pattern's piece.
                    gram: if width == GRAM { w } else { quad_key(w) },
                    pattern: p as u32,
                    offset: offset as u32,
                });
            }
        }
        // Past 16 patterns, Teddy's 8 buckets let through too many candidates: fat
        // Teddy (16 buckets, AVX2) is faster then, if the machine has it.
        let teddy = |fat: Option<bool>| {
            packed::Config::new()
                .match_kind(packed::MatchKind::LeftmostFirst)
                .only_teddy_fat(fat)
                .builder()
                .extend(&side_pieces)
                .build()
        };
        let packed = match side.len() {
            0 => None,
            1..=16 => teddy(None),
            17..=PACKED_MAX => teddy(Some(true)).or_else(|| teddy(None)),
            _ => None,
        };
        let searcher = match packed {
            Some(searcher) => Some(Side::Packed(searcher)),
            None if side.is_empty() => None,
            None => {
                // Whole patterns, overlapping matches.
                side.iter_mut().for_each(|s| s.1 = 0);
                let whole = side.iter().map(|&(p, _)| &patterns[p as usize]);
                Some(Side::Automaton(
                    AhoCorasick::new(whole).expect("literals always compile"),
                ))
            }
        };
        LiteralScan {
            step,
            grams: Table::new(gram_anchors),
            quads: Table::new(quad_anchors),
            bytes: bytes.into_boxed_slice(),
            spans: spans.into_boxed_slice(),
            side: side.into_boxed_slice(),
            side_searcher: searcher,
            empty: empty.into_boxed_slice(),
        }
    }

    /// Quads are read every `step` bytes (when any pattern is anchored on them; windows
    /// every 8 bytes in any case).
    pub fn step(&self) -> usize {
        self.step
    }

    /// The number of patterns given to `new`.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The bytes of pattern `p`.
    pub fn pattern(&self, p: usize) -> &[u8] {
        let (start, len) = self.spans[p];
        &self.bytes[start as usize..][..len as usize]
    }

    /// Calls `found` once with the index of each pattern that occurs in `hay`, in no
    /// particular order.
    pub fn find_each(&self, hay: &[u8], mut found: impl FnMut(usize)) {
        let words = self.len().div_ceil(64);
        let mut on_stack = [0u64; 32];
        let mut on_heap = Vec::new();
        let seen = if words <= on_stack.len() {
            &mut on_stack[..words]
        } else {
            on_heap.resize(words, 0u64);
            &mut on_heap[..]
        };
        let mut seen = Seen(seen);
        for &p in self.empty.iter() {
            found(p as usize);
        }
        if let Some(side) = &self.side_searcher {
            self.find_side(side, hay, &mut seen, &mut found);
        }
        let (seen, found) = (&mut seen, &mut found);
        // Without quads, only windows at multiples of 8 are read.
        match (self.step, self.quads.anchors.is_empty()) {
            (_, true) if self.grams.anchors.is_empty() => {}
            (_, true) => self.scan::<8, false>(hay, seen, found),
            (1, false) => self.scan::<1, true>(hay, seen, found),
            (2, false) => self.scan::<2, true>(hay, seen, found),
            (4, false) => self.scan::<4, true>(hay, seen, found),
            (_, false) => self.scan::<8, true>(hay, seen, found),
        }
    }

    fn find_side(&self, side: &Side, hay: &[u8], seen: &mut Seen, found: &mut impl FnMut(usize)) {
        let mut left = self.side.len();
        match side {
            Side::Packed(searcher) => {
                let mut at = 0;
                while let Some(m) = searcher.find_in(hay, Span::from(at..hay.len())) {
                    // The leftmost start of any piece: compare every pattern there.
                    for &(p, offset) in self.side.iter() {
                        let p = p as usize;
                        let Some(start) = m.start().checked_sub(offset as usize) else {
                            continue;
                        };
                        if !seen.contains(p) && hay[start..].starts_with(self.pattern(p)) {
                            seen.insert(p);
                            found(p);
                            left -= 1;
                        }
                    }
                    if left == 0 {
                        return;
                    }
                    at = m.start() + 1;
                }
            }
            Side::Automaton(automaton) => {
                for m in automaton.find_overlapping_iter(hay) {
                    let p = self.side[m.pattern().as_usize()].0 as usize;
                    if !seen.contains(p) {
                        seen.insert(p);
                        found(p);
                        left -= 1;
                        if left == 0 {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The anchored patterns: the windows at multiples of `STEP` (see `chunk_hits`).
    /// The loop has no branch on the bit tables: each chunk's bits make a mask, stored in `cand` with
    /// the chunk's position and kept (`n` moves on) only if not zero; the kept
    /// chunks are verified in batches.
    #[inline(always)]
    fn scan<const STEP: usize, const QUADS: bool>(
        &self,
        hay: &[u8],
        seen: &mut Seen,
        found: &mut impl FnMut(usize),
    ) {
        let (grams, quads) = (self.grams.sieve(), self.quads.sieve());
        let mut cand = [(0usize, 0u32); CANDIDATES];
        let mut n = 0;
        let mut i = 0;
        while let Some(chunk) = hay.get(i..i + CHUNK + GRAM - 1) {
            let chunk: &[u8; CHUNK + GRAM - 1] = chunk.try_into().expect("length checked");
            cand[n] = (i, chunk_hits::<STEP, QUADS>(chunk, grams, quads));
            n += usize::from(cand[n].1 != 0);
            if n == CANDIDATES {
                self.verify::<STEP, QUADS>(hay, &cand, seen, found);
                n = 0;
            }
            i += CHUNK;
        }
        // The last windows, padded with zeros: one chunk of windows `i..i + CHUNK`,
        // and with quads a second, for a quad may still start at `i + CHUNK` to
        // `i + CHUNK + 2`.
        self.verify::<STEP, QUADS>(hay, &cand[..n], seen, found);
        let tails = if QUADS { 2 } else { 1 };
        let mut tail = [(0usize, 0u32); 2];
        let mut n = 0;
        for k in 0..tails {
            let at = i + k * CHUNK;
            if at + if QUADS { QUAD } else { GRAM } > hay.len() {
                break;
            }
            let chunk = padded::<{ CHUNK + GRAM - 1 }>(hay, at);
            tail[n] = (at, chunk_hits::<STEP, QUADS>(&chunk, grams, quads));
            n += 1;
        }
        self.verify::<STEP, QUADS>(hay, &tail[..n], seen, found);
    }

    /// In each chunk of `chunks`, the windows whose bits are set hit a table: compare
    /// the patterns anchored on them.
    #[inline(never)]
    fn verify<const STEP: usize, const QUADS: bool>(
        &self,
        hay: &[u8],
        chunks: &[(usize, u32)],
        seen: &mut Seen,
        found: &mut impl FnMut(usize),
    ) {
        for &(at, mut hits) in chunks {
            while hits != 0 {
                let pos = at + (CHUNK / STEP - 1 - hits.trailing_zeros() as usize) * STEP;
                hits &= hits - 1;
                let w = window_at(hay, pos);
                if pos.is_multiple_of(GRAM) {
                    self.compare(self.grams.anchored(w), w, hay, pos, seen, found);
                }
                if QUADS {
                    let q = quad_key(w);
                    self.compare(self.quads.anchored(q), q, hay, pos, seen, found);
                }
            }
        }
    }

    /// Compares each pattern anchored on window `gram` at `pos` of `hay`.
    #[inline(always)]
    fn compare(
        &self,
        anchors: &[Anchor],
        gram: u64,
        hay: &[u8],
        pos: usize,
        seen: &mut Seen,
        found: &mut impl FnMut(usize),
    ) {
        for a in anchors {
            if a.gram != gram {
                continue;
            }
            let p = a.pattern as usize;
            if seen.contains(p) {
                continue;
            }
            let Some(start) = pos.checked_sub(a.offset as usize) else {
                continue;
            };
            let pat = self.pattern(p);
            if hay.get(start..start + pat.len()) == Some(pat) {
                seen.insert(p);
                found(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// xorshift64*: deterministic, no crate.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len())]
        }
    }

    /// What the old scan reported: the patterns Aho-Corasick finds with overlapping
    /// search (duplicates are one automaton pattern, mapped back to every index).
    fn expected(patterns: &[Vec<u8>], hay: &[u8]) -> BTreeSet<usize> {
        let distinct: Vec<&Vec<u8>> = patterns
            .iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut out = BTreeSet::new();
        if distinct.is_empty() {
            return out;
        }
        let ac = AhoCorasick::new(&distinct).unwrap();
        let hit: BTreeSet<&Vec<u8>> = ac
            .find_overlapping_iter(hay)
            .map(|m| distinct[m.pattern().as_usize()])
            .collect();
        for (i, p) in patterns.iter().enumerate() {
            if hit.contains(p) {
                out.insert(i);
            }
        }
        out
    }

    fn found(scan: &LiteralScan, hay: &[u8]) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        scan.find_each(hay, |p| {
            assert!(out.insert(p), "pattern {p} reported twice")
        });
        out
    }

    /// Every step, and the one `new` picks, agree with Aho-Corasick.
    fn check(patterns: &[Vec<u8>], hays: &[Vec<u8>], what: &str) {
        let scans = [
            LiteralScan::new(patterns),
            LiteralScan::with_step(patterns, 1),
            LiteralScan::with_step(patterns, 2),
            LiteralScan::with_step(patterns, 4),
            LiteralScan::with_step(patterns, 8),
        ];
        for hay in hays {
            let want = expected(patterns, hay);
            for scan in &scans {
                assert_eq!(
                    found(scan, hay),
                    want,
                    "{what}: step {}, haystack {:?}, patterns {:?}",
                    scan.step,
                    String::from_utf8_lossy(hay),
                    patterns
                        .iter()
                        .map(|p| String::from_utf8_lossy(p))
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    #[test]
    fn random_sets_agree_with_aho_corasick() {
        let mut rng = Rng(0x0DDB_1A5E_5BAD_5EED);
        let alphabets: [&[u8]; 6] = [
            b"ab",
            b"abc",
            b"<a> ",
            "aé".as_bytes(),
            "<p>Доступ ".as_bytes(),
            &[],
        ];
        let full: Vec<u8> = (0..=255).collect();
        for trial in 0..600 {
            let alphabet = match *rng.pick(&alphabets) {
                [] => &full[..],
                a => a,
            };
            let gen = |rng: &mut Rng, len: usize| -> Vec<u8> {
                (0..len).map(|_| *rng.pick(alphabet)).collect()
            };
            let hay_len = *rng.pick(&[
                0, 1, 2, 3, 4, 7, 8, 9, 15, 23, 24, 36, 37, 38, 40, 70, 100, 300, 2000,
            ]);
            let hays: Vec<Vec<u8>> = (0..4).map(|_| gen(&mut rng, hay_len)).collect();
            let count = *rng.pick(&[1, 2, 5, 20, 40, 80]);
            let mut patterns: Vec<Vec<u8>> = Vec::new();
            for _ in 0..count {
                let len = *rng.pick(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 14, 15, 16, 30, 120]);
                let p = match rng.below(6) {
                    // A piece of a haystack: at its start, its end, or anywhere.
                    0 | 1 if hay_len > 0 => {
                        let hay = rng.pick(&hays);
                        let len = len.min(hay.len());
                        let at = match rng.below(3) {
                            0 => 0,
                            1 => hay.len() - len,
                            _ => rng.below(hay.len() - len + 1),
                        };
                        hay[at..at + len].to_vec()
                    }
                    // A prefix or a suffix of an earlier pattern, or a repeat.
                    2 if !patterns.is_empty() => {
                        let q = rng.pick(&patterns).clone();
                        let len = len.min(q.len());
                        match rng.below(3) {
                            0 => q[..len].to_vec(),
                            1 => q[q.len() - len..].to_vec(),
                            _ => q,
                        }
                    }
                    _ => gen(&mut rng, len),
                };
                if !p.is_empty() {
                    patterns.push(p);
                }
            }
            check(&patterns, &hays, &format!("trial {trial}"));
        }
    }

    #[test]
    fn edges_and_overlaps() {
        let pats = |ps: &[&str]| ps.iter().map(|p| p.as_bytes().to_vec()).collect::<Vec<_>>();
        let hays = |hs: &[&str]| hs.iter().map(|h| h.as_bytes().to_vec()).collect::<Vec<_>>();
        // Empty, short and exactly-one-pattern haystacks; matches at both ends.
        check(
            &pats(&[
                "a",
                "ab",
                "abc",
                "abcd",
                "abcdefgh",
                "abcdefghijk",
                "hijk",
                "k",
            ]),
            &hays(&[
                "",
                "a",
                "ab",
                "abc",
                "abcd",
                "abcdefgh",
                "abcdefghijk",
                "xabcdefghijk",
            ]),
            "ends",
        );
        // Overlapping occurrences of one pattern and of patterns in one another.
        check(
            &pats(&["aaaaaaaa", "aaaaaaaaa", "aaaaaaaab", "baaaaaaaaaa", "aaab"]),
            &hays(&["aaaaaaaaaaaaaaaaaaaaaaaaaab", "baaaaaaaa", "aaaaaaa", "b"]),
            "overlaps",
        );
        // Without quad anchors the quad table is one word.
        let long = LiteralScan::new(&["a-long-enough-pattern"]);
        assert_eq!((long.quads.filter.len(), long.quads.confirm.len()), (1, 1));
        assert!(long.grams.filter.len() > 1);
        // An empty pattern occurs everywhere, the empty haystack included.
        check(
            &[Vec::new(), b"x".to_vec()],
            &hays(&["", "x", "yyyy"]),
            "empty",
        );
        // Every window of a long haystack hits the bit table: the candidate buffer
        // fills and is flushed many times.
        let long = "a".repeat(5000);
        check(
            &pats(&["aaaaaaaaaaaab", "aaaaaaaaaaaaaaaa", "baaaaaaaaaaaaa"]),
            &[long.clone().into_bytes(), format!("{long}b").into_bytes()],
            "flush",
        );
    }

    #[test]
    fn patterns_at_both_ends_of_every_haystack_length() {
        // Bytes that make every window distinct, so each pattern occurs once. Around
        // every chunk edge (the main loop stops 39 bytes short of the end; a quad may
        // start in the 33rd to 35th byte of the last 39), every pattern length at its
        // start and at its end is found, and one that runs a zero byte past the end
        // (as the padded tail does) is not.
        for hay_len in 0..=80usize {
            let hay: Vec<u8> = (0..hay_len)
                .map(|k| (k as u8).wrapping_mul(37).wrapping_add(1))
                .collect();
            let mut patterns = Vec::new();
            for len in 1..=hay_len.min(20) {
                patterns.push(hay[..len].to_vec());
                patterns.push(hay[hay_len - len..].to_vec());
                let mut past = hay[hay_len - len + 1..].to_vec();
                past.push(0);
                patterns.push(past);
            }
            check(&patterns, &[hay], &format!("{hay_len} bytes"));
        }
    }

    #[test]
    fn many_short_patterns_are_anchored_on_quads() {
        // Eighty patterns of 7 to 10 bytes: too many for the side searcher at step 8,
        // none left to it at step 4.
        let patterns: Vec<Vec<u8>> = (0..80)
            .map(|k| format!("{}-q{k:02}", "blk".repeat(1 + k % 2)).into_bytes())
            .collect();
        let scan = LiteralScan::new(&patterns);
        assert_eq!(scan.step(), 4);
        assert!(scan.side.is_empty());
        // Each pattern at every offset modulo 8 and at the very end, cut short by one
        // byte, and all of them in one haystack.
        let mut hays: Vec<Vec<u8>> = Vec::new();
        for p in &patterns {
            for pad in 0..8 {
                let mut h = b"<p>".repeat(pad);
                h.extend_from_slice(p);
                hays.push(h.clone());
                h.extend_from_slice(b" and some text after it, forty bytes long.");
                hays.push(h);
            }
            hays.push(p[..p.len() - 1].to_vec());
        }
        hays.push(patterns.concat());
        check(&patterns, &hays, "quads");
    }

    #[test]
    fn blockpage_snippets() {
        let patterns: Vec<&str> = vec![
            "<title>Access Denied</title>",
            "<title>Blocked</title>",
            "iframe src=\"http://10.10.",
            "Доступ к сайту ограничен",
            "http://warning.or.kr",
            "has been blocked by the decision dated ",
            "<body id=\"blockpage\">",
            "BUSY",
            "80.216",
            "Ray ID:",
        ];
        let scan = LiteralScan::new(&patterns);
        let found = |hay: &str| {
            let mut v = Vec::new();
            scan.find_each(hay.as_bytes(), |p| v.push(patterns[p]));
            v.sort_unstable();
            v
        };
        let ru = "<html><head><meta charset=\"utf-8\"><title>Blocked</title></head>\n\
                  <body id=\"blockpage\"><h1>Доступ к сайту ограничен</h1>\n\
                  <p>Доступ к сайту ограничен в соответствии с законом</p></body></html>";
        assert_eq!(
            found(ru),
            [
                "<body id=\"blockpage\">",
                "<title>Blocked</title>",
                "Доступ к сайту ограничен"
            ]
        );
        let kr = "<html><head><title>warning</title></head><body>\
                  <iframe src=\"http://warning.or.kr\" width=\"100%\" height=\"100%\"></iframe>\
                  </body></html>";
        assert_eq!(found(kr), ["http://warning.or.kr"]);
        let id = "<iframe src=\"http://10.10.34.35:80\" style=\"width: 100%; height: 100%\">";
        assert_eq!(found(id), ["iframe src=\"http://10.10."]);
        let cf = "<!DOCTYPE html><html><body><p>Performance &amp; security by Cloudflare</p>\
                  <span>Cloudflare Ray ID: 8c1f2e3d4b5a6978</span></body></html>";
        assert_eq!(found(cf), ["Ray ID:"]);
        // Near misses: one byte off, cut at the end, another case.
        assert!(found("<title>Blocked</titl").is_empty());
        assert!(found("<title>blocked</title> busy 80.21 ray id:").is_empty());
        assert_eq!(found("BUSY"), ["BUSY"]);
        assert_eq!(found("x80.216"), ["80.216"]);
        assert!(found("").is_empty());
    }
}
