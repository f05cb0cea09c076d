//! The `route_and_key` fuzz target's invariants on stable Rust: every seed of
//! `fuzz/corpus/route_and_key/`, then a few thousand deterministic mutations
//! of them. The fuzzer itself needs nightly; see `fuzz/README.md`.

#[path = "../fuzz/fuzz_targets/invariants.rs"]
mod invariants;

use std::path::PathBuf;

use invariants::{Reach, check_request_target};

/// Mutated inputs checked per run: enough to reach odd corners, fast in CI.
const MUTANTS: usize = 5_000;

/// Bytes that matter to paths and queries, tried more often than chance would.
const TELLING_BYTES: &[u8] = b"/.%?&=+;#\0\r\n aA0_-\xc0\xaf\xe9\xff";

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/route_and_key");
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("the corpus directory")
        .map(|entry| {
            let path = entry.expect("a corpus entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("a readable seed"))
        })
        .collect();
    seeds.sort();
    seeds
}

#[test]
fn every_seed_of_the_corpus_keeps_the_invariants() {
    let seeds = corpus();
    assert!(seeds.len() >= 30, "only {} seeds", seeds.len());

    let mut reached = Vec::new();
    for (name, data) in &seeds {
        let checked = std::panic::catch_unwind(|| check_request_target(data));
        reached.push(checked.unwrap_or_else(|_| panic!("seed {name} breaks an invariant")));
    }
    assert_reaches_every_stage(&reached, 5);
}

#[test]
fn mutations_of_the_corpus_keep_the_invariants() {
    let seeds: Vec<Vec<u8>> = corpus().into_iter().map(|(_, data)| data).collect();
    let mut random = XorShift(0x9E37_79B9_7F4A_7C15);

    let mut reached = Vec::new();
    for n in 0..MUTANTS {
        let mutant = mutate(&seeds, &mut random);
        let checked = std::panic::catch_unwind(|| check_request_target(&mutant));
        let broken = |_| panic!("mutant {n} breaks an invariant: {mutant:?}");
        reached.push(checked.unwrap_or_else(broken));
    }
    assert_reaches_every_stage(&reached, MUTANTS / 20);
}

/// Guards against a replay that proves nothing because every input stopped
/// at the first check: at least `least` inputs must end at each stage.
fn assert_reaches_every_stage(reached: &[Reach], least: usize) {
    for stage in [Reach::Refused, Reach::Unrouted, Reach::Routed] {
        let count = reached.iter().filter(|r| **r == stage).count();
        assert!(count >= least, "only {count} inputs ended at {stage:?}");
    }
}

/// xorshift64: a fixed seed gives the same mutants on every run and machine.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `bound` (which must not be zero).
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        if self.below(2) == 0 {
            TELLING_BYTES[self.below(TELLING_BYTES.len())]
        } else {
            self.next() as u8
        }
    }
}

/// A seed changed by one to four edits: overwrite, insert, delete a run,
/// repeat a run, or splice in part of another seed.
fn mutate(seeds: &[Vec<u8>], random: &mut XorShift) -> Vec<u8> {
    let mut data = seeds[random.below(seeds.len())].clone();
    for _ in 0..=random.below(4) {
        let at = random.below(data.len() + 1);
        match random.below(5) {
            0 if at < data.len() => data[at] = random.byte(),
            1 => data.insert(at, random.byte()),
            2 => {
                let end = (at + random.below(8)).min(data.len());
                data.drain(at..end);
            }
            3 => {
                let end = (at + random.below(16)).min(data.len());
                let run = data[at..end].repeat(1 + random.below(4));
                data.splice(at..at, run);
            }
            _ => {
                let other = &seeds[random.below(seeds.len())];
                let from = random.below(other.len() + 1);
                data.splice(at..at, other[from..].iter().copied());
            }
        }
    }
    data
}
