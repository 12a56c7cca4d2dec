//! Registry records through an encryption provider: the personal fields of a registry,
//! streamed (flat memory, any size), transformed a bounded number at a time, written in
//! input order.
//!
//! * [`pipeline`]: the streaming run and the [`Transform`] it applies, with rejects set
//!   aside and fields that match nothing refused;
//! * [`format`]: JSON Lines and CSV files, read ahead on a thread of their own;
//! * [`database`]: a live registry table in PostgreSQL, a locked batch per transaction;
//! * [`envelope`]: OpenG2P's registry encryption — one ciphertext per registrant in
//!   `encrypted_val` — sealing, opening, rewrapping after a rotation, inspecting;
//! * [`fields`]: field-level encryption, each chosen field its own MOSIP ciphertext (what
//!   `g2p-keymanager bulk` does);
//! * [`record`]: records and field paths (`address.city`); [`pyjson`]: JSON as Python's
//!   `json.dumps` writes it.
//!
//! ```no_run
//! # async fn demo(provider: std::sync::Arc<dyn g2p_encryption::EncryptionProvider>)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use g2p_registry::envelope::{EnvelopeSettings, Seal};
//! use g2p_registry::format::{self, Format};
//! use g2p_registry::pipeline::{self, Silent, Sinks};
//!
//! let transform: std::sync::Arc<dyn g2p_registry::Transform> =
//!     std::sync::Arc::new(Seal::new(provider, EnvelopeSettings::default()));
//! let input = format::read(Format::JsonLines, Box::new(std::fs::File::open("registry.jsonl")?))?;
//! let mut file = g2p_encryption::files::AtomicFile::create("sealed.jsonl".as_ref())?;
//! let mut output = format::writer(Format::JsonLines, Vec::new(), &mut file);
//! let sinks = Sinks { output: Some(output.as_mut()), rejects: None };
//! let summary = pipeline::run(input, sinks, &transform, Default::default(), &Silent).await?;
//! drop(output);
//! file.commit()?;
//! println!("{} of {} records encrypted", summary.changed, summary.records);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod database;
pub mod envelope;
pub mod fields;
pub mod format;
pub mod pipeline;
pub mod pyjson;
pub mod record;
pub mod settings;

pub use pipeline::{PipelineError, RecordError, Summary, Transform, Transformed};
