//! Where CDRs are kept: PostgreSQL or the embedded SQLite, with a spool for when the database
//! cannot take them.
//!
//! ## Layout
//!
//! | file | what it owns |
//! |---|---|
//! | `anonymize.rs` | the keyed hash and its key; retention and erasure in the database |
//! | `conversions.rs` | conversion events of stored calls, with their postbacks, in one transaction |
//! | `db.rs` | pools, embedded migrations, batched idempotent inserts, export |
//! | `files.rs` | files replaced whole: temporary file, fsync, rename, directory fsync |
//! | `gdpr.rs` | erasure of one number from every copy; the list of erased numbers' pseudonyms |
//! | `jsonl.rs` | the JSON-lines copy's writer thread and its atomic rewrite on erasure |
//! | `postbacks.rs` | the sender that works off the postback outbox |
//! | `spool.rs` | the checksummed, fsync'd spool file and its torn-tail detection |
//! | `writer.rs` | the sink the call path writes to, the batching task, replay |

pub mod anonymize;
pub mod conversions;
pub mod db;
pub mod files;
pub mod gdpr;
pub mod jsonl;
pub mod postbacks;
pub mod recordings;
pub mod spool;
pub mod writer;

pub use db::{CdrQuery, Db, StatRow};
pub use gdpr::Gdpr;
pub use spool::Spool;
pub use writer::{start, DbSink, Retention, WriterStats};
