//! Where CDRs are kept: PostgreSQL or the embedded SQLite, with a spool for when the database
//! cannot take them.
//!
//! ## Layout
//!
//! | file | what it owns |
//! |---|---|
//! | `anonymize.rs` | retention and GDPR erasure by keyed hash |
//! | `db.rs` | pools, embedded migrations, batched idempotent inserts, export |
//! | `spool.rs` | the checksummed, fsync'd spool file and its torn-tail detection |
//! | `writer.rs` | the sink the call path writes to, the batching task, replay |

pub mod anonymize;
pub mod db;
pub mod spool;
pub mod writer;

pub use db::{CdrQuery, Db, StatRow};
pub use spool::Spool;
pub use writer::{start, DbSink, Retention, WriterStats};
