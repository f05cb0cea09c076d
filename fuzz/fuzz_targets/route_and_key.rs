//! Arbitrary bytes as a request target (path, `?`, query) through path
//! normalisation, route classification and cache-key building; the
//! invariants live in `invariants.rs`, shared with `tests/fuzz_corpus.rs`.

#![no_main]

mod invariants;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = invariants::check_request_target(data);
});
