//! Fleet-wide buyer caps in Redis (`[storage] redis_url` or `redis_cluster`): the I/O behind
//! `call/fleet.rs`.
//!
//! One task per node owns it all and works through one ordered queue: the leases calls ask
//! for (`Query::Lease`), the writes nobody waits for (`Output::Caps`: releases, answered
//! counts, refunds, slots held on this node's share while Redis was away) and, every third
//! of `cap_lease_s`, the renewal of every lease this node holds plus its heartbeat. What is
//! queued when the task wakes goes out as one pipeline, in order, so a lease's release can
//! never overtake its grant.
//!
//! In Redis (every key of one buyer shares the hash tag `{<buyer>}`, so each script's keys
//! are in one Cluster slot; on a Cluster a batch goes out as one pipeline per hash slot,
//! side by side, each in the queue's order — so one buyer's writes stay in order, and only
//! writes of different buyers, which touch different keys, may land in another order):
//! - `<prefix>:cap:{<buyer>}:slots`, a sorted set of leases scored by expiry (Unix ms, by
//!   Redis's clock): a slot is a member; a node that dies stops renewing, and its leases
//!   expire within `cap_lease_s`;
//! - `…:h:<hour>`, `…:d:<day>`, `…:m:<month>`: answered calls in the buyer's local hour, day
//!   and month (the keys `dce_routing::local_keys` gives), expiring after their period;
//! - `…:sd:<day>`, `…:sm:<month>`: cents committed that day and month;
//! - `<prefix>:nodes`, the live nodes by heartbeat expiry, which `on_cap_error = "local"`
//!   divides the caps by.
//!
//! A write that fails (Redis away) is kept, in order, and sent again with the next batch, so
//! the counts converge when Redis returns; a lease held on this node's share is written to
//! Redis by the next renewal that gets through.

use crate::call::lookup::{CapWrite, LeaseAnswer, LeaseAsk, LeaseResult};
use crate::call::{Answer, LookupId};
use crate::redis_conn::{PipeError, Pipes, RedisConn};
use dce_routing::Exclusion;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Take a slot unless a cap is reached: 0 = taken; else which cap (see [`full`]). KEYS:
/// slots, hour, day, month, day's spend, month's spend. ARGV: lease, lease ms, then the caps
/// (concurrent, hourly, daily, monthly, daily budget, monthly budget; 0 = none) and the bid.
const TAKE: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max = tonumber(ARGV[3])
if max > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= max then
    return 1
  end
end
local function count(k) return tonumber(redis.call('GET', k) or '0') end
for i = 2, 4 do
  local cap = tonumber(ARGV[i + 2])
  if cap > 0 and count(KEYS[i]) >= cap then return i end
end
local bid = tonumber(ARGV[9])
for i = 5, 6 do
  local budget = tonumber(ARGV[i + 2])
  if budget > 0 and count(KEYS[i]) + bid > budget then return i end
end
if max > 0 then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
end
return 0
";

/// Hold (or keep holding) leases: KEYS: slots; ARGV: lease ms, then the leases.
const RENEW: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local ms = tonumber(ARGV[1])
local exp = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + ms
local args = {}
for i = 2, #ARGV do
  args[#args + 1] = exp
  args[#args + 1] = ARGV[i]
end
redis.call('ZADD', KEYS[1], unpack(args))
redis.call('PEXPIRE', KEYS[1], ms * 2)
return 0
";

/// Leases per `RENEW` (its variadic `ZADD` unpacks two arguments per lease).
const RENEW_CHUNK: usize = 1000;

/// This node's heartbeat; returns the live nodes. KEYS: nodes; ARGV: node, lease ms.
const NODES: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return redis.call('ZCARD', KEYS[1])
";

/// Writes kept for the next batch while Redis is away (the oldest go first past this).
const MAX_BACKLOG: usize = 100_000;
/// What a batch may wait for Redis before it counts as failed (at most a sixth of the lease,
/// so a renewal delayed by one batch still lands in time).
const BATCH_DEADLINE: Duration = Duration::from_secs(1);

/// Where a lease's answer goes: the asking worker's lookup answers.
pub type Reply = mpsc::UnboundedSender<(LookupId, Answer, Option<Instant>)>;

enum Op {
    Take {
        ask: LeaseAsk,
        id: LookupId,
        reply: Reply,
    },
    Write(CapWrite),
}

/// The handle every SIP worker uses (cheap to clone).
#[derive(Clone)]
pub struct Caps {
    tx: mpsc::UnboundedSender<Op>,
    nodes: Arc<AtomicU32>,
}

impl Caps {
    /// Start the node's caps task on the current runtime. `con`: `None` when Redis was
    /// unreachable at start (every lease then fails and `on_cap_error` decides).
    pub fn start(con: Option<RedisConn>, prefix: &str, lease: Duration, node: &str) -> Caps {
        let (tx, rx) = mpsc::unbounded_channel();
        let nodes = Arc::new(AtomicU32::new(0));
        let w = Worker {
            con,
            prefix: prefix.to_owned(),
            lease_ms: lease.as_millis().max(1000) as u64,
            node: node.to_owned(),
            nodes: nodes.clone(),
            held: HashMap::new(),
            backlog: VecDeque::new(),
            dropped: 0,
        };
        tokio::spawn(w.run(rx));
        Caps { tx, nodes }
    }

    /// Ask for a lease; the answer comes back on `reply` with `id`.
    pub fn take(&self, ask: LeaseAsk, id: LookupId, reply: Reply) {
        if let Err(mpsc::error::SendError(Op::Take { reply, .. })) =
            self.tx.send(Op::Take { ask, id, reply })
        {
            let answer = LeaseAnswer {
                result: LeaseResult::Error("fleet caps task gone".into()),
                nodes: self.nodes(),
            };
            let _ = reply.send((id, Answer::Lease(answer), None));
        }
    }

    /// Queue a write.
    pub fn write(&self, w: CapWrite) {
        let _ = self.tx.send(Op::Write(w));
    }

    /// Live nodes at the last heartbeat (0: none got through yet).
    pub fn nodes(&self) -> u32 {
        self.nodes.load(Ordering::Relaxed)
    }
}

/// A batch that failed.
#[derive(Debug)]
struct Failed {
    error: String,
    /// Surely not run: safe to send again.
    unsent: bool,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error)
    }
}

struct Worker {
    con: Option<RedisConn>,
    prefix: String,
    lease_ms: u64,
    node: String,
    nodes: Arc<AtomicU32>,
    /// Leases this node holds: lease → buyer.
    held: HashMap<String, String>,
    /// Writes that failed, oldest first.
    backlog: VecDeque<CapWrite>,
    /// Writes given up because the backlog was full (logged).
    dropped: u64,
}

/// The exclusion a [`TAKE`] result names.
fn full(code: i64) -> Option<Exclusion> {
    Some(match code {
        1 => Exclusion::Concurrency,
        2 => Exclusion::HourlyCap,
        3 => Exclusion::DailyCap,
        4 => Exclusion::MonthlyCap,
        5 => Exclusion::Budget,
        6 => Exclusion::MonthlyBudget,
        _ => return None,
    })
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Op>) {
        // the heartbeat first: the fleet's size is known before the first lease is answered
        self.renew().await;
        let every = Duration::from_millis(self.lease_ms / 3);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                op = rx.recv() => {
                    let Some(op) = op else { return };
                    let mut ops = vec![op];
                    while ops.len() < 512 {
                        match rx.try_recv() {
                            Ok(op) => ops.push(op),
                            Err(_) => break,
                        }
                    }
                    self.batch(ops).await;
                }
                _ = tick.tick() => self.renew().await,
            }
        }
    }

    fn key(&self, buyer: &str, part: &str) -> String {
        format!("{}:cap:{{{buyer}}}:{part}", self.prefix)
    }

    fn cluster(&self) -> bool {
        self.con.as_ref().is_some_and(RedisConn::is_cluster)
    }

    /// Push the commands of one write (none of their results is read); the pipeline they
    /// went to, or `None` for a write with nothing to send.
    fn push_write(&self, pipes: &mut Pipes, w: &CapWrite) -> Option<usize> {
        match w {
            CapWrite::Release { member, buyer } => {
                let key = self.key(buyer, "slots");
                let (i, pipe) = pipes.pipe(&key);
                pipe.zrem(key, member).ignore();
                Some(i)
            }
            CapWrite::HoldLocal { member, buyer } => {
                let key = self.key(buyer, "slots");
                let (i, pipe) = pipes.pipe(&key);
                pipe.cmd("EVAL")
                    .arg(RENEW)
                    .arg(1)
                    .arg(key)
                    .arg(self.lease_ms)
                    .arg(member)
                    .ignore();
                Some(i)
            }
            CapWrite::Count {
                buyer,
                keys,
                calls,
                cents,
            } => {
                let mut parts = Vec::new();
                if *calls != 0 {
                    parts.push((format!("h:{}", keys.hour), *calls, 3 * 3600));
                    parts.push((format!("d:{}", keys.day), *calls, 3 * 86_400));
                    parts.push((format!("m:{}", keys.month), *calls, 35 * 86_400));
                }
                if *cents != 0 {
                    parts.push((format!("sd:{}", keys.day), *cents, 3 * 86_400));
                    parts.push((format!("sm:{}", keys.month), *cents, 35 * 86_400));
                }
                let mut at = None;
                for (part, by, keep_s) in parts {
                    let k = self.key(buyer, &part);
                    let (i, pipe) = pipes.pipe(&k);
                    pipe.incr(&k, by).ignore().expire(&k, keep_s).ignore();
                    at = Some(i);
                }
                at
            }
        }
    }

    /// Send queued work (one pipeline, or one per hash slot on a Cluster), in order; answer
    /// each lease.
    async fn batch(&mut self, ops: Vec<Op>) {
        let mut pipes = Pipes::new(self.cluster());
        let retried: Vec<CapWrite> = self.backlog.drain(..).collect();
        let retried_at: Vec<Option<usize>> = retried
            .iter()
            .map(|w| self.push_write(&mut pipes, w))
            .collect();
        let mut at = Vec::with_capacity(ops.len());
        for op in &ops {
            at.push(match op {
                Op::Take { ask, .. } => {
                    let l = &ask.limits;
                    let slots = self.key(&ask.buyer, "slots");
                    let (i, pipe) = pipes.pipe(&slots);
                    pipe.cmd("EVAL")
                        .arg(TAKE)
                        .arg(6)
                        .arg(slots)
                        .arg(self.key(&ask.buyer, &format!("h:{}", ask.keys.hour)))
                        .arg(self.key(&ask.buyer, &format!("d:{}", ask.keys.day)))
                        .arg(self.key(&ask.buyer, &format!("m:{}", ask.keys.month)))
                        .arg(self.key(&ask.buyer, &format!("sd:{}", ask.keys.day)))
                        .arg(self.key(&ask.buyer, &format!("sm:{}", ask.keys.month)))
                        .arg(&ask.member)
                        .arg(self.lease_ms)
                        .arg(l.concurrent)
                        .arg(l.hourly)
                        .arg(l.daily)
                        .arg(l.monthly)
                        .arg(l.daily_budget)
                        .arg(l.monthly_budget)
                        .arg(ask.bid_cents);
                    Some(i)
                }
                Op::Write(w) => self.push_write(&mut pipes, w),
            });
        }
        let results = self.query::<Vec<i64>>(&pipes).await;
        let nodes = self.nodes.load(Ordering::Relaxed);
        // each pipeline's answers, in the order of its leases
        let mut codes: Vec<std::vec::IntoIter<i64>> = results
            .iter()
            .map(|r| match r {
                Ok(codes) => codes.clone().into_iter(),
                Err(_) => Vec::new().into_iter(),
            })
            .collect();
        let failed = |i: Option<usize>| i.and_then(|i| results[i].as_ref().err());
        let mut writes = Vec::new();
        // The node's own record of what it holds follows the queue's order.
        for (op, i) in ops.into_iter().zip(at) {
            match op {
                Op::Take { ask, id, reply } => {
                    let code = i.and_then(|i| codes[i].next());
                    let result = match (failed(i), code) {
                        (None, Some(0)) => {
                            if ask.limits.concurrent > 0 {
                                self.held.insert(ask.member.clone(), ask.buyer.clone());
                            }
                            LeaseResult::Granted
                        }
                        (None, Some(code)) => match full(code) {
                            Some(x) => LeaseResult::Full(x),
                            None => LeaseResult::Error(format!("unexpected answer {code}")),
                        },
                        (None, None) => LeaseResult::Error("answer missing".into()),
                        (Some(e), _) => LeaseResult::Error(e.error.clone()),
                    };
                    let answer = LeaseAnswer { result, nodes };
                    let _ = reply.send((id, Answer::Lease(answer), None));
                }
                Op::Write(w) => {
                    match &w {
                        CapWrite::Release { member, .. } => {
                            self.held.remove(member);
                        }
                        CapWrite::HoldLocal { member, buyer } => {
                            self.held.insert(member.clone(), buyer.clone());
                        }
                        CapWrite::Count { .. } => {}
                    }
                    // a slot held locally reaches Redis with the next renewal anyway
                    if !matches!(w, CapWrite::HoldLocal { .. }) {
                        writes.push((w, i));
                    }
                }
            }
        }
        let all = retried.into_iter().zip(retried_at).chain(writes);
        self.settle(all, &results);
    }

    /// After a batch or a renewal: keep, in order, the writes of pipelines that surely did not
    /// run, and log those that may or may not have.
    fn settle(
        &mut self,
        writes: impl Iterator<Item = (CapWrite, Option<usize>)>,
        results: &[Result<Vec<i64>, Failed>],
    ) -> usize {
        let (mut kept, mut lost, mut sent) = (0usize, 0usize, 0usize);
        let mut first: Option<String> = None;
        for (w, i) in writes {
            match i.and_then(|i| results[i].as_ref().err()) {
                None => sent += 1,
                Some(e) => {
                    first.get_or_insert_with(|| e.error.clone());
                    if e.unsent {
                        kept += 1;
                        self.keep(w);
                    } else {
                        lost += 1;
                    }
                }
            }
        }
        let error = first.unwrap_or_default();
        if kept > 0 {
            tracing::warn!(%error, kept, "fleet caps: writes to Redis failed; kept for the next try");
        }
        if lost > 0 {
            tracing::error!(%error, lost, "fleet caps: Redis may or may not have applied these writes; not sent again (counts may be short)");
        }
        if kept + lost == 0 {
            sent
        } else {
            0
        }
    }

    fn keep(&mut self, w: CapWrite) {
        if self.backlog.len() >= MAX_BACKLOG {
            self.backlog.pop_front();
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                tracing::error!(
                    dropped = self.dropped,
                    "fleet caps: Redis away too long; the oldest unsent counts are dropped"
                );
            }
        }
        self.backlog.push_back(w);
    }

    /// Renew every lease this node holds, beat its heartbeat, and send what failed before.
    async fn renew(&mut self) {
        let mut pipes = Pipes::new(self.cluster());
        let nodes_key = format!("{}:nodes", self.prefix);
        let (heartbeat, pipe) = pipes.pipe(&nodes_key);
        // first in its pipeline: its answer is the pipeline's first
        pipe.cmd("EVAL")
            .arg(NODES)
            .arg(1)
            .arg(&nodes_key)
            .arg(&self.node)
            .arg(self.lease_ms);
        let mut by_buyer: HashMap<&str, Vec<&str>> = HashMap::new();
        for (member, buyer) in &self.held {
            by_buyer.entry(buyer).or_default().push(member);
        }
        for (buyer, members) in by_buyer {
            let key = self.key(buyer, "slots");
            let (_, pipe) = pipes.pipe(&key);
            for chunk in members.chunks(RENEW_CHUNK) {
                let cmd = pipe
                    .cmd("EVAL")
                    .arg(RENEW)
                    .arg(1)
                    .arg(&key)
                    .arg(self.lease_ms);
                for m in chunk {
                    cmd.arg(*m);
                }
                cmd.ignore();
            }
        }
        let retried: Vec<CapWrite> = self.backlog.drain(..).collect();
        let retried_at: Vec<Option<usize>> = retried
            .iter()
            .map(|w| self.push_write(&mut pipes, w))
            .collect();
        let results = self.query::<Vec<i64>>(&pipes).await;
        match &results[heartbeat] {
            Ok(n) => {
                let n = n
                    .first()
                    .copied()
                    .unwrap_or(1)
                    .clamp(1, i64::from(u32::MAX));
                self.nodes.store(n as u32, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(error = %e, held = self.held.len(), "fleet caps: heartbeat failed");
            }
        }
        if let Some(e) = results.iter().find_map(|r| r.as_ref().err()) {
            tracing::debug!(error = %e, held = self.held.len(), "fleet caps: lease renewal failed");
        }
        let sent = self.settle(retried.into_iter().zip(retried_at), &results);
        if sent > 0 {
            tracing::info!(sent, "fleet caps: Redis is back; kept writes sent");
        }
    }

    /// Run `pipes` (one answer per pipeline). An error says whether the pipeline surely did
    /// not run (`unsent`: no connection, refused, dropped — no reply from the server) — only
    /// then are its writes kept to be sent again; after a server error some of it may have
    /// run, and a count sent twice would be worse than one missed (logged).
    async fn query<T: redis::FromRedisValue>(&self, pipes: &Pipes) -> Vec<Result<T, Failed>> {
        let Some(con) = &self.con else {
            return (0..pipes.len())
                .map(|_| {
                    Err(Failed {
                        error: "Redis not connected".into(),
                        unsent: true,
                    })
                })
                .collect();
        };
        let deadline = BATCH_DEADLINE.min(Duration::from_millis(self.lease_ms / 6));
        pipes
            .query::<T>(con, deadline)
            .await
            .into_iter()
            .map(|r| {
                r.map_err(|e| match e {
                    PipeError::Redis(e) => Failed {
                        // a reply from the server (an error code) means the pipeline reached it
                        unsent: e.code().is_none(),
                        error: e.to_string(),
                    },
                    // Redis away shows as no answer too (the connection manager reconnecting):
                    // kept and sent again, at the risk of a count applied twice (decision 0016)
                    PipeError::Timeout(d) => Failed {
                        error: format!("no answer within {d:?}"),
                        unsent: true,
                    },
                })
            })
            .collect()
    }
}
