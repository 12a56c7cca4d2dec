//! Registry records through an encryption provider: the personal fields of a registry export,
//! streamed (flat memory, any size), transformed a bounded number at a time, written in
//! input order.
//!
//! * [`pipeline`]: the streaming run over JSON Lines and the [`Transform`] it applies;
//! * [`fields`]: field-level encryption, each chosen field its own MOSIP ciphertext (what
//!   `g2p-keymanager bulk` does);
//! * [`record`]: records and field paths (`address.city`).
//!
//! ```no_run
//! # async fn demo(provider: std::sync::Arc<dyn g2p_encryption::EncryptionProvider>)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use g2p_registry::fields::{Direction, FieldCrypt};
//! use g2p_registry::record::FieldPath;
//! use g2p_registry::pipeline;
//!
//! let fields = vec![FieldPath::parse("name")?, FieldPath::parse("address.street")?];
//! let transform = FieldCrypt::new(provider, fields, Direction::Encrypt);
//! let input = tokio::io::BufReader::new(tokio::fs::File::open("registry.jsonl").await?);
//! let mut output = g2p_encryption::files::AtomicFile::create("sealed.jsonl".as_ref())?;
//! let summary = pipeline::run(input, &mut output, &transform, Default::default(), &|_| {}).await?;
//! output.commit()?;
//! println!("{} values in {} records", summary.values, summary.records);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod fields;
pub mod pipeline;
pub mod record;

pub use pipeline::{PipelineError, RecordError, Summary, Transform, Transformed};
