//! Tallies of the hostile-input suites (arbitrary bytes, malformed JSON, forged tokens, bit
//! flips), printed by every `cargo test` run: a line per property, written straight to the
//! process's standard error so that the test harness's output capture does not hide it.
//!
//! ```text
//! hostile input: g2p-mosip ciphertext: arbitrary bytes never open: 256 inputs
//! ```

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counts the inputs one property tried.
#[derive(Debug)]
pub struct Tally {
    suite: &'static str,
    property: &'static str,
    inputs: AtomicU64,
}

impl Tally {
    /// A tally for `property` of `suite`.
    pub const fn new(suite: &'static str, property: &'static str) -> Self {
        Tally {
            suite,
            property,
            inputs: AtomicU64::new(0),
        }
    }

    /// Counts one input.
    pub fn input(&self) {
        self.inputs.fetch_add(1, Ordering::Relaxed);
    }

    /// The inputs counted so far.
    pub fn inputs(&self) -> u64 {
        self.inputs.load(Ordering::Relaxed)
    }

    /// Prints the tally (call it after the property passed) and checks that inputs were
    /// tried at all.
    pub fn report(&self) {
        let inputs = self.inputs();
        assert!(
            inputs > 0,
            "{}: {}: no input was tried",
            self.suite,
            self.property
        );
        let line = format!(
            "hostile input: {}: {}: {inputs} inputs\n",
            self.suite, self.property
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}
