//! The one Redis connection the fleet-wide state uses (`crate::shared`, `crate::fleet`): a
//! single server (`[storage] redis_url`, a reconnecting `ConnectionManager`) or a Redis
//! Cluster (`[storage] redis_cluster`, the redis crate's cluster client, which follows
//! `MOVED`/`ASK` and refreshes its slot map by itself).
//!
//! Both are used through `redis::aio::ConnectionLike`, so a command, a script or a pipeline
//! is sent the same way to either. What differs is what one request may touch: on a Cluster
//! a script's keys and a pipeline's commands must all be in **one hash slot** (the cluster
//! client refuses a pipeline that crosses slots before sending it). [`RedisConn::is_cluster`]
//! tells the callers, which lay their keys out with hash tags and split their pipelines with
//! [`Pipes`] (decision 0016).

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::collections::HashMap;
use std::time::Duration;

/// Where the fleet's Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (`redis_url`).
    Single(String),
    /// A Redis Cluster, by its seed nodes (`redis_cluster`).
    Cluster(Vec<String>),
}

/// A connection to a single server or to a Cluster (cheap to clone: both are handles to a
/// multiplexed connection).
#[derive(Clone)]
pub enum RedisConn {
    /// A single server.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl From<ConnectionManager> for RedisConn {
    fn from(c: ConnectionManager) -> Self {
        RedisConn::Single(c)
    }
}

impl From<ClusterConnection> for RedisConn {
    fn from(c: ClusterConnection) -> Self {
        RedisConn::Cluster(c)
    }
}

impl RedisConn {
    /// Connect to `target`, waiting at most `within`.
    pub async fn connect(target: &RedisTarget, within: Duration) -> Result<RedisConn, String> {
        let fut = async {
            match target {
                RedisTarget::Single(url) => {
                    let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
                    client
                        .get_connection_manager()
                        .await
                        .map(RedisConn::Single)
                        .map_err(|e| e.to_string())
                }
                RedisTarget::Cluster(seeds) => {
                    let client =
                        redis::cluster::ClusterClient::builder(seeds.iter().map(|s| s.as_str()))
                            .connection_timeout(within)
                            .build()
                            .map_err(|e| e.to_string())?;
                    client
                        .get_async_connection()
                        .await
                        .map(RedisConn::Cluster)
                        .map_err(|e| e.to_string())
                }
            }
        };
        match tokio::time::timeout(within, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {within:?}")),
        }
    }

    /// A Cluster: every request must stay within one hash slot.
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// A hash tag for `s` that is never empty and always ends at the brace DCE writes after it,
/// whatever `s` holds (a caller's user part can be anything): `%` is written `%25`, `{` `%7B`,
/// `}` `%7D`, and the empty string `%` (which no escaped string can be). Two keys that both
/// carry `{tag(s)}`, after a prefix without braces, are in one slot.
pub fn hash_tag(s: &str) -> String {
    if s.is_empty() {
        return "%".into();
    }
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    out
}

/// Commands to send as pipelines: all in one on a single server (one round trip, in the
/// order pushed); one per hash slot on a Cluster (each in the order pushed, sent side by
/// side). Each command is pushed with the key whose slot it touches.
pub struct Pipes {
    cluster: bool,
    pipes: Vec<Pipeline>,
    slots: HashMap<Slot, usize>,
}

impl Pipes {
    /// Empty pipelines for a connection of this kind.
    pub fn new(cluster: bool) -> Pipes {
        Pipes {
            cluster,
            pipes: Vec::new(),
            slots: HashMap::new(),
        }
    }

    /// The pipeline for commands on `key` and its index (what [`Pipes::query`] answers by).
    pub fn pipe(&mut self, key: &str) -> (usize, &mut Pipeline) {
        let i = if self.cluster {
            let next = self.pipes.len();
            *self.slots.entry(Slot::for_key(key)).or_insert(next)
        } else {
            0
        };
        if i == self.pipes.len() {
            self.pipes.push(redis::pipe());
        }
        (i, &mut self.pipes[i])
    }

    /// How many pipelines there are.
    pub fn len(&self) -> usize {
        self.pipes.len()
    }

    /// No command was pushed.
    pub fn is_empty(&self) -> bool {
        self.pipes.is_empty()
    }

    /// Send every pipeline (side by side), each with `deadline`; the answers by index.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        con: &RedisConn,
        deadline: Duration,
    ) -> Vec<Result<T, PipeError>> {
        let runs = self.pipes.iter().map(|p| {
            let mut con = con.clone();
            async move {
                match tokio::time::timeout(deadline, p.query_async::<T>(&mut con)).await {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(e)) => Err(PipeError::Redis(e)),
                    Err(_) => Err(PipeError::Timeout(deadline)),
                }
            }
        });
        futures_util::future::join_all(runs).await
    }
}

/// What went wrong with one pipeline.
#[derive(Debug)]
pub enum PipeError {
    /// Redis (or the client) answered with an error.
    Redis(redis::RedisError),
    /// No answer within the deadline.
    Timeout(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(k: &str) -> Slot {
        Slot::for_key(k)
    }

    #[test]
    fn a_tag_puts_two_keys_in_one_slot_whatever_the_string() {
        for s in [
            "3105551234",
            "",
            "}",
            "{",
            "a}b",
            "{x}",
            "%7D",
            "anonymous",
            "日本",
        ] {
            let t = hash_tag(s);
            assert!(!t.is_empty() && !t.contains(['{', '}']), "{s:?} → {t:?}");
            assert_eq!(
                slot(&format!("dce:dnc:{{{t}}}")),
                slot(&format!("dce:freq:{{{t}}}:auto")),
                "{s:?}"
            );
        }
        // escaping keeps strings apart
        assert_ne!(hash_tag("}"), hash_tag("%7D"));
        assert_ne!(hash_tag(""), hash_tag("%"));
        assert_eq!(hash_tag("3105551234"), "3105551234");
    }

    #[test]
    fn single_server_commands_share_one_pipeline_cluster_ones_one_per_slot() {
        let mut p = Pipes::new(false);
        assert!(p.is_empty());
        assert_eq!(p.pipe("x:cap:{acme}:slots").0, 0);
        assert_eq!(p.pipe("x:cap:{bravo}:slots").0, 0);
        assert_eq!(p.len(), 1);
        let mut p = Pipes::new(true);
        assert_eq!(p.pipe("x:cap:{acme}:slots").0, 0);
        assert_eq!(p.pipe("x:cap:{bravo}:slots").0, 1);
        assert_eq!(p.pipe("x:cap:{acme}:h:1").0, 0);
        assert_eq!(p.pipe("x:nodes").0, 2);
        assert_eq!(p.len(), 3);
    }
}
