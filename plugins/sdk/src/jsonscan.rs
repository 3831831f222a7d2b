//! A validating JSON scanner that finds where values begin and end without building
//! them. Strings (most of a measurement's bytes: response bodies, certificates) are
//! crossed eight bytes at a time; everything else one token at a time. Callers parse
//! with `serde_json` only the few small values they need.
//!
//! It accepts exactly what `serde_json` accepts for an already valid UTF-8 text:
//! RFC 8259 grammar, no control characters in strings, valid escapes, nesting up to
//! 128 levels (the limit `serde_json` uses).

use std::fmt;

/// Deepest nesting accepted, as `serde_json`'s recursion limit.
pub const MAX_DEPTH: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    pub what: &'static str,
    pub offset: usize,
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.offset)
    }
}

impl std::error::Error for ScanError {}

pub type Result<T> = std::result::Result<T, ScanError>;

/// A position in a JSON text.
#[derive(Clone)]
pub struct Cursor<'a> {
    b: &'a [u8],
    pub i: usize,
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Bytes of `w` equal to `byte` get their high bit set (SWAR, exact for every byte).
#[inline(always)]
fn eq_mask(w: u64, byte: u8) -> u64 {
    let x = w ^ (LO * byte as u64);
    // x == 0 exactly when ((x & 0x7f) + 0x7f) has no high bit and x has none either.
    !(((x & !HI).wrapping_add(!HI)) | x) & HI
}

/// Bytes of `w` that are `"`, `\` or below 0x20 get their high bit set (SWAR; exact
/// for every byte, so the first flagged byte is the first such byte).
#[inline(always)]
fn specials(w: u64) -> u64 {
    // x < 0x20 exactly when ((x & 0x7f) + 0x60) has no high bit and x has none either.
    let ctl = !(((w & !HI).wrapping_add(LO * 0x60)) | w) & HI;
    eq_mask(w, b'"') | eq_mask(w, b'\\') | ctl
}

impl<'a> Cursor<'a> {
    pub fn new(b: &'a [u8]) -> Cursor<'a> {
        Cursor { b, i: 0 }
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.b
    }

    /// Refuses a container here at `depth` (the containers around it) that serde_json
    /// would refuse: it reads `MAX_DEPTH - 1` levels.
    pub(crate) fn check_depth(&self, depth: usize) -> Result<()> {
        if depth + 1 >= MAX_DEPTH {
            return self.err("nested too deeply");
        }
        Ok(())
    }

    fn err<T>(&self, what: &'static str) -> Result<T> {
        Err(ScanError {
            what,
            offset: self.i,
        })
    }

    #[inline]
    pub fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                break;
            }
            self.i += 1;
        }
    }

    /// The next non-whitespace byte, not consumed.
    #[inline]
    pub fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    /// Consumes `c` (after whitespace) or fails with `what`.
    #[inline]
    pub fn expect(&mut self, c: u8, what: &'static str) -> Result<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            self.err(what)
        }
    }

    /// Fails unless only whitespace is left.
    pub fn end(&mut self) -> Result<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => self.err("trailing characters"),
        }
    }

    /// Crosses a string whose opening quote is at the cursor. Returns the raw text
    /// between the quotes and whether it holds escapes.
    #[inline]
    pub fn string(&mut self) -> Result<(&'a [u8], bool)> {
        let start = self.i + 1;
        let mut i = start;
        let mut escaped = false;
        let b = self.b;
        loop {
            while i + 8 <= b.len() {
                let mut w = [0u8; 8];
                w.copy_from_slice(&b[i..i + 8]);
                let m = specials(u64::from_le_bytes(w));
                if m != 0 {
                    i += (m.trailing_zeros() / 8) as usize;
                    break;
                }
                i += 8;
            }
            match b.get(i) {
                Some(b'"') => {
                    self.i = i + 1;
                    return Ok((&b[start..i], escaped));
                }
                Some(b'\\') => {
                    escaped = true;
                    match b.get(i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                        Some(b'u') => {
                            // As serde_json: a surrogate only as a leading one
                            // escaped right before a trailing one.
                            let unit = match hex4(b, i + 2) {
                                None => {
                                    self.i = i;
                                    return self.err("invalid \\u escape");
                                }
                                Some(0xDC00..=0xDFFF) => None,
                                Some(0xD800..=0xDBFF) => {
                                    let next = (b.get(i + 6..i + 8) == Some(b"\\u"))
                                        .then(|| hex4(b, i + 8))
                                        .flatten();
                                    next.filter(|n| (0xDC00..=0xDFFF).contains(n)).map(|_| 12)
                                }
                                Some(_) => Some(6),
                            };
                            match unit {
                                Some(len) => i += len,
                                None => {
                                    self.i = i;
                                    return self.err("lone surrogate in a \\u escape");
                                }
                            }
                        }
                        _ => {
                            self.i = i;
                            return self.err("invalid escape");
                        }
                    }
                }
                Some(&c) if c < 0x20 => {
                    self.i = i;
                    return self.err("control character in a string");
                }
                Some(_) => i += 1,
                None => {
                    self.i = i;
                    return self.err("unterminated string");
                }
            }
        }
    }

    fn number(&mut self) -> Result<()> {
        let b = self.b;
        let mut i = self.i;
        let digits = |i: &mut usize| {
            let s = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i - s
        };
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                digits(&mut i);
            }
            _ => {
                self.i = i;
                return self.err("invalid number");
            }
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            if digits(&mut i) == 0 {
                self.i = i;
                return self.err("invalid number");
            }
        }
        let mut exponent_digits = 0;
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            exponent_digits = digits(&mut i);
            if exponent_digits == 0 {
                self.i = i;
                return self.err("invalid number");
            }
        }
        // Only a long number or one with an exponent can overflow a double, which
        // `serde_json` refuses; the grammar above makes the text a valid float.
        if i - self.i > 300 || exponent_digits > 0 {
            let text = std::str::from_utf8(&b[self.i..i]).unwrap_or("");
            if !text.parse::<f64>().is_ok_and(f64::is_finite) {
                return self.err("number out of range");
            }
        }
        self.i = i;
        Ok(())
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<()> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            self.err("invalid literal")
        }
    }

    /// Crosses one value (after whitespace). Returns the byte it started with.
    pub fn skip_value(&mut self) -> Result<u8> {
        self.skip_at_depth(0)
    }

    fn skip_at_depth(&mut self, depth: usize) -> Result<u8> {
        let Some(c) = self.peek() else {
            return self.err("expected a value");
        };
        match c {
            b'"' => {
                self.string()?;
            }
            b'{' => {
                self.check_depth(depth)?;
                self.object(|_, _, cur| cur.skip_at_depth(depth + 1).map(drop))?
            }
            b'[' => {
                self.check_depth(depth)?;
                self.array(|cur| cur.skip_at_depth(depth + 1).map(drop))?
            }
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => self.literal(b"null")?,
            b'-' | b'0'..=b'9' => self.number()?,
            _ => return self.err("expected a value"),
        }
        Ok(c)
    }

    /// Crosses one value without validating it, for texts already validated (uploads
    /// are checked whole before they are acknowledged). Objects and arrays are crossed
    /// 64 bytes at a time: only brackets outside strings are counted.
    pub fn skip_trusted(&mut self) -> Result<()> {
        match self.peek() {
            Some(b'{' | b'[') => self.skip_container(),
            Some(b'"') => self.skip_string_trusted(),
            _ => self.skip_value().map(drop),
        }
    }

    /// Crosses a string whose `"` is at the cursor, 64 bytes at a time: in a valid
    /// text it ends at the first quote no backslash escapes. Pages and echoed
    /// requests (most of a measurement's bytes) are strings full of `\"` and `\n`,
    /// which the validating walk crosses one escape at a time.
    fn skip_string_trusted(&mut self) -> Result<()> {
        let b = self.b;
        let mut pos = self.i + 1;
        let mut escape_carry = 0u64;
        loop {
            if pos >= b.len() {
                return Err(self.at(b.len(), "unterminated string"));
            }
            let mut tail = [b' '; 64];
            let m = masks(block_at(b, pos, &mut tail));
            let end = m.quote & !escaped_chars(m.backslash, &mut escape_carry);
            if end != 0 {
                self.i = pos + end.trailing_zeros() as usize + 1;
                return Ok(());
            }
            pos += 64;
        }
    }

    fn skip_container(&mut self) -> Result<()> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
        {
            // SAFETY: both features were just detected on this CPU.
            return unsafe { self.skip_container_avx2() };
        }
        skip_blocks!(self, masks, prefix_xor)
    }

    /// The same walk with 32-byte compares and a carry-less multiply for the
    /// prefix XOR.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,pclmulqdq")]
    unsafe fn skip_container_avx2(&mut self) -> Result<()> {
        skip_blocks!(self, masks_avx2, prefix_xor_clmul)
    }

    fn at(&self, offset: usize, what: &'static str) -> ScanError {
        ScanError { what, offset }
    }

    /// Walks an array whose `[` is next, calling `element(cursor)` with the cursor
    /// before each element; `element` must cross it.
    pub fn array(&mut self, mut element: impl FnMut(&mut Cursor<'a>) -> Result<()>) -> Result<()> {
        self.expect(b'[', "expected an array")?;
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            element(self)?;
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return self.err("expected `,` or `]`"),
            }
        }
    }

    /// Walks an object whose `{` is next, calling `member(key, has_escapes, cursor)`
    /// with the cursor before each value; `member` must cross the value.
    pub fn object(
        &mut self,
        mut member: impl FnMut(&'a [u8], bool, &mut Cursor<'a>) -> Result<()>,
    ) -> Result<()> {
        self.expect(b'{', "expected an object")?;
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return self.err("expected a key");
            }
            let (key, esc) = self.string()?;
            self.expect(b':', "expected `:`")?;
            self.ws();
            member(key, esc, self)?;
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return self.err("expected `,` or `}`"),
            }
        }
    }
}

/// Bit masks of one 64-byte block: bit k is byte k.
/// The walk of `skip_container`: 64 bytes at a time, the structure found from bit
/// masks (`$masks`), strings by a prefix XOR of their unescaped quotes (`$pxor`), and
/// brackets counted outside them. A macro so that each instance is compiled with its
/// caller's target features.
macro_rules! skip_blocks {
    ($cur:ident, $masks:ident, $pxor:ident) => {{
        let b = $cur.b;
        let mut pos = $cur.i;
        let mut depth: u32 = 0;
        // All ones when the block starts inside a string.
        let mut in_string: u64 = 0;
        // 1 when the block's first character is escaped.
        let mut escape_carry: u64 = 0;
        loop {
            if pos >= b.len() {
                break Err($cur.at(b.len(), "unterminated object or array"));
            }
            let mut tail = [b' '; 64];
            let m = $masks(block_at(b, pos, &mut tail));
            let escaped = escaped_chars(m.backslash, &mut escape_carry);
            let inside = $pxor(m.quote & !escaped) ^ in_string;
            in_string = 0u64.wrapping_sub(inside >> 63);
            let open = m.open & !inside;
            let close = m.close & !inside;
            if depth > close.count_ones() {
                depth = depth + open.count_ones() - close.count_ones();
            } else {
                let mut s = open | close;
                let mut end = None;
                while s != 0 {
                    let p = s.trailing_zeros();
                    if open >> p & 1 == 1 {
                        depth += 1;
                    } else {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            end = Some(pos + p as usize + 1);
                            break;
                        }
                    }
                    s &= s - 1;
                }
                if let Some(e) = end {
                    $cur.i = e;
                    break Ok(());
                }
            }
            pos += 64;
        }
    }};
}
use skip_blocks;

/// The 64 bytes at `pos` (`pos < b.len()`), the last ones padded with spaces in `tail`.
#[inline(always)]
fn block_at<'t>(b: &'t [u8], pos: usize, tail: &'t mut [u8; 64]) -> &'t [u8; 64] {
    match b.get(pos..pos + 64).and_then(|s| s.try_into().ok()) {
        Some(s) => s,
        None => {
            tail[..b.len() - pos].copy_from_slice(&b[pos..]);
            tail
        }
    }
}

/// The characters of a block escaped by a backslash, without a loop over runs of
/// backslashes: a run escapes the character after it when its length is odd.
/// `carry` is 1 when the block's first character is escaped, and is set for the next.
#[inline(always)]
fn escaped_chars(backslash: u64, carry: &mut u64) -> u64 {
    const EVEN: u64 = 0x5555_5555_5555_5555;
    let backslash = backslash & !*carry;
    let follows_backslash = (backslash << 1) | *carry;
    // Runs that start on an odd position; adding the backslashes carries each run's
    // start bit to just past its end, flipping the parity pattern there.
    let odd_starts = backslash & !EVEN & !follows_backslash;
    let (even_runs, overflow) = odd_starts.overflowing_add(backslash);
    *carry = u64::from(overflow);
    let invert = even_runs << 1;
    (EVEN ^ invert) & follows_backslash
}

struct Masks {
    quote: u64,
    backslash: u64,
    open: u64,
    close: u64,
}

/// Bit k of the result is the XOR of bits 0..=k of `x`: set between an opening quote
/// (included) and its closing quote (excluded).
#[inline(always)]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn masks(block: &[u8; 64]) -> Masks {
    use std::arch::x86_64::*;
    let (mut quote, mut backslash, mut open, mut close) = (0u64, 0u64, 0u64, 0u64);
    // SAFETY: SSE2 is part of the x86_64 baseline; each unaligned 16-byte load reads
    // inside the 64-byte array.
    unsafe {
        let q = _mm_set1_epi8(b'"' as i8);
        let bs = _mm_set1_epi8(b'\\' as i8);
        let lower = _mm_set1_epi8(0x20);
        // `{` 0x7b and `[` 0x5b (`}` 0x7d and `]` 0x5d) differ only in bit 0x20.
        let o = _mm_set1_epi8(b'{' as i8);
        let c = _mm_set1_epi8(b'}' as i8);
        for k in 0..4 {
            let v = _mm_loadu_si128(block.as_ptr().add(16 * k) as *const __m128i);
            let folded = _mm_or_si128(v, lower);
            let bits = |x: __m128i| (_mm_movemask_epi8(x) as u16 as u64) << (16 * k);
            quote |= bits(_mm_cmpeq_epi8(v, q));
            backslash |= bits(_mm_cmpeq_epi8(v, bs));
            open |= bits(_mm_cmpeq_epi8(folded, o));
            close |= bits(_mm_cmpeq_epi8(folded, c));
        }
    }
    Masks {
        quote,
        backslash,
        open,
        close,
    }
}

/// `prefix_xor` as one carry-less multiplication by all ones.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "pclmulqdq")]
fn prefix_xor_clmul(x: u64) -> u64 {
    use std::arch::x86_64::*;
    let product = _mm_clmulepi64_si128(_mm_set_epi64x(0, x as i64), _mm_set1_epi8(-1), 0);
    _mm_cvtsi128_si64(product) as u64
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
fn masks_avx2(block: &[u8; 64]) -> Masks {
    use std::arch::x86_64::*;
    let (mut quote, mut backslash, mut open, mut close) = (0u64, 0u64, 0u64, 0u64);
    let q = _mm256_set1_epi8(b'"' as i8);
    let bs = _mm256_set1_epi8(b'\\' as i8);
    let lower = _mm256_set1_epi8(0x20);
    let o = _mm256_set1_epi8(b'{' as i8);
    let c = _mm256_set1_epi8(b'}' as i8);
    for k in 0..2 {
        // SAFETY: an unaligned 32-byte load inside the 64-byte array.
        let v = unsafe { _mm256_loadu_si256(block.as_ptr().add(32 * k) as *const __m256i) };
        let folded = _mm256_or_si256(v, lower);
        let bits = |x: __m256i| (_mm256_movemask_epi8(x) as u32 as u64) << (32 * k);
        quote |= bits(_mm256_cmpeq_epi8(v, q));
        backslash |= bits(_mm256_cmpeq_epi8(v, bs));
        open |= bits(_mm256_cmpeq_epi8(folded, o));
        close |= bits(_mm256_cmpeq_epi8(folded, c));
    }
    Masks {
        quote,
        backslash,
        open,
        close,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn masks(block: &[u8; 64]) -> Masks {
    let mut m = Masks {
        quote: 0,
        backslash: 0,
        open: 0,
        close: 0,
    };
    for (k, &c) in block.iter().enumerate() {
        let bit = 1u64 << k;
        match c {
            b'"' => m.quote |= bit,
            b'\\' => m.backslash |= bit,
            b'{' | b'[' => m.open |= bit,
            b'}' | b']' => m.close |= bit,
            _ => {}
        }
    }
    m
}

/// The value of each hex digit, 0xFF for any other byte.
const HEX: [u8; 256] = {
    let mut t = [0xFF; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = match c as u8 {
            d @ b'0'..=b'9' => d - b'0',
            d @ b'a'..=b'f' => d - b'a' + 10,
            d @ b'A'..=b'F' => d - b'A' + 10,
            _ => 0xFF,
        };
        c += 1;
    }
    t
};

/// The four hex digits at `at`, as a number.
pub(crate) fn hex4(text: &[u8], at: usize) -> Option<u32> {
    let d = text.get(at..at + 4)?;
    let [w, x, y, z] = [d[0], d[1], d[2], d[3]].map(|c| HEX[usize::from(c)]);
    // A non-digit is 0xFF, which no OR of digits (at most 15) reaches.
    ((w | x | y | z) < 16)
        .then(|| u32::from(w) << 12 | u32::from(x) << 8 | u32::from(y) << 4 | u32::from(z))
}

/// What each one-letter escape (`\n`, `\"`, ...) stands for; 0 for `u` and for
/// letters that are no escape.
const SIMPLE_ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t[b'/' as usize] = b'/';
    t[b'b' as usize] = 0x08;
    t[b'f' as usize] = 0x0c;
    t[b'n' as usize] = b'\n';
    t[b'r' as usize] = b'\r';
    t[b't' as usize] = b'\t';
    t
};

/// The text of a string token (its quotes included) of a valid JSON text, unescaped
/// into `out` as serde_json reads it; `false` when it is not such a token or holds
/// an escape serde_json refuses (a lone surrogate).
///
/// An HTML page escapes about one byte in ten, so the runs between backslashes are
/// short: they are copied sixteen or eight bytes at a time into a buffer sized to the input
/// (unescaping never lengthens a text, so the write position never passes the read
/// position), the bytes past a run's end being overwritten by what follows.
pub fn unescape_into(token: &[u8], out: &mut Vec<u8>) -> bool {
    let Some(inner) = token
        .strip_prefix(b"\"")
        .and_then(|t| t.strip_suffix(b"\""))
    else {
        return false;
    };
    out.clear();
    out.reserve(inner.len());
    match unescape_to(inner, out.spare_capacity_mut()) {
        Some(o) => {
            // SAFETY: `unescape_to` wrote (initialised) every byte of `dst[..o]`.
            unsafe { out.set_len(o) };
            true
        }
        None => false,
    }
}

/// Unescapes the inside of a string token into `dst` (at least as long as `src`):
/// `Some(o)` when `dst[..o]` holds the text, every byte of it written.
fn unescape_to(src: &[u8], dst: &mut [std::mem::MaybeUninit<u8>]) -> Option<usize> {
    let n = src.len();
    assert!(dst.len() >= n, "unescaping needs room for the whole input");
    // Every step below writes at most as many bytes as it reads, so `o <= i` holds
    // throughout and every write ends at or before `n`.
    let (mut i, mut o) = (0, 0);
    loop {
        (i, o) = copy_run(src, i, dst, o);
        if i == n {
            return Some(o);
        }
        let letter = *src.get(i + 1)?;
        let plain = SIMPLE_ESCAPE[usize::from(letter)];
        if plain != 0 {
            dst[o].write(plain);
            (i, o) = (i + 2, o + 1);
            continue;
        }
        if letter != b'u' {
            return None;
        }
        let unit = hex4(src, i + 2)?;
        // ASCII (`\u003c`, as Go writes `<`): one byte, no char to build.
        if unit < 0x80 {
            dst[o].write(unit as u8);
            (i, o) = (i + 6, o + 1);
            continue;
        }
        let (code, len) = match unit {
            0xD800..=0xDBFF => {
                if src.get(i + 6..i + 8) != Some(b"\\u") {
                    return None;
                }
                match hex4(src, i + 8)? {
                    lo @ 0xDC00..=0xDFFF => (0x10000 + ((unit - 0xD800) << 10) + (lo - 0xDC00), 12),
                    _ => return None,
                }
            }
            0xDC00..=0xDFFF => return None,
            _ => (unit, 6),
        };
        // A scalar value (surrogates were refused or paired above) in UTF-8, written
        // straight out: a non-ASCII page escapes most of its characters, and
        // building a `char` and its encoding for each cost a fifth of the unescaping.
        // Never longer than its escape: 2 or 3 bytes for 6, 4 for 12.
        let cont = |shift: u32| 0x80 | (code >> shift & 0x3F) as u8;
        if code < 0x800 {
            dst[o].write(0xC0 | (code >> 6) as u8);
            dst[o + 1].write(cont(0));
            o += 2;
        } else if code < 0x10000 {
            dst[o].write(0xE0 | (code >> 12) as u8);
            dst[o + 1].write(cont(6));
            dst[o + 2].write(cont(0));
            o += 3;
        } else {
            dst[o].write(0xF0 | (code >> 18) as u8);
            dst[o + 1].write(cont(12));
            dst[o + 2].write(cont(6));
            dst[o + 3].write(cont(0));
            o += 4;
        }
        i += len;
    }
}

/// Copies `src[i..]` to `dst[o..]` up to the next backslash or the end (`o <= i`,
/// `dst` at least as long as `src`); returns where the run ends in both. Bytes past
/// the run's end may be written too, for what follows to overwrite.
#[inline(always)]
pub(crate) fn copy_run(
    src: &[u8],
    mut i: usize,
    dst: &mut [std::mem::MaybeUninit<u8>],
    mut o: usize,
) -> (usize, usize) {
    let n = src.len();
    debug_assert!(o <= i && dst.len() >= n);
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8, _mm_storeu_si128,
        };
        if o <= i && dst.len() >= n {
            while i + 16 <= n {
                // SAFETY: SSE2 is part of x86_64. The load reads `src[i..i + 16]`; the
                // store writes `dst[o..o + 16]`, in bounds as `o <= i` and
                // `i + 16 <= n <= dst.len()` (checked above).
                let m = unsafe {
                    let v = _mm_loadu_si128(src.as_ptr().add(i).cast());
                    _mm_storeu_si128(dst.as_mut_ptr().add(o).cast(), v);
                    _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8))) as u32
                };
                if m != 0 {
                    let k = m.trailing_zeros() as usize;
                    return (i + k, o + k);
                }
                (i, o) = (i + 16, o + 16);
            }
        }
    }
    while i + 8 <= n {
        let mut w = [0u8; 8];
        w.copy_from_slice(&src[i..i + 8]);
        for (d, &b) in dst[o..o + 8].iter_mut().zip(&w) {
            d.write(b);
        }
        let m = eq_mask(u64::from_le_bytes(w), b'\\');
        if m != 0 {
            let k = (m.trailing_zeros() / 8) as usize;
            return (i + k, o + k);
        }
        (i, o) = (i + 8, o + 8);
    }
    while i < n && src[i] != b'\\' {
        dst[o].write(src[i]);
        (i, o) = (i + 1, o + 1);
    }
    (i, o)
}

/// The most a thread's unescaping buffer keeps between strings.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) const KEPT_BYTES: usize = 1 << 20;

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    /// The last long string unescaped on this thread (a body, an echoed page): one
    /// buffer for them all rather than an allocation of a string's size each (let go after one past `KEPT_BYTES`).
    pub(crate) static UNESCAPED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Unescapes a string token (`unescape_into`) and hands its bytes to `f`; `None` when
/// serde_json would refuse the string. On the host one buffer per thread serves every
/// string. In a module each gets its own: the module's arena takes back all that a call
/// allocated, so a buffer kept from one call to the next would be handed out twice.
pub(crate) fn with_unescaped<R>(raw: &[u8], f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        UNESCAPED.with_borrow_mut(|bytes| {
            let r = unescape_into(raw, bytes).then(|| f(bytes));
            if bytes.capacity() > KEPT_BYTES {
                *bytes = Vec::new();
            }
            r
        })
    }
    #[cfg(target_arch = "wasm32")]
    {
        let mut bytes = Vec::new();
        unescape_into(raw, &mut bytes).then(|| f(&bytes))
    }
}

/// A key's text, unescaped if it needs to be.
pub fn key_text(raw: &[u8], escaped: bool) -> Option<std::borrow::Cow<'_, str>> {
    if !escaped {
        // Keys are short and nearly always ASCII: checked inline rather than by a
        // call to the general UTF-8 check (a few percent of a walk).
        if raw.is_ascii() {
            // SAFETY: ASCII is valid UTF-8.
            return Some(std::borrow::Cow::Borrowed(unsafe {
                std::str::from_utf8_unchecked(raw)
            }));
        }
        return std::str::from_utf8(raw)
            .ok()
            .map(std::borrow::Cow::Borrowed);
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice::<String>(&quoted)
        .ok()
        .map(std::borrow::Cow::Owned)
}

/// Checks a whole text is one JSON value, in UTF-8.
pub fn validate(b: &[u8]) -> Result<()> {
    if let Err(e) = std::str::from_utf8(b) {
        return Err(ScanError {
            what: "invalid UTF-8",
            offset: e.valid_up_to(),
        });
    }
    let mut c = Cursor::new(b);
    c.skip_value()?;
    c.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agrees_with_serde(text: &str) {
        let ours = validate(text.as_bytes()).is_ok();
        let serde = serde_json::from_str::<serde_json::Value>(text).is_ok();
        assert_eq!(ours, serde, "{text:?}");
    }

    #[test]
    fn accepts_and_rejects_as_serde_does() {
        for t in [
            "{}",
            "[]",
            " { \"a\" : [1, -2.5e+3, 0, 0.0, true, false, null, \"x\\\"y\\u00e9\"] } ",
            "\"plain\"",
            "-0",
            "1E5",
            "{\"a\":{\"b\":{\"c\":[[[]]]}}}",
            "\"0123456789abcdefghij\\n0123456789\"",
            "\"h\u{e9}llo w\u{f6}rld, long enough to take the eight-byte path\"",
            "",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{1:2}",
            "01",
            "1.",
            "1e",
            "-",
            "tru",
            "nul",
            "\"abc",
            "\"a\\x\"",
            "\"a\\u12g4\"",
            "\"tab\there\"",
            "\"0123456789\u{1}0123456789\"",
            "[1] 2",
            "[\"\u{e9}\"]",
            "[1e308, 2e-400, 0.000001e3]",
            "[-2.5e32222]",
            "[1e309]",
            "[1 2]",
            "{\"a\":1 \"b\":2}",
            // Surrogate escapes: only a leading one followed by a trailing one.
            "\"\\ud83d\\ude00\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800x\"",
            "\"\\ud800\\n\"",
            "\"\\ud800\\u0041\"",
            "\"\\ud800\\ud800\"",
            "\"\\uDBFF\\uDFFF\"",
        ] {
            agrees_with_serde(t);
        }
        // Too large for a double with a two-digit exponent.
        agrees_with_serde(&format!("[1{}e99]", "0".repeat(290)));
        agrees_with_serde(&format!("[1{}e-99]", "0".repeat(290)));
        // serde_json's nesting limit, at its edge.
        for depth in 126..=129 {
            agrees_with_serde(&("[".repeat(depth) + &"]".repeat(depth)));
        }
        assert!(validate(b"[\"\xf7\"]").is_err());
        let deep = "[".repeat(200) + &"]".repeat(200);
        agrees_with_serde(&deep);
        let ok = "[".repeat(100) + &"]".repeat(100);
        agrees_with_serde(&ok);
    }

    /// Ends found by the trusted skip equal the validating skip's, for every value
    /// in a text and from every start, whatever the escapes and block boundaries.
    fn trusted_agrees(text: &str) {
        let b = text.as_bytes();
        for start in 0..b.len() {
            if !matches!(b[start], b'{' | b'[' | b'"') {
                continue;
            }
            let mut v = Cursor::new(b);
            v.i = start;
            let expect = v.skip_value().map(|_| v.i);
            let mut t = Cursor::new(b);
            t.i = start;
            let got = t.skip_trusted().map(|_| t.i);
            if let Ok(end) = expect {
                assert_eq!(got, Ok(end), "from {start} in {text:?}");
            }
        }
    }

    #[test]
    fn trusted_skip_finds_the_same_ends() {
        trusted_agrees(r#"{"a":[1,{"b":"}]\"[{"}],"c":"\\"}"#);
        trusted_agrees(r#"[[],{},"\\\"]",["x\\"],{"k":"{"}]"#);
        // Long texts, so that strings, escapes and brackets straddle 64-byte blocks.
        let mut long = String::from("{\"list\":[");
        for i in 0..200 {
            let pad = "x".repeat(i % 67);
            let slashes = "\\\\".repeat(i % 3);
            long.push_str(&format!(
                "{{\"s\":\"{pad}{slashes}\\\"}}]{slashes}\",\"n\":[{i},[],{{}}]}},"
            ));
        }
        long.push_str("null]}");
        validate(long.as_bytes()).unwrap();
        trusted_agrees(&long);
        let mut c = Cursor::new(b"[1, 2");
        assert!(c.skip_trusted().is_err());
    }

    #[test]
    fn trusted_string_skip_ends_at_the_first_unescaped_quote() {
        let mut texts: Vec<String> = vec![
            r#""""#.into(),
            r#""a\"b""#.into(),
            r#""\\""#.into(),
            r#""\\\"x""#.into(),
            r#""\u0022\"""#.into(),
        ];
        // Runs of backslashes ending at every offset around the 64-byte boundaries.
        // An odd run escapes the quote after it, an even one ends in a backslash.
        for pad in 0..140 {
            for run in 1..6 {
                let body = "x".repeat(pad) + &"\\".repeat(run);
                let body = if run % 2 == 1 { body + "\"y" } else { body };
                texts.push(format!("\"{body}\""));
            }
        }
        for t in &texts {
            let mut v = Cursor::new(t.as_bytes());
            let expect = v.skip_value().map(|_| v.i);
            let mut c = Cursor::new(t.as_bytes());
            assert_eq!(c.skip_trusted().map(|_| c.i), expect, "{t:?}");
            assert_eq!(expect, Ok(t.len()), "{t:?}");
        }
        assert!(Cursor::new(b"\"abc").skip_trusted().is_err());
        assert!(Cursor::new(b"\"abc\\\"").skip_trusted().is_err());
    }

    #[test]
    fn unescaping_reads_strings_as_serde_does() {
        let cases = [
            r#""""#,
            r#""plain""#,
            r#""<a href=\"/x\">\n\t\r\b\f\/\\</a>""#,
            r#""\u00e9\u4e2d\ud83d\ude00 é""#,
            r#""\u0000 and \u001f""#,
        ];
        let mut out = Vec::new();
        for c in cases {
            let want: String = serde_json::from_str(c).unwrap();
            assert!(unescape_into(c.as_bytes(), &mut out), "{c}");
            assert_eq!(out, want.as_bytes(), "{c}");
        }
        // Every escape at every offset around the eight- and sixteen-byte loads, runs of
        // every length.
        for esc in [
            r#"\""#,
            r"\n",
            r"\u00e9",
            r"\u003c",
            r"\u007f",
            r"\u0080",
            r"\u07ff",
            r"\u0800",
            r"\ud7ff",
            r"\ue000",
            r"\uffff",
            r"\ud83d\ude00",
            r"\ud800\udc00",
            r"\udbff\udfff",
            r"\\",
        ] {
            for before in 0..40 {
                // Runs after the first escape reach past a sixteen-byte load too, where
                // the write position trails the read position.
                for after in 0..40 {
                    let text = format!(
                        "\"{}{esc}{}{esc}\"",
                        "abcdefghijklmnopqrstuvwxyz0123456789ABCD"[..before].to_owned(),
                        "é-xyz<p>/ k0123456789abcdefghijklmnopqrstu"
                            .chars()
                            .take(after)
                            .collect::<String>()
                    );
                    let want: String = serde_json::from_str(&text).unwrap();
                    assert!(unescape_into(text.as_bytes(), &mut out), "{text}");
                    assert_eq!(out, want.as_bytes(), "{text}");
                }
            }
        }
        let long = format!("\"{}\"", "ab\\\"cd\\u0041".repeat(500));
        let want: String = serde_json::from_str(&long).unwrap();
        assert!(unescape_into(long.as_bytes(), &mut out));
        assert_eq!(out, want.as_bytes());
        // serde_json refuses these: so does the unescape.
        for bad in [
            r#""\ud800""#,
            r#""\udc00x""#,
            r#""\ud800\u0041""#,
            r#""\x""#,
            r#""\u12""#,
            r#""\u12g4""#,
            r#""\uD83D\uDE0""#,
            r#""abc\""#,
            "x",
            "\"",
        ] {
            assert!(
                serde_json::from_str::<String>(bad).is_err() || bad.len() < 2,
                "{bad}"
            );
            assert!(!unescape_into(bad.as_bytes(), &mut out), "{bad}");
        }
    }

    #[test]
    fn escaped_characters_follow_odd_runs_of_backslashes_across_blocks() {
        // Reference: left to right, a backslash not itself escaped escapes the next.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..2000 {
            let blocks = 1 + round % 4;
            let mut bits = vec![false; 64 * blocks];
            for b in bits.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // Dense runs in some rounds, sparse in others.
                *b = seed % 8 < (round % 7) as u64;
            }
            let mut want = vec![false; bits.len()];
            let mut i = 0;
            while i < bits.len() {
                if bits[i] {
                    if i + 1 < bits.len() {
                        want[i + 1] = true;
                    }
                    i += 2;
                } else {
                    i += 1;
                }
            }
            let mut carry = 0;
            for (k, chunk) in bits.chunks(64).enumerate() {
                let mask = chunk
                    .iter()
                    .enumerate()
                    .fold(0u64, |m, (j, &b)| m | (u64::from(b) << j));
                let got = escaped_chars(mask, &mut carry);
                for j in 0..64 {
                    assert_eq!(
                        got >> j & 1 == 1,
                        want[64 * k + j],
                        "round {round} bit {}",
                        64 * k + j
                    );
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn both_mask_paths_agree() {
        if !std::arch::is_x86_feature_detected!("avx2")
            || !std::arch::is_x86_feature_detected!("pclmulqdq")
        {
            return;
        }
        let mut block = [0u8; 64];
        for round in 0..500u32 {
            for (i, b) in block.iter_mut().enumerate() {
                *b = b"\"{}[]\\ax,:"[(i * 7 + round as usize * 13 + i * i) % 10];
            }
            let (a, b) = (masks(&block), unsafe { masks_avx2(&block) });
            assert_eq!(
                (a.quote, a.backslash, a.open, a.close),
                (b.quote, b.backslash, b.open, b.close)
            );
            let x = u64::from(round).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            assert_eq!(prefix_xor(x), unsafe { prefix_xor_clmul(x) });
        }
    }

    #[test]
    fn specials_finds_the_first_special_byte_at_any_lane() {
        for lane in 0..8 {
            for c in [b'"', b'\\', 0u8, 0x1f] {
                let mut w = *b"abcdefgh";
                w[lane] = c;
                let m = specials(u64::from_le_bytes(w));
                assert_eq!(m.trailing_zeros() / 8, lane as u32, "{c} at {lane}");
            }
            let mut w = [0x20u8, 0x7f, 0x80, 0xff, b'!', b'#', b'[', b']'];
            w.rotate_left(lane);
            assert_eq!(specials(u64::from_le_bytes(w)), 0);
        }
    }

    #[test]
    fn strings_report_their_text_and_escapes() {
        let mut c = Cursor::new(br#""abc\"def" "plain text over eight bytes""#);
        assert_eq!(c.string().unwrap(), (&br#"abc\"def"#[..], true));
        c.ws();
        assert_eq!(
            c.string().unwrap(),
            (&b"plain text over eight bytes"[..], false)
        );
    }

    #[test]
    fn object_walk_sees_every_member_in_order() {
        let text = br#"{"a": 1, "b\u0063": {"x": [1, 2]}, "a": "again"}"#;
        let mut c = Cursor::new(text);
        let mut seen = Vec::new();
        c.object(|k, esc, cur| {
            let start = cur.i;
            cur.skip_value()?;
            seen.push((
                key_text(k, esc).unwrap().into_owned(),
                String::from_utf8_lossy(&text[start..cur.i]).into_owned(),
            ));
            Ok(())
        })
        .unwrap();
        c.end().unwrap();
        assert_eq!(
            seen,
            [
                ("a".to_owned(), "1".to_owned()),
                ("bc".to_owned(), r#"{"x": [1, 2]}"#.to_owned()),
                ("a".to_owned(), r#""again""#.to_owned()),
            ]
        );
    }
}
