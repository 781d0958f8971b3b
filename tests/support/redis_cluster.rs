//! A Redis Cluster of a test's own: three masters (no replicas) on free loopback ports, made
//! with `redis-cli --cluster create`, killed and removed when dropped.

use super::dce_process::{free_port, TempDir};
use super::redis_server::{redis_server_installed, spawn, wait_up};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The cluster (its processes end with it).
pub struct RedisCluster {
    /// Each master's client port, with its process.
    nodes: Vec<(u16, Child)>,
    _dir: TempDir,
}

impl RedisCluster {
    /// Start three masters and join them; `None` (NOT RUN) when `redis-server` is absent
    /// outside CI.
    pub fn start(test: &str) -> Option<RedisCluster> {
        if !redis_server_installed(test) {
            return None;
        }
        let dir = TempDir::new("redis-cluster");
        let path = dir.0.clone();
        // made first: a panic from here on still kills what was started
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            _dir: dir,
        };
        for _ in 0..3 {
            // the bus port is chosen too: port + 10000 may be past 65535 or taken
            let (port, bus) = (free_port(), free_port());
            let conf = path.join(format!("nodes-{port}.conf"));
            let child = spawn(
                port,
                &path,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf.display().to_string(),
                    "--cluster-port",
                    &bus.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
            );
            cluster.nodes.push((port, child));
        }
        for &(port, _) in &cluster.nodes {
            drop(wait_up(&url(port)));
        }
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for &(port, _) in &cluster.nodes {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let mut create = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli");
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            match create.try_wait().expect("redis-cli") {
                Some(s) => {
                    assert!(s.success(), "redis-cli --cluster create failed: {s}");
                    break;
                }
                None if Instant::now() > until => {
                    let _ = create.kill();
                    let _ = create.wait();
                    panic!("redis-cli --cluster create did not finish in 60 s");
                }
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        // every node must agree that the cluster is up
        for &(port, _) in &cluster.nodes {
            let mut con = wait_up(&url(port));
            let mut ok = false;
            for _ in 0..300 {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut con)
                    .unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    ok = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(ok, "node {port} never saw cluster_state:ok");
        }
        Some(cluster)
    }

    /// The seed nodes' URLs (every master).
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(|&(p, _)| url(p)).collect()
    }

    /// The masters' ports.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|&(p, _)| p).collect()
    }

    /// A cluster-aware (blocking) connection: commands go to the node of their key.
    pub fn connection(&self) -> redis::cluster::ClusterConnection {
        redis::cluster::ClusterClient::new(self.seeds())
            .and_then(|c| c.get_connection())
            .expect("cluster connection")
    }

    /// A plain connection to the master on `port`.
    pub fn node(&self, port: u16) -> redis::Connection {
        wait_up(&url(port))
    }

    /// The keys matching `pattern`, on every node.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut all = Vec::new();
        for port in self.ports() {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(pattern)
                .query(&mut self.node(port))
                .unwrap_or_default();
            all.extend(keys);
        }
        all.sort();
        all
    }

    /// The port of the master that holds `key`'s slot.
    pub fn port_of(&self, key: &str) -> u16 {
        let mut con = self.node(self.nodes[0].0);
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut con)
            .expect("CLUSTER KEYSLOT");
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query(&mut con)
            .expect("CLUSTER NODES");
        // "<id> <ip>:<port>@<bus> <flags> <master> <ping> <pong> <epoch> <link> <slots>…"
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let Some(port) = f
                .get(1)
                .and_then(|a| a.split('@').next())
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok())
            else {
                continue;
            };
            for range in f.iter().skip(8) {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(lo), Ok(hi)) = (lo.parse::<i64>(), hi.parse::<i64>()) {
                    if (lo..=hi).contains(&slot) {
                        return port;
                    }
                }
            }
        }
        panic!("no node holds slot {slot} of {key}:\n{nodes}");
    }

    /// `SCRIPT FLUSH` on every node: the next `EVALSHA` anywhere meets `NOSCRIPT`.
    pub fn flush_scripts(&self) {
        for port in self.ports() {
            let _: () = redis::cmd("SCRIPT")
                .arg("FLUSH")
                .query(&mut self.node(port))
                .expect("SCRIPT FLUSH");
        }
    }

    /// Delete every key under `prefix` (a test's own), node by node, key by key (a `DEL` of
    /// keys of several slots is refused by a cluster).
    pub fn clean(&self, prefix: &str) {
        for port in self.ports() {
            let mut con = self.node(port);
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}:*"))
                .query(&mut con)
                .unwrap_or_default();
            for k in keys {
                let _: Result<i64, _> = redis::cmd("DEL").arg(&k).query(&mut con);
            }
        }
    }
}

fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/")
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
