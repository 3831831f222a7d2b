//! The guest side of the ABI (plugins/ABI.md). Used through `export_scorer!`.

use crate::host::{FingerprintMatch, Host};
use crate::{Info, Scores};
use serde_json::Value;

/// Packs a guest buffer as `(ptr << 32) | len`.
fn pack(ptr: *const u8, len: usize) -> i64 {
    (((ptr as usize as u64) << 32) | (len as u64 & 0xffff_ffff)) as i64
}

/// Allocates `len` bytes the host fills; ownership passes back with the call.
pub fn alloc(len: i32) -> i32 {
    // Outside a call the host is sending a new measurement: everything the last call
    // allocated, its answer included, is no longer needed.
    #[cfg(all(target_arch = "wasm32", feature = "arena"))]
    if !crate::arena::IN_CALL.load(core::sync::atomic::Ordering::Relaxed) {
        OUTPUT.with(|o| core::mem::take(&mut *o.borrow_mut()));
        crate::arena::reset();
    }
    let len = len.max(0) as usize;
    if len == 0 {
        return 1; // a dangling, never-read address for an empty buffer
    }
    match std::alloc::Layout::from_size_align(len, 1) {
        // SAFETY: the layout has a non-zero size.
        Ok(layout) => unsafe { std::alloc::alloc(layout) as usize as i32 },
        Err(_) => 0,
    }
}

/// A buffer made by `alloc`, freed when dropped.
struct Owned {
    ptr: *mut u8,
    len: usize,
}

impl Owned {
    /// # Safety
    /// `ptr` must come from `alloc(len)`, be filled to `len`, and be taken back once.
    unsafe fn new(ptr: i32, len: i32) -> Owned {
        Owned {
            ptr: ptr as usize as *mut u8,
            len: len.max(0) as usize,
        }
    }

    fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `new`'s contract: `len` initialised bytes at `ptr`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if self.len > 0 {
            if let Ok(layout) = std::alloc::Layout::from_size_align(self.len, 1) {
                // SAFETY: allocated by `alloc` with this very layout.
                unsafe { std::alloc::dealloc(self.ptr, layout) }
            }
        }
    }
}

thread_local! {
    /// The last answer handed to the host; valid until the next call.
    static OUTPUT: core::cell::RefCell<Vec<u8>> = const { core::cell::RefCell::new(Vec::new()) };
}

fn hand_out(bytes: Vec<u8>) -> i64 {
    OUTPUT.with(|o| {
        let mut o = o.borrow_mut();
        *o = bytes;
        pack(o.as_ptr(), o.len())
    })
}

pub fn meta(info: &Info) -> i64 {
    let mut v = serde_json::json!({
        "abi": crate::ABI_VERSION,
        "name": info.name,
        "version": info.version,
        "test_names": info.test_names,
    });
    if !info.reads.is_empty() {
        v["reads"] = serde_json::json!(info.reads);
    }
    if !info.bodies.is_empty() {
        v["bodies"] = serde_json::json!(info.bodies);
    }
    if !info.headers.is_empty() {
        v["headers"] = serde_json::json!(info.headers);
    }
    if info.drops_unread {
        v["unread"] = serde_json::json!("drop");
    }
    if !info.compared.is_empty() {
        v["compared"] = serde_json::json!(info.compared);
    }
    hand_out(v.to_string().into_bytes())
}

/// `info`: what the scorer declared. For its `Info::bodies` and `Info::headers` the
/// engine sends their matches in their place (see `Host::bodies_matched`).
pub fn score(
    ptr: i32,
    len: i32,
    info: &Info,
    f: fn(&Value, &dyn Host) -> Result<Scores, String>,
) -> i64 {
    #[cfg(all(target_arch = "wasm32", feature = "arena"))]
    crate::arena::IN_CALL.store(true, core::sync::atomic::Ordering::Relaxed);
    let host = WasmHost {
        bodies_matched: !info.bodies.is_empty(),
        headers_matched: !info.headers.is_empty(),
    };
    let out = score_inner(ptr, len, host, f);
    #[cfg(all(target_arch = "wasm32", feature = "arena"))]
    crate::arena::IN_CALL.store(false, core::sync::atomic::Ordering::Relaxed);
    out
}

fn score_inner(
    ptr: i32,
    len: i32,
    host: WasmHost,
    f: fn(&Value, &dyn Host) -> Result<Scores, String>,
) -> i64 {
    // SAFETY: the ABI says the host passes a buffer from `ooni_alloc(len)`, filled.
    let input = unsafe { Owned::new(ptr, len) };
    let result = match serde_json::from_slice::<Value>(input.bytes()) {
        Err(e) => Err(format!("measurement is not JSON: {e}")),
        Ok(msm) => f(&msm, &host),
    };
    drop(input);
    hand_out(answer(result))
}

/// `{"scores": {…}}` or `{"error": "…"}`, written straight into bytes: through
/// `Value`'s `Display` (`to_string`) every token goes by `fmt::Formatter`, which cost
/// a module as much as parsing the measurement it scored.
fn answer(result: Result<Scores, String>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let written = match &result {
        Ok(scores) => {
            out.extend_from_slice(b"{\"scores\":");
            serde_json::to_writer(&mut out, scores).map(|()| out.push(b'}'))
        }
        Err(e) => serde_json::to_writer(&mut out, &serde_json::json!({ "error": e })),
    };
    written.expect("maps of strings to JSON values serialise");
    out
}

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "ooni")]
extern "C" {
    fn log(level: i32, ptr: i32, len: i32);
    fn match_fingerprints(kind: i32, ptr: i32, len: i32) -> i64;
}

/// The engine, seen from inside the module.
struct WasmHost {
    bodies_matched: bool,
    headers_matched: bool,
}

#[cfg(target_arch = "wasm32")]
fn host_match(kind: i32, a: &[u8]) -> Vec<FingerprintMatch> {
    // SAFETY: the import reads the bytes and answers 0 or an `alloc`ed buffer.
    let packed = unsafe { match_fingerprints(kind, a.as_ptr() as i32, a.len() as i32) };
    if packed == 0 {
        return Vec::new();
    }
    let (ptr, len) = (
        (packed as u64 >> 32) as i32,
        (packed as u64 & 0xffff_ffff) as i32,
    );
    // SAFETY: the host filled a buffer it got from `ooni_alloc(len)`.
    let bytes = unsafe { Owned::new(ptr, len) };
    serde_json::from_slice(bytes.bytes()).unwrap_or_default()
}

#[cfg(not(target_arch = "wasm32"))]
fn host_match(_kind: i32, _a: &[u8]) -> Vec<FingerprintMatch> {
    Vec::new()
}

impl Host for WasmHost {
    fn match_dns(&self, answer: &str) -> Vec<FingerprintMatch> {
        host_match(0, answer.as_bytes())
    }
    fn match_http_body(&self, body: &[u8]) -> Vec<FingerprintMatch> {
        host_match(1, body)
    }
    fn match_http_headers(&self, headers_json: &str) -> Vec<FingerprintMatch> {
        host_match(2, headers_json.as_bytes())
    }
    fn bodies_matched(&self) -> bool {
        self.bodies_matched
    }
    fn headers_matched(&self) -> bool {
        self.headers_matched
    }
    fn log(&self, level: i32, message: &str) {
        #[cfg(target_arch = "wasm32")]
        // SAFETY: the import only reads `message` for the duration of the call.
        unsafe {
            log(level, message.as_ptr() as i32, message.len() as i32)
        };
        #[cfg(not(target_arch = "wasm32"))]
        let _ = (level, message);
    }
}

#[cfg(test)]
mod tests {
    use super::answer;
    use serde_json::{json, Value};

    #[test]
    fn answer_is_the_json_of_scores_or_error() {
        let scores = json!({
            "blocking_general": 1.0,
            "blocking_country": 0.0,
            "accuracy": 0.5e-7,
            "analysis": {"msg": "tab\t \"quoted\" é \u{1f600}", "n": [1, -2, 3.25, null, true]},
            "written_last": 1e300,
        });
        let Value::Object(map) = scores.clone() else {
            unreachable!()
        };
        let sent = answer(Ok(map));
        assert_eq!(
            String::from_utf8(sent.clone()).unwrap(),
            json!({ "scores": scores }).to_string()
        );
        // Key order survives the trip.
        let back: Value = serde_json::from_slice(&sent).unwrap();
        let keys: Vec<&String> = back["scores"].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "blocking_general",
                "blocking_country",
                "accuracy",
                "analysis",
                "written_last"
            ]
        );
        assert_eq!(
            answer(Err("test_keys is a \"list\"".into())),
            br#"{"error":"test_keys is a \"list\""}"#
        );
    }
}
