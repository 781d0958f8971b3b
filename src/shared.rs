//! Fleet-wide state in Redis (`[storage] redis_url`, or `redis_cluster` for a Redis Cluster):
//! the frequency cap, the internal DNC overlay and the duplicate rules' memory of callers every
//! node shares; the buyer caps' task (`crate::fleet`) rides on the same connection. Every round
//! trip has a deadline; a miss or an error is reported to the caller, which applies
//! `on_lookup_error`.
//!
//! Keys (`<p>` is `redis_key_prefix`):
//! - single server: the internal DNC is one set, `<p>:dnc:internal`; the frequency counter
//!   `<p>:freq:<campaign>:<number>`;
//! - Cluster: a script's keys must share a hash slot, and one set every call reads would put
//!   every call's check on one node; so the DNC is one key per number, `<p>:dnc:{<number>}`,
//!   and the counter `<p>:freq:{<number>}:<campaign>`: the number is the hash tag, so one call's
//!   check is still one script on one node, and the checks spread over the cluster
//!   (decision 0006);
//! - both: the duplicate rules' records `<p>:dup:{<caller>}:…`.

use crate::call::callers::Seen;
use crate::call::lookup::{DupCheck, DupSeen, DupWrite};
use crate::call::{RemoteCheck, RemoteResult};
use crate::redis_conn::{hash_tag, RedisConn, RedisTarget};
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

/// [`CHECK`] on a Cluster: KEYS[1] is the number's own DNC key (present = listed), in the
/// slot of KEYS[2], the counter.
const CHECK_CLUSTER: &str = r"
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
if tonumber(ARGV[3]) == 0 then return 0 end
local n = redis.call('INCR', KEYS[2])
if n == 1 then redis.call('EXPIRE', KEYS[2], 86400) end
return n
";

/// A connection to the shared state.
#[derive(Clone)]
pub struct Shared {
    con: Option<RedisConn>,
    prefix: String,
    deadline: Duration,
    script: std::sync::Arc<redis::Script>,
    /// The fleet-wide buyer caps' task, once started.
    caps: Option<crate::fleet::Caps>,
}

impl Shared {
    /// Connect (within 2 s). When Redis is down at start the node still runs: every lookup then
    /// fails and `on_lookup_error` decides.
    pub async fn connect(target: &RedisTarget, prefix: &str, deadline: Duration) -> Shared {
        let con = match RedisConn::connect(target, Duration::from_secs(2)).await {
            Ok(c) => Some(c),
            Err(e) => {
                // not the URLs: they may hold a password
                let kind = match target {
                    RedisTarget::Single(_) => "server",
                    RedisTarget::Cluster(_) => "cluster",
                };
                tracing::error!(error = %e, kind, "Redis unreachable; shared compliance lookups will fail");
                None
            }
        };
        Shared::with(con, prefix, deadline)
    }

    /// Use a connection made elsewhere (`None`: none could be made).
    pub fn with(con: Option<RedisConn>, prefix: &str, deadline: Duration) -> Shared {
        let cluster = con.as_ref().is_some_and(RedisConn::is_cluster);
        Shared {
            con,
            prefix: prefix.to_owned(),
            deadline,
            script: std::sync::Arc::new(redis::Script::new(if cluster {
                CHECK_CLUSTER
            } else {
                CHECK
            })),
            caps: None,
        }
    }

    /// Start the fleet-wide buyer caps' task (leases of `lease`; `node` names this node's
    /// heartbeat, unique per process).
    pub fn start_caps(&mut self, lease: Duration, node: &str) {
        self.caps = Some(crate::fleet::Caps::start(
            self.con.clone(),
            &self.prefix,
            lease,
            node,
        ));
    }

    /// The fleet-wide buyer caps' task.
    pub fn caps(&self) -> Option<&crate::fleet::Caps> {
        self.caps.as_ref()
    }

    fn cluster(&self) -> bool {
        self.con.as_ref().is_some_and(RedisConn::is_cluster)
    }

    /// The key of the shared internal DNC: one set on a single server; on a Cluster the
    /// number's own key (see the module docs).
    pub fn dnc_key(&self, number: &str) -> String {
        if self.cluster() {
            format!("{}:dnc:{{{}}}", self.prefix, hash_tag(number))
        } else {
            format!("{}:dnc:internal", self.prefix)
        }
    }

    fn freq_key(&self, campaign: &str, number: &str) -> String {
        if self.cluster() {
            format!("{}:freq:{{{}}}:{campaign}", self.prefix, hash_tag(number))
        } else {
            format!("{}:freq:{campaign}:{number}", self.prefix)
        }
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
            .key(self.dnc_key(&number))
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

    /// The duplicate rules' record of `caller` in campaign `campaign` (or with buyer `buyer`):
    /// a hash of "<stage>:<buyer>" → Unix seconds. The caller is the hash tag, so one call's keys
    /// share a Redis Cluster slot.
    fn dup_key(&self, kind: char, of: &str, caller: &str) -> String {
        format!("{}:dup:{{{caller}}}:{kind}:{of}", self.prefix)
    }

    /// Read what the fleet remembers of a caller (one pipelined round trip).
    pub async fn dup_check(&self, c: &DupCheck) -> Result<DupSeen, String> {
        let mut con = self.con.clone().ok_or("Redis not connected")?;
        let mut pipe = redis::pipe();
        if let Some(campaign) = &c.campaign {
            pipe.hgetall(self.dup_key('c', campaign, &c.caller));
        }
        for (_, buyer) in &c.buyers {
            pipe.hgetall(self.dup_key('b', buyer, &c.caller));
        }
        let fut = pipe.query_async::<Vec<Vec<(String, String)>>>(&mut con);
        let mut hashes = match tokio::time::timeout(self.deadline, fut).await {
            Ok(Ok(h)) => h.into_iter(),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("no answer within {:?}", self.deadline)),
        };
        let seen = |h: Option<Vec<(String, String)>>| {
            let h = h.unwrap_or_default();
            (!h.is_empty()).then(|| Seen::from_fields(h.iter().map(|(k, v)| (&**k, &**v))))
        };
        let campaign = match c.campaign {
            Some(_) => seen(hashes.next()),
            None => None,
        };
        let buyers = c
            .buyers
            .iter()
            .filter_map(|(b, _)| seen(hashes.next()).map(|s| (*b, s)))
            .collect();
        Ok(DupSeen { campaign, buyers })
    }

    /// Remember that a call reached a stage, for every node (keys expire with the longest
    /// window after their last write).
    pub async fn dup_record(&self, w: &DupWrite) -> Result<(), String> {
        let mut con = self.con.clone().ok_or("Redis not connected")?;
        let field = Seen::field(w.stage, &w.buyer);
        let mut pipe = redis::pipe();
        let keys = w
            .campaign
            .iter()
            .map(|c| self.dup_key('c', c, &w.caller))
            .chain(
                w.buyer_record
                    .then(|| self.dup_key('b', &w.buyer, &w.caller)),
            );
        for key in keys {
            pipe.hset(&key, &field, w.at_s)
                .ignore()
                .expire(&key, w.keep_s)
                .ignore();
        }
        let fut = pipe.query_async::<()>(&mut con);
        match tokio::time::timeout(Duration::from_secs(2), fut).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 2 s".into()),
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
        let number = format!("{n:010}");
        let mut cmd = if self.cluster() {
            redis::cmd("EXISTS")
        } else {
            redis::cmd("SISMEMBER")
        };
        cmd.arg(self.dnc_key(&number));
        if !self.cluster() {
            cmd.arg(&number);
        }
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
        let number = format!("{n:010}");
        let key = self.dnc_key(&number);
        let mut cmd;
        if !self.cluster() {
            cmd = redis::cmd(if add { "SADD" } else { "SREM" });
            cmd.arg(&key).arg(&number);
        } else if add {
            // SET … NX answers OK when it wrote the key, nil when it was there
            cmd = redis::cmd("SET");
            cmd.arg(&key).arg(1).arg("NX");
            let fut = cmd.query_async::<Option<String>>(&mut con);
            return match tokio::time::timeout(Duration::from_secs(1), fut).await {
                Ok(Ok(v)) => Ok(v.is_some()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("no answer within 1 s".into()),
            };
        } else {
            cmd = redis::cmd("DEL");
            cmd.arg(&key);
        }
        match tokio::time::timeout(Duration::from_secs(1), cmd.query_async::<i64>(&mut con)).await {
            Ok(Ok(changed)) => Ok(changed == 1),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 1 s".into()),
        }
    }
}
