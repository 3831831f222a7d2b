//! What a scorer reads, and the measurement cut down to it.
//!
//! A scorer may declare the paths it reads (`Info::reads`). The engine then sends it a
//! copy of the measurement where every other value is replaced by `null`: keys stay
//! (so `contains_key`, object sizes and truthiness of containers are unchanged, unless
//! the scorer asks for unread members to be left out, below) and arrays keep every
//! element. A large measurement (a Tor test's network events, a
//! page's body the scorer never looks at) then costs a scan on the host instead of a
//! full parse inside the module.
//!
//! Path syntax: keys joined by `.`, from the measurement's top level. Arrays are
//! crossed without naming them: `test_keys.requests.response.body` reads the body of
//! every request. A segment `*` matches any key, `*suffix` any key ending in `suffix`.
//! A path names a whole value: everything under it is kept, as the same JSON value
//! (its text may differ: escapes a character does not need, `\uXXXX` of a printable
//! character or `\/`, are written as the character).
//!
//! A scorer that never asks whether an unread key is present can have unread members
//! left out instead of sent as `null` (`Reads::dropping_unread`; `Info::drops_unread`),
//! in every object the paths go into. Objects read only for their shape
//! (`Read::Shape`) keep their keys either way.
//!
//! A value the scorer only compares with `==` to other such values (`Read::Compared`;
//! `Info::compared`) is sent with each long string inside it replaced by a digest of
//! its text (`COMPARED_AS_IS`), so that an echoed page of a hundred kilobytes costs a
//! hash on the host instead of a copy and a parse in the module.

use crate::jsonscan::{key_text, Cursor, Result as ScanResult};
use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Any,
    Suffix(String),
}

impl Segment {
    /// Whether some key could match both segments.
    fn may_match(&self, other: &Segment) -> bool {
        match (self, other) {
            (Segment::Key(k), o) | (o, Segment::Key(k)) => o.matches(k),
            _ => true,
        }
    }

    fn matches(&self, key: &str) -> bool {
        match self {
            Segment::Key(k) => k == key,
            Segment::Any => true,
            Segment::Suffix(s) => key.ends_with(s.as_str()),
        }
    }
}

/// How a path is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// The whole value (the same value; escapes it does not need are written plain).
    Whole,
    /// The whole value, only ever looked up as an HTTP body (see `Reads::with_bodies`).
    Body,
    /// The whole value, only ever looked up as a response's headers
    /// (see `Reads::with_matched`).
    Headers,
    /// The value's shape only: a scalar as it is, an object's keys and an array's
    /// elements (themselves cut to their shapes), every other value `null` unless
    /// another path reads it. Enough for a test of truthiness, type, size, a key's
    /// presence, or equality with a scalar or an empty container.
    Shape,
    /// The value, each string inside it (in its arrays and objects, keys included)
    /// longer than `COMPARED_AS_IS` bytes replaced by a digest string; the value
    /// itself, when a string, as it is. For a value whose members are only compared
    /// with `==` to the members of other compared values: two such strings are equal
    /// exactly when their digests are (but for a collision of a 128-bit hash), a digest
    /// never equals a string sent as it is, and numbers, booleans, nulls, the sizes of
    /// arrays and objects and key order are kept (a digest records its string's length
    /// in bytes).
    Compared,
}

/// Strings inside a compared value (`Read::Compared`) of at most this many bytes,
/// unescaped, are sent as they are; longer ones as their digest,
/// `"\u0000ooni-digest:xxh3-128:<32 hex digits>:<length, 20 digits>"` (75 characters,
/// so never equal to a string sent as it is).
pub const COMPARED_AS_IS: usize = 64;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    /// The whole value is read.
    whole: bool,
    /// The value is only ever looked up as an HTTP body (`Some(Matched::Body)`) or as
    /// a response's headers: the host may send its fingerprint matches instead
    /// (`crate::matching::matched_value`).
    matched: Option<Matched>,
    /// The whole value is only compared (`Read::Compared`).
    compared: bool,
    children: Vec<(Segment, Node)>,
}

impl Node {
    fn insert(&mut self, segments: Vec<Segment>, how: Read) {
        let mut node = self;
        for seg in segments {
            let at = match node.children.iter().position(|(s, _)| *s == seg) {
                Some(i) => i,
                None => {
                    node.children.push((seg, Node::default()));
                    node.children.len() - 1
                }
            };
            node = &mut node.children[at].1;
        }
        match how {
            Read::Whole => node.whole = true,
            Read::Body => {
                node.whole = true;
                node.matched = Some(Matched::Body);
            }
            Read::Headers => {
                node.whole = true;
                node.matched = Some(Matched::Headers);
            }
            Read::Compared => {
                node.whole = true;
                node.compared = true;
            }
            // A node without children that is not whole keeps the value's shape.
            Read::Shape => {}
        }
    }

    fn child(&self, key: &str) -> Option<Cow<'_, Node>> {
        let mut found = self
            .children
            .iter()
            .filter(|(s, _)| s.matches(key))
            .map(|(_, n)| n);
        let first = found.next()?;
        let Some(second) = found.next() else {
            return Some(Cow::Borrowed(first));
        };
        // A key matched by several segments reads what each of them reads.
        let mut merged = first.clone();
        for n in std::iter::once(second).chain(found) {
            merged.whole |= n.whole;
            merged.matched = merged.matched.or(n.matched);
            // `Reads::comparing` refuses compared paths that overlap any other.
            merged.compared |= n.compared;
            merged.children.extend(n.children.iter().cloned());
        }
        Some(Cow::Owned(merged))
    }
}

/// A compiled set of read paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reads {
    root: Node,
    /// Unread members are left out rather than sent as `null`.
    drop_unread: bool,
}

impl Reads {
    /// Compiles paths; an empty list reads nothing but the top-level keys.
    pub fn new<S: AsRef<str>>(paths: &[S]) -> Result<Reads, String> {
        Reads::with_bodies(paths, &[] as &[&str])
    }

    /// Compiles read paths and body paths (read too, and sent as their fingerprint
    /// matches when the projection is given a hook).
    pub fn with_bodies<S: AsRef<str>, B: AsRef<str>>(
        paths: &[S],
        bodies: &[B],
    ) -> Result<Reads, String> {
        Reads::with_matched(paths, bodies, &[] as &[&str])
    }

    /// Compiles read paths, body paths and header paths (both read too, and sent as
    /// their fingerprint matches when the projection is given a hook).
    pub fn with_matched<S: AsRef<str>, B: AsRef<str>, H: AsRef<str>>(
        paths: &[S],
        bodies: &[B],
        headers: &[H],
    ) -> Result<Reads, String> {
        let mut root = Node::default();
        let all = paths
            .iter()
            .map(|p| (p.as_ref(), Read::Whole))
            .chain(bodies.iter().map(|p| (p.as_ref(), Read::Body)))
            .chain(headers.iter().map(|p| (p.as_ref(), Read::Headers)));
        let mut parsed = Vec::new();
        for (path, how) in all {
            let path: &str = path;
            parsed.push((path, parse_path(path)?, how));
        }
        // A body or headers path under a path read whole would be sent as it is, and a
        // probe's own "matched" object with it: refused.
        for (matched, m, _) in parsed.iter().filter(|(_, _, h)| *h != Read::Whole) {
            for (whole, w, _) in parsed.iter().filter(|(_, _, h)| *h == Read::Whole) {
                if w.len() <= m.len() && w.iter().zip(m).all(|(a, b)| a.may_match(b)) {
                    return Err(format!(
                        "path {matched:?} is matched by the engine but {whole:?} reads it whole"
                    ));
                }
            }
        }
        for (_, segments, how) in parsed {
            root.insert(segments, how);
        }
        Ok(Reads {
            root,
            drop_unread: false,
        })
    }

    /// The same reads, leaving unread members out of the objects the paths go into
    /// instead of keeping their keys with `null` values.
    pub fn dropping_unread(mut self) -> Reads {
        self.drop_unread = true;
        self
    }

    pub fn drops_unread(&self) -> bool {
        self.drop_unread
    }

    /// The reads a scorer declares (`Info`, or a module's meta): `None` when it declares
    /// none and is sent whole. Bodies, headers, compared paths and dropping unread
    /// members all need `reads`; the error says which is missing them.
    pub fn declared<S: AsRef<str>>(
        reads: Option<&[S]>,
        bodies: Option<&[S]>,
        headers: Option<&[S]>,
        compared: Option<&[S]>,
        drop_unread: bool,
    ) -> Result<Option<Reads>, String> {
        let Some(reads) = reads else {
            return match (bodies, headers) {
                (None, None) if drop_unread => Err("`unread` needs `reads`".into()),
                (None, None) if compared.is_some() => Err("`compared` needs `reads`".into()),
                (None, None) => Ok(None),
                _ => Err("`bodies` and `headers` need `reads`".into()),
            };
        };
        let reads = Reads::with_matched(
            reads,
            bodies.unwrap_or_default(),
            headers.unwrap_or_default(),
        )?
        .comparing(compared.unwrap_or_default())?;
        Ok(Some(if drop_unread {
            reads.dropping_unread()
        } else {
            reads
        }))
    }

    /// `declared` for a scorer's `Info`, an empty list being none (as `wasm::meta`
    /// leaves it out).
    pub fn for_info(info: &crate::Info) -> Result<Option<Reads>, String> {
        let some = |paths: &'static [&'static str]| (!paths.is_empty()).then_some(paths);
        Reads::declared(
            some(info.reads),
            some(info.bodies),
            some(info.headers),
            some(info.compared),
            info.drops_unread,
        )
    }

    /// The same reads, and `paths` read as `Read::Compared`. A compared path may not
    /// overlap another path (one above or below it, or the same), compared or not:
    /// a value is either compared or read.
    pub fn comparing<S: AsRef<str>>(mut self, paths: &[S]) -> Result<Reads, String> {
        for path in paths {
            let path = path.as_ref();
            let segments = parse_path(path)?;
            if overlaps(&self.root, &segments, true) {
                return Err(format!(
                    "compared path {path:?} overlaps another path: a value is either compared or read"
                ));
            }
            self.root.insert(segments, Read::Compared);
        }
        Ok(self)
    }

    /// Compiles paths given as literal keys (a `*` in a key is just a character), each
    /// read as `how` says; an empty path is the measurement itself. For engines that
    /// work out what a scorer reads from its source, such as TOML rule files.
    pub fn from_keys<K: AsRef<str>>(paths: &[(Vec<K>, Read)]) -> Reads {
        let mut root = Node::default();
        for (keys, how) in paths {
            let segments = keys
                .iter()
                .map(|k| Segment::Key(k.as_ref().to_owned()))
                .collect();
            root.insert(segments, *how);
        }
        Reads {
            root,
            drop_unread: false,
        }
    }

    /// Whether a first walk can cut an object member by member for these reads (not
    /// when they take it whole), with its top-level `key` left unread.
    pub fn cuts_members_without(&self, key: &str) -> bool {
        !self.root.whole && self.root.child(key).is_none()
    }

    /// The measurement with every value outside the read paths replaced by `null`.
    /// `json` must be valid JSON (as every upload is once accepted): values the
    /// scorer does not read are crossed without being validated again. The cut is
    /// UTF-8 when `json` is (only whole sequences are copied) and is not checked
    /// again: the scorer's parser checks the strings it reads.
    pub fn project(&self, json: &[u8]) -> ScanResult<Vec<u8>> {
        self.project_with(json, None)
    }

    /// Like `project`; each value on a body or header path is offered to `hook` (with
    /// its raw JSON text), which may give the text to send in its place.
    pub fn project_with(&self, json: &[u8], hook: Option<MatchHook<'_>>) -> ScanResult<Vec<u8>> {
        let mut cur = Cursor::new(json);
        let mut out = Vec::with_capacity(json.len().min(4096));
        cur.ws();
        let cut = Cut {
            hook,
            drop_unread: self.drop_unread,
            depth: 0,
        };
        value(&self.root, &mut cur, &mut out, cut)?;
        cur.end()?;
        Ok(out)
    }
}

fn parse_path(path: &str) -> Result<Vec<Segment>, String> {
    path.split('.')
        .map(|seg| match seg {
            "" => Err(format!("read path {path:?} has an empty segment")),
            "*" => Ok(Segment::Any),
            s if s.starts_with('*') => Ok(Segment::Suffix(s[1..].to_owned())),
            s if s.contains('*') => {
                Err(format!("read path {path:?}: `*` may only start a segment"))
            }
            s => Ok(Segment::Key(s.to_owned())),
        })
        .collect()
}

/// Whether a path from `node` along `segments` meets a path already read: one that
/// ends above it (read whole or for its shape), passes through its end, or goes below.
fn overlaps(node: &Node, segments: &[Segment], root: bool) -> bool {
    let Some((first, rest)) = segments.split_first() else {
        return true;
    };
    if node.whole || (!root && node.children.is_empty()) {
        return true;
    }
    node.children
        .iter()
        .any(|(seg, child)| seg.may_match(first) && overlaps(child, rest, false))
}

/// What a value on a matched path is looked up as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched {
    Body,
    Headers,
}

/// Gives the text to send instead of a value on a body or header path, or `None` to
/// send it as it is.
pub type MatchHook<'h> = &'h dyn Fn(Matched, &[u8]) -> Option<String>;

/// How values are cut, the same all the way down.
#[derive(Clone, Copy)]
struct Cut<'h> {
    hook: Option<MatchHook<'h>>,
    drop_unread: bool,
    /// How many objects and arrays enclose the value.
    depth: usize,
}

impl Cut<'_> {
    /// The cut of what a container at the cursor holds. The walk recurses once per
    /// level, so a text nested deeper than serde_json reads (which the scorer would
    /// refuse whole anyway) is refused here rather than allowed to exhaust the stack.
    fn inside(self, cur: &Cursor<'_>) -> ScanResult<Self> {
        cur.check_depth(self.depth)?;
        Ok(Cut {
            depth: self.depth + 1,
            ..self
        })
    }
}

fn value(node: &Node, cur: &mut Cursor<'_>, out: &mut Vec<u8>, cut: Cut<'_>) -> ScanResult<()> {
    let b = cur.bytes();
    let start = cur.i;
    if node.compared {
        return compared(cur, out, cut, true);
    }
    if node.whole {
        cur.skip_trusted()?;
        let raw = &b[start..cur.i];
        match cut
            .hook
            .zip(node.matched)
            .and_then(|(h, kind)| h(kind, raw))
        {
            Some(text) => out.extend_from_slice(text.as_bytes()),
            None => copy_plain(raw, out),
        }
        return Ok(());
    }
    match cur.peek() {
        Some(b'{') => {
            out.push(b'{');
            let mut first = true;
            let cut = cut.inside(cur)?;
            cur.object(|raw, escaped, cur| member(node, raw, escaped, cur, out, cut, &mut first))?;
            out.push(b'}');
        }
        Some(b'[') => {
            out.push(b'[');
            let mut first = true;
            let cut = cut.inside(cur)?;
            cur.array(|cur| {
                if !first {
                    out.push(b',');
                }
                first = false;
                value(node, cur, out, cut)
            })?;
            out.push(b']');
        }
        _ => {
            // A scalar where the paths go deeper: the scorer sees it as it is (and
            // fails on it as it would on the whole measurement).
            cur.skip_value()?;
            out.extend_from_slice(&b[start..cur.i]);
        }
    }
    Ok(())
}

/// One member of an object on `node`, its key just read and its value next: written
/// as the key and the value's cut (or left out, when unread and unread members are
/// dropped), and crossed. `first`: no member of the object has been written yet.
fn member(
    node: &Node,
    raw: &[u8],
    escaped: bool,
    cur: &mut Cursor<'_>,
    out: &mut Vec<u8>,
    cut: Cut<'_>,
    first: &mut bool,
) -> ScanResult<()> {
    let child = key_text(raw, escaped).and_then(|k| node.child(&k));
    if child.is_none() && drops_in(node, cut) {
        return cur.skip_trusted();
    }
    write_key(out, raw, first);
    match child {
        Some(c) => value(&c, cur, out, cut),
        None => {
            cur.skip_trusted()?;
            out.extend_from_slice(b"null");
            Ok(())
        }
    }
}

/// Writes a compared value (`Read::Compared`) at the cursor and crosses it. `top`: the
/// value itself, which is sent as it is when a string.
fn compared(cur: &mut Cursor<'_>, out: &mut Vec<u8>, cut: Cut<'_>, top: bool) -> ScanResult<()> {
    let b = cur.bytes();
    let start = cur.i;
    match cur.peek() {
        Some(b'"') if !top => {
            cur.skip_trusted()?;
            compared_string(&b[start..cur.i], out);
        }
        Some(b'{') => {
            let cut = cut.inside(cur)?;
            out.push(b'{');
            let mut first = true;
            cur.object(|raw, _, cur| {
                if !std::mem::take(&mut first) {
                    out.push(b',');
                }
                // `raw` lies between the key's quotes, in the same text.
                let at = raw.as_ptr() as usize - b.as_ptr() as usize;
                compared_string(&b[at - 1..at + raw.len() + 1], out);
                out.push(b':');
                compared(cur, out, cut, false)
            })?;
            out.push(b'}');
        }
        Some(b'[') => {
            let cut = cut.inside(cur)?;
            out.push(b'[');
            let mut first = true;
            cur.array(|cur| {
                if !std::mem::take(&mut first) {
                    out.push(b',');
                }
                compared(cur, out, cut, false)
            })?;
            out.push(b']');
        }
        _ => {
            cur.skip_trusted()?;
            copy_plain(&b[start..cur.i], out);
        }
    }
    Ok(())
}

/// Writes one string token inside a compared value: as it is when short, else as
/// its digest. A string serde_json would refuse (a lone surrogate) is written as it
/// is, so the scorer fails on it as it would on the whole measurement.
fn compared_string(token: &[u8], out: &mut Vec<u8>) {
    let inner = &token[1..token.len() - 1];
    // Unescaping never lengthens a text: a short token holds a short one.
    let digest = if inner.len() <= COMPARED_AS_IS {
        None
    } else if memchr::memchr(b'\\', inner).is_none() {
        Some((xxhash_rust::xxh3::xxh3_128(inner), inner.len()))
    } else {
        crate::jsonscan::with_unescaped(token, |text| {
            (xxhash_rust::xxh3::xxh3_128(text), text.len())
        })
    };
    match digest {
        Some((digest, len)) if len > COMPARED_AS_IS => {
            // Written straight into the cut; writing to a Vec cannot fail.
            let _ = std::io::Write::write_fmt(
                out,
                format_args!("\"\\u0000ooni-digest:xxh3-128:{digest:032x}:{len:020}\""),
            );
        }
        _ => copy_plain(token, out),
    }
}

/// Copies the text of a whole value, writing each `\uXXXX` escape of a character that
/// needs none as that character (UTF-8) and `\/` as `/`: the same value, with fewer
/// escapes for the scorer to parse. OONI's Python pipeline escaped every non-ASCII
/// character, so an echoed page in Cyrillic or Arabic is mostly escapes. Escapes that
/// are needed (quotes, backslashes, control characters) and any a parser would refuse
/// are copied as they are.
fn copy_plain(raw: &[u8], out: &mut Vec<u8>) {
    // The copy is never longer than the text (no escape's replacement is longer than
    // the escape), so it is written into room reserved for the whole text, runs between
    // backslashes a SIMD load at a time (an escape every few bytes is common), and
    // its length set at the end.
    let n = raw.len();
    out.reserve(n);
    let dst = &mut out.spare_capacity_mut()[..n];
    let (mut i, mut o) = (0, 0);
    while i < n {
        (i, o) = crate::jsonscan::copy_run(raw, i, dst, o);
        if i == n {
            break;
        }
        let (len, plain) = plain_escape(raw, i);
        let len = len.min(n - i);
        let mut utf8 = [0u8; 4];
        let replacement = match plain {
            Some(c) => c.encode_utf8(&mut utf8).as_bytes(),
            None => &raw[i..i + len],
        };
        for &b in replacement {
            dst[o].write(b);
            o += 1;
        }
        i += len;
    }
    let len = out.len() + o;
    // SAFETY: every one of the first `o` bytes of the spare capacity was written above.
    unsafe { out.set_len(len) };
}

/// The escape at `at` (a backslash): how many bytes it takes, and the character to
/// write instead when it needs no escape.
fn plain_escape(raw: &[u8], at: usize) -> (usize, Option<char>) {
    use crate::jsonscan::hex4;
    match raw.get(at + 1) {
        Some(b'/') => (2, Some('/')),
        Some(b'u') => match hex4(raw, at + 2) {
            None => (2, None),
            Some(hi @ 0xD800..=0xDBFF) => {
                let lo = (raw.get(at + 6..at + 8) == Some(b"\\u"))
                    .then(|| hex4(raw, at + 8))
                    .flatten();
                match lo {
                    Some(lo @ 0xDC00..=0xDFFF) => (
                        12,
                        char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)),
                    ),
                    _ => (6, None),
                }
            }
            Some(0xDC00..=0xDFFF) => (6, None),
            Some(u) if u < 0x20 || u == 0x22 || u == 0x5C => (6, None),
            Some(u) => (6, char::from_u32(u)),
        },
        Some(_) => (2, None),
        None => (1, None),
    }
}

/// Whether unread members of an object on `node` are left out: only where the paths
/// name keys in it; an object read for its shape keeps every key.
fn drops_in(node: &Node, cut: Cut<'_>) -> bool {
    cut.drop_unread && !node.children.is_empty()
}

fn write_key(out: &mut Vec<u8>, raw: &[u8], first: &mut bool) {
    if !std::mem::take(first) {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(raw);
    out.extend_from_slice(b"\":");
}

/// The cut of an object made by a caller that walks the object itself: the engine's
/// first walk of an upload reads the row's fields from the same members, so the
/// measurement is crossed once instead of twice. `finish` gives what `project_with`
/// gives for that object.
pub struct ObjectCut<'r, 'h> {
    root: &'r Node,
    cut: Cut<'h>,
    out: Vec<u8>,
    first: bool,
}

impl<'r, 'h> ObjectCut<'r, 'h> {
    /// `None` when the reads take the measurement whole (nothing to cut).
    pub fn new(reads: &'r Reads, hook: Option<MatchHook<'h>>) -> Option<ObjectCut<'r, 'h>> {
        (!reads.root.whole).then(|| ObjectCut {
            root: &reads.root,
            // The members of the measurement's object.
            cut: Cut {
                hook,
                drop_unread: reads.drop_unread,
                depth: 1,
            },
            out: {
                let mut out = Vec::with_capacity(4096);
                out.push(b'{');
                out
            },
            first: true,
        })
    }

    /// Whether the member `key` is read (and so crossed by `member` with its cut).
    pub fn reads(&self, key: &str) -> bool {
        self.root.child(key).is_some()
    }

    /// The member whose key was just read, written as unread (`null`, or left out);
    /// the caller crosses its value.
    pub fn unread_member(&mut self, raw: &[u8]) {
        if !drops_in(self.root, self.cut) {
            write_key(&mut self.out, raw, &mut self.first);
            self.out.extend_from_slice(b"null");
        }
    }

    /// The member whose key was just read (`raw`, as in `Cursor::object`), its value
    /// next: cut and crossed.
    pub fn member(&mut self, raw: &[u8], escaped: bool, cur: &mut Cursor<'_>) -> ScanResult<()> {
        member(
            self.root,
            raw,
            escaped,
            cur,
            &mut self.out,
            self.cut,
            &mut self.first,
        )
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.out.push(b'}');
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A cut as text, for comparing with what a test expects.
    fn as_text(cut: ScanResult<Vec<u8>>) -> String {
        String::from_utf8(cut.unwrap()).unwrap()
    }

    fn project(paths: &[&str], v: &Value) -> Value {
        let text = v.to_string();
        let out = Reads::new(paths).unwrap().project(text.as_bytes()).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn unread_values_become_null_and_keys_stay() {
        let m = json!({
            "probe_cc": "IT",
            "test_runtime": 1.5,
            "test_keys": {"targets": {"a": {"failure": null, "network_events": [1, 2, {"x": "}"}]},
                                      "b": {"failure": "x", "network_events": []}},
                          "other": "big"},
            "annotations": {"k": "v"}
        });
        let p = project(
            &["probe_cc", "test_runtime", "test_keys.targets.*.failure"],
            &m,
        );
        assert_eq!(
            p,
            json!({
                "probe_cc": "IT",
                "test_runtime": 1.5,
                "test_keys": {"targets": {"a": {"failure": null, "network_events": null},
                                          "b": {"failure": "x", "network_events": null}},
                              "other": null},
                "annotations": null
            })
        );
        // Key order is kept.
        let keys: Vec<_> = p.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            ["probe_cc", "test_runtime", "test_keys", "annotations"]
        );
    }

    #[test]
    fn arrays_are_crossed_and_scalars_kept_where_objects_were_expected() {
        let m = json!({"test_keys": {"requests": [
            {"response": {"body": "<html>", "headers": {"a": "b"}}, "request": {"url": "u"}},
            null, 3, [ {"response": {"body": "nested"}} ]
        ]}});
        let p = project(&["test_keys.requests.response.body"], &m);
        assert_eq!(
            p,
            json!({"test_keys": {"requests": [
                {"response": {"body": "<html>", "headers": null}, "request": null},
                null, 3, [ {"response": {"body": "nested"}} ]
            ]}})
        );
    }

    #[test]
    fn suffixes_overlaps_and_whole_values() {
        let m = json!({"test_keys": {"dns_failure": "unknown_failure: x", "http_failure": null,
                                      "failure_count": 2, "x": {"y": 1, "z": 2}}});
        let p = project(&["test_keys.*_failure", "test_keys.x.y", "test_keys.x"], &m);
        assert_eq!(
            p,
            json!({"test_keys": {"dns_failure": "unknown_failure: x", "http_failure": null,
                                  "failure_count": null, "x": {"y": 1, "z": 2}}})
        );
        let p = project(&["test_keys.x.y", "test_keys.*.z"], &m);
        assert_eq!(p["test_keys"]["x"], json!({"y": 1, "z": 2}));
    }

    #[test]
    fn duplicate_and_escaped_keys_are_kept_as_written() {
        let text = r#"{"a": 1, "b\u0063": {"d": 2, "e": 3}, "a": 2}"#;
        let out = as_text(Reads::new(&["a", "bc.d"]).unwrap().project(text.as_bytes()));
        assert_eq!(out, r#"{"a":1,"b\u0063":{"d":2,"e":null},"a":2}"#);
    }

    #[test]
    fn body_values_go_through_the_hook() {
        let text = br#"{"r": [{"body": "a\"b", "x": 1}, {"body": null}], "body": "top"}"#;
        let reads = Reads::with_bodies(&["x"], &["r.body"]).unwrap();
        let hook = |kind, raw: &[u8]| {
            assert_eq!(kind, Matched::Body);
            (raw != b"null").then(|| format!("{}", raw.len()))
        };
        assert_eq!(
            as_text(reads.project_with(text, Some(&hook))),
            r#"{"r":[{"body":6,"x":null},{"body":null}],"body":null}"#
        );
        assert_eq!(
            as_text(reads.project(text)),
            r#"{"r":[{"body":"a\"b","x":null},{"body":null}],"body":null}"#
        );
    }

    #[test]
    fn unread_members_can_be_left_out() {
        let text = br#"{"a": 1, "t": {"q": [{"ip": "x", "ttl": 5}, 3], "big": "...", "s": {"k": [1]}}, "z": null}"#;
        let shape = Reads::from_keys(&[
            (vec!["t", "q", "ip"], Read::Whole),
            (vec!["t", "s"], Read::Shape),
        ]);
        let cut = |r: Reads| r.project(text).unwrap();
        // Keys kept as null by default.
        assert_eq!(
            as_text(Ok(cut(shape.clone()))),
            r#"{"a":null,"t":{"q":[{"ip":"x","ttl":null},3],"big":null,"s":{"k":null}},"z":null}"#
        );
        // Left out where the paths name keys; arrays keep their elements and an object
        // read for its shape keeps its keys.
        let dropping = shape.dropping_unread();
        assert!(dropping.drops_unread());
        assert_eq!(
            as_text(Ok(cut(dropping.clone()))),
            r#"{"t":{"q":[{"ip":"x"},3],"s":{"k":null}}}"#
        );
        // The first walk's cut, member by member, says the same.
        let mut obj = ObjectCut::new(&dropping, None).unwrap();
        let mut cur = Cursor::new(text);
        cur.object(|raw, escaped, cur| {
            let key = key_text(raw, escaped).unwrap();
            if obj.reads(&key) {
                obj.member(raw, escaped, cur)
            } else {
                obj.unread_member(raw);
                cur.skip_trusted()
            }
        })
        .unwrap();
        assert_eq!(obj.finish(), cut(dropping));
        // Only members that are read: an object of nothing but unread ones is `{}`.
        let none = Reads::new(&["t.nothing"]).unwrap().dropping_unread();
        assert_eq!(none.project(text).unwrap(), br#"{"t":{}}"#);
    }

    #[test]
    fn header_values_go_through_the_hook_as_headers() {
        let text = br#"{"r": [{"body": "b", "headers": {"A": "1"}, "x": 1}], "headers": {}}"#;
        let reads = Reads::with_matched(&["x"], &["r.body"], &["r.headers"]).unwrap();
        let hook = |kind: Matched, raw: &[u8]| Some(format!("\"{kind:?} {}\"", raw.len()));
        assert_eq!(
            as_text(reads.project_with(text, Some(&hook))),
            r#"{"r":[{"body":"Body 3","headers":"Headers 10","x":null}],"headers":null}"#
        );
    }

    #[test]
    fn whole_values_keep_only_the_escapes_they_need() {
        let text = r#"{"s": ["\u0410\u0431 \ud83d\ude00 \/x\/", "\"q\" \\u0041 \u0000\u001f\u0022\u005c \n\t", "\ud800 lone", "\u00e9\u007f"], "k\u00e9y": {"\u0041": 1}}"#;
        let out = as_text(Reads::new(&["s", "kéy"]).unwrap().project(text.as_bytes()));
        let want =
            r#"{"s":["Аб 😀 /x/", "\"q\" \\u0041 \u0000\u001f\u0022\u005c \n\t", "\ud800 lone", "é"#
                .to_owned()
                + "\u{7f}" + r#""],"k\u00e9y":{"A": 1}}"#;
        assert_eq!(out, want);
        // The same values as the original, as serde_json reads them.
        let valid = r#"{"s": ["\u0410\ud83d\ude00\/", "\\u0041\u0000\"", "\u00e9"], "t": {"\u0041\/": "\u4e2d"}}"#;
        let cut = as_text(Reads::new(&["s", "t"]).unwrap().project(valid.as_bytes()));
        let a: Value = serde_json::from_str(valid).unwrap();
        let b: Value = serde_json::from_str(&cut).unwrap();
        assert_eq!(a, b, "{cut}");
        assert!(cut.len() < valid.len());
        // Every escape at every offset around the sixteen- and eight-byte loads, and
        // runs after an escape longer than a load (the copy then trails the text).
        let reads = Reads::new(&["s"]).unwrap();
        for esc in [
            r"\u0410",
            r"\/",
            r#"\""#,
            r"\\",
            r"\ud83d\ude00",
            r"\n",
            r"\u001f",
        ] {
            for before in 0..40 {
                for after in [3, 15, 16, 17, 33] {
                    let text = format!(
                        r#"{{"s": "{}{esc}{}{esc}"}}"#,
                        &"abcdefghijklmnopqrstuvwxyz0123456789ABCD"[..before],
                        &"xyz-0123456789-abcdefghijklmnopqrstuvw"[..after]
                    );
                    let cut = as_text(reads.project(text.as_bytes()));
                    let a: Value = serde_json::from_str(&text).unwrap();
                    let b: Value = serde_json::from_str(&cut).unwrap();
                    assert_eq!(a, b, "{text} → {cut}");
                }
            }
        }
    }

    #[test]
    fn declared_reads_follow_the_rules_the_engine_loads_modules_by() {
        let none: Option<&[&str]> = None;
        let declared = |reads, bodies, headers, compared, drop| {
            Reads::declared(reads, bodies, headers, compared, drop).map(|r| r.is_some())
        };
        assert_eq!(declared(none, none, none, none, false), Ok(false));
        let missing = [
            ((none, none, none, none, true), "`unread` needs `reads`"),
            (
                (none, none, none, Some(&["c"][..]), false),
                "`compared` needs `reads`",
            ),
            (
                (none, Some(&["r.body"][..]), none, none, true),
                "`bodies` and `headers` need `reads`",
            ),
            (
                (none, none, Some(&["r.h"][..]), none, false),
                "`bodies` and `headers` need `reads`",
            ),
        ];
        for ((r, b, h, c, d), why) in missing {
            assert_eq!(declared(r, b, h, c, d), Err(why.to_owned()));
        }
        // Overlapping paths are refused as `with_matched` and `comparing` refuse them.
        assert!(declared(Some(&["t"][..]), none, none, Some(&["t.s"][..]), false).is_err());
        assert!(declared(Some(&["r"][..]), Some(&["r.body"][..]), none, none, false).is_err());
        let reads = Reads::declared(Some(&["a"][..]), none, none, Some(&["c"][..]), true)
            .unwrap()
            .unwrap();
        assert!(reads.drops_unread());
        assert_eq!(
            as_text(reads.project(br#"{"a": 1, "c": ["x"], "z": 2}"#)),
            r#"{"a":1,"c":["x"]}"#
        );
    }

    #[test]
    fn compared_values_send_long_strings_as_digests() {
        let long = "a".repeat(COMPARED_AS_IS + 1);
        let long_other = format!("{}b", "a".repeat(COMPARED_AS_IS));
        let edge = "e".repeat(COMPARED_AS_IS);
        // The same long text escaped differently, a key, a nested value, scalars.
        let text = format!(
            r#"{{"t": {{"s": ["short", "{long}", "{edge}", {{"{long}": ["{long_other}"]}}, 1, 1.0, null, true],
                        "r": ["short", "\u0061{rest}", "{edge}", {{"{long}": ["{long}"]}}, 1, 1.0, null, true],
                        "top": "{long}", "other": 5}}}}"#,
            rest = &long[1..]
        );
        let reads = Reads::new(&["x"])
            .unwrap()
            .dropping_unread()
            .comparing(&["t.s", "t.r", "t.top"])
            .unwrap();
        let cut = as_text(reads.project(text.as_bytes()));
        let v: Value = serde_json::from_str(&cut).unwrap();
        let (s, r) = (&v["t"]["s"], &v["t"]["r"]);
        let digest = |v: &Value| {
            let d = v.as_str().unwrap();
            assert!(d.starts_with("\u{0}ooni-digest:xxh3-128:"), "{d}");
            assert_eq!(d.len(), 75, "{d}");
            assert!(d.ends_with(&format!(":{:020}", COMPARED_AS_IS + 1)), "{d}");
            d.to_owned()
        };
        assert_eq!(s[0], json!("short"));
        assert_eq!(
            s[2],
            json!(edge),
            "a string of COMPARED_AS_IS bytes is sent as it is"
        );
        // Equal texts, however escaped, give one digest; another text another.
        assert_eq!(digest(&s[1]), digest(&r[1]));
        let (sk, rk) = (s[3].as_object().unwrap(), r[3].as_object().unwrap());
        assert_eq!(
            sk.keys().map(|k| digest(&json!(k))).collect::<Vec<_>>(),
            [digest(&s[1])]
        );
        assert_eq!(sk.keys().collect::<Vec<_>>(), rk.keys().collect::<Vec<_>>());
        assert_ne!(digest(&sk.values().next().unwrap()[0]), digest(&s[1]));
        assert_eq!(rk.values().next().unwrap()[0], s[1]);
        // Scalars, lengths and the pairs' equalities are those of the original.
        assert_eq!(s.as_array().unwrap()[4..], r.as_array().unwrap()[4..]);
        let orig: Value = serde_json::from_str(&text).unwrap();
        for (i, (a, b)) in s
            .as_array()
            .unwrap()
            .iter()
            .zip(r.as_array().unwrap())
            .enumerate()
        {
            let (oa, ob) = (&orig["t"]["s"][i], &orig["t"]["r"][i]);
            assert_eq!(a == b, oa == ob, "pair {i}");
        }
        // The compared value itself, a string, is sent as it is; unread members are
        // still left out; a string serde_json refuses (a lone surrogate) is sent as it
        // is, so the scorer fails on it as on the whole measurement.
        assert_eq!(v["t"]["top"], json!(long));
        assert!(v["t"].get("other").is_none());
        let bad = format!(r#"{{"b": ["\ud800{long}"]}}"#);
        let reads = Reads::new(&["x"]).unwrap().comparing(&["b"]).unwrap();
        assert_eq!(as_text(reads.project(bad.as_bytes())), bad.replace(' ', ""));
        // A compared path may not overlap any other path.
        for (reads, compared) in [
            (&["t"][..], &["t.s"][..]),
            (&["t.s.x"], &["t.s"]),
            (&["t.s"], &["t.*"]),
            (&["t.s"], &["t.s"]),
            (&["q"], &["t", "t.s"]),
            (&["q"], &["*s", "*"]),
        ] {
            assert!(
                Reads::new(reads).unwrap().comparing(compared).is_err(),
                "{reads:?} {compared:?}"
            );
        }
        assert!(Reads::new(&["t.x", "t.q.r"])
            .unwrap()
            .comparing(&["t.s", "t.*r"])
            .is_ok());
    }

    #[test]
    fn texts_nested_deeper_than_serde_json_reads_are_refused_without_recursing() {
        let nest = |n: usize| format!(r#"{{"t": {}1{}}}"#, "[".repeat(n), "]".repeat(n));
        let read = Reads::new(&["t.x"]).unwrap();
        let compared = Reads::new(&["q"]).unwrap().comparing(&["t"]).unwrap();
        for n in [120, 126, 127, 128, 200] {
            let text = nest(n);
            let serde = serde_json::from_str::<Value>(&text).is_ok();
            assert_eq!(
                read.project(text.as_bytes()).is_ok(),
                serde,
                "{n} levels, read"
            );
            assert_eq!(
                compared.project(text.as_bytes()).is_ok(),
                serde,
                "{n} levels, compared"
            );
        }
        // Far deeper than a thread's stack would allow one frame per level.
        let text = nest(1_000_000);
        assert!(read.project(text.as_bytes()).is_err());
        assert!(compared.project(text.as_bytes()).is_err());
        let objects = format!(
            r#"{{"t": {}1{}}}"#,
            r#"{"x":"#.repeat(1_000_000),
            "}".repeat(1_000_000)
        );
        assert!(compared.project(objects.as_bytes()).is_err());
    }

    #[test]
    fn bad_paths_and_texts_are_errors() {
        // Matched paths under a path read whole.
        for whole in ["r", "r.body", "*", "r.*", "*r.body", "r.*dy"] {
            assert!(
                Reads::with_matched(&[whole], &["r.body"], &[] as &[&str]).is_err(),
                "{whole}"
            );
        }
        assert!(Reads::with_matched(&["r.h"], &[] as &[&str], &["r.h"]).is_err());
        assert!(Reads::with_matched(&["r.x", "q", "*x.body"], &["r.body"], &["r.h"]).is_ok());
        assert!(Reads::new(&["a..b"]).is_err());
        assert!(Reads::new(&["a.b*c"]).is_err());
        let r = Reads::new(&["a"]).unwrap();
        assert!(r.project(b"{\"a\": [1, 2}").is_err());
        assert!(r.project(b"{\"a\": 1} x").is_err());
        assert_eq!(
            as_text(r.project(b"[1, {\"a\": 2, \"b\": 3}]")),
            "[1,{\"a\":2,\"b\":null}]"
        );
    }
}
