//! The Redis every test that shares state across nodes uses (127.0.0.1:6379, started for
//! every session and for CI).

/// Its URL.
pub const REDIS: &str = "redis://127.0.0.1:6379/";

/// A connection, or `None` (printing that the test did not run) when Redis is away outside
/// CI; under `CI=true` an absent Redis fails the test.
pub fn redis() -> Option<redis::Connection> {
    let c = redis::Client::open(REDIS).ok()?;
    match c.get_connection_with_timeout(std::time::Duration::from_secs(2)) {
        Ok(con) => Some(con),
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("Redis at {REDIS} is required under CI=true: {e}");
            }
            eprintln!("NOT RUN: Redis unreachable at {REDIS}: {e}");
            None
        }
    }
}

/// Delete every key under `prefix` (a test's own).
pub fn clean(con: &mut redis::Connection, prefix: &str) {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(con)
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<i64, _> = redis::cmd("DEL").arg(&keys).query(con);
    }
}
