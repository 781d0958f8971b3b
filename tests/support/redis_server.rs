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

/// Is `redis-server` installed? Outside CI a test that needs one of its own prints NOT RUN
/// and returns; under `CI=true` its absence fails the test.
pub fn redis_server_installed(test: &str) -> bool {
    let found = std::process::Command::new("redis-server")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("redis-server is required under CI=true ({test})");
        }
        eprintln!("NOT RUN: {test}: redis-server is not installed");
    }
    found
}

/// Start a `redis-server` of a test's own on loopback `port`, in `dir`, with `args` after
/// the port (persistence, cluster mode, …).
pub fn spawn(port: u16, dir: &std::path::Path, args: &[&str]) -> std::process::Child {
    std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server")
}

/// Wait (5 s at most) until the server at `url` answers `PING`; a connection to it.
pub fn wait_up(url: &str) -> redis::Connection {
    for _ in 0..100 {
        if let Ok(mut c) = redis::Client::open(url).and_then(|c| c.get_connection()) {
            if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                return c;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("redis-server on {url} did not start");
}
