//! Fleet-wide state in Redis (`[storage] redis_url`): the frequency cap and the internal DNC
//! overlay every node shares. Every round trip has a deadline; a miss or an error is reported to
//! the caller, which applies `on_lookup_error`.

use crate::call::{RemoteCheck, RemoteResult};
use redis::aio::ConnectionManager;
use std::time::Duration;

/// One script, one round trip: the DNC overlay first, and only a caller who is not listed is
/// counted (INCR, with the 24 h expiry set on the first call of the window).
const CHECK: &str = r"
if ARGV[2] == '1' and redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return -1 end
if tonumber(ARGV[3]) == 0 then return 0 end
local n = redis.call('INCR', KEYS[2])
if n == 1 then redis.call('EXPIRE', KEYS[2], 86400) end
return n
";

/// A connection to the shared state.
#[derive(Clone)]
pub struct Shared {
    con: Option<ConnectionManager>,
    prefix: String,
    deadline: Duration,
    script: std::sync::Arc<redis::Script>,
}

impl Shared {
    /// Connect (within 2 s). When Redis is down at start the node still runs: every lookup then
    /// fails and `on_lookup_error` decides.
    pub async fn connect(url: &str, prefix: &str, deadline: Duration) -> Shared {
        let con = match redis::Client::open(url) {
            Ok(client) => {
                match tokio::time::timeout(Duration::from_secs(2), client.get_connection_manager())
                    .await
                {
                    Ok(Ok(c)) => Some(c),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "Redis unreachable; shared compliance lookups will fail");
                        None
                    }
                    Err(_) => {
                        tracing::error!(
                            "Redis did not answer in 2 s; shared compliance lookups will fail"
                        );
                        None
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "bad redis_url");
                None
            }
        };
        Shared {
            con,
            prefix: prefix.to_owned(),
            deadline,
            script: std::sync::Arc::new(redis::Script::new(CHECK)),
        }
    }

    /// The key of the shared internal DNC set.
    pub fn dnc_key(&self) -> String {
        format!("{}:dnc:internal", self.prefix)
    }

    fn freq_key(&self, campaign: &str, number: &str) -> String {
        format!("{}:freq:{campaign}:{number}", self.prefix)
    }

    /// Run one call's fleet-wide check.
    pub async fn check(&self, c: &RemoteCheck) -> RemoteResult {
        let Some(mut con) = self.con.clone() else {
            return RemoteResult::Error("Redis not connected".into());
        };
        let number = dce_compliance::nanp10(&c.caller)
            .map(|n| format!("{n:010}"))
            .unwrap_or_else(|| c.caller.clone());
        let mut invocation = self.script.prepare_invoke();
        let fut = invocation
            .key(self.dnc_key())
            .key(self.freq_key(&c.campaign, &number))
            .arg(&number)
            .arg(if c.check_dnc { "1" } else { "0" })
            .arg(c.max_calls_per_day)
            .invoke_async::<i64>(&mut con);
        match tokio::time::timeout(self.deadline, fut).await {
            Ok(Ok(-1)) => RemoteResult::Listed,
            Ok(Ok(n)) => RemoteResult::Count(n),
            Ok(Err(e)) => RemoteResult::Error(e.to_string()),
            Err(_) => RemoteResult::Error(format!("no answer within {:?}", self.deadline)),
        }
    }

    /// One `PING` round trip (1 s deadline), for health checks.
    pub async fn ping(&self) -> Result<(), String> {
        let mut con = self.con.clone().ok_or("Redis not connected")?;
        match tokio::time::timeout(
            Duration::from_secs(1),
            redis::cmd("PING").query_async::<String>(&mut con),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 1 s".into()),
        }
    }

    /// Add a number to the shared internal DNC (every node sees it on its next call).
    pub async fn dnc_add(&self, number: &str) -> Result<bool, String> {
        self.dnc_edit(number, true).await
    }

    /// Remove a number from the shared internal DNC.
    pub async fn dnc_remove(&self, number: &str) -> Result<bool, String> {
        self.dnc_edit(number, false).await
    }

    /// Is the number on the shared internal DNC?
    pub async fn dnc_contains(&self, number: &str) -> Result<bool, String> {
        let n = dce_compliance::nanp10(number)
            .ok_or_else(|| format!("`{number}` is not a NANP number"))?;
        let mut con = self.con.clone().ok_or("Redis not connected")?;
        let mut cmd = redis::cmd("SISMEMBER");
        cmd.arg(self.dnc_key()).arg(format!("{n:010}"));
        match tokio::time::timeout(Duration::from_secs(1), cmd.query_async::<i64>(&mut con)).await {
            Ok(Ok(v)) => Ok(v == 1),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 1 s".into()),
        }
    }

    async fn dnc_edit(&self, number: &str, add: bool) -> Result<bool, String> {
        let n = dce_compliance::nanp10(number)
            .ok_or_else(|| format!("`{number}` is not a NANP number"))?;
        let mut con = self.con.clone().ok_or("Redis not connected")?;
        let cmd = if add { "SADD" } else { "SREM" };
        let changed: i64 = redis::cmd(cmd)
            .arg(self.dnc_key())
            .arg(format!("{n:010}"))
            .query_async(&mut con)
            .await
            .map_err(|e| e.to_string())?;
        Ok(changed == 1)
    }
}
