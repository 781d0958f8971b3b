//! Fleet-wide buyer caps end to end (issue #15, item 1): two real `dce` nodes sharing Redis,
//! SIPp as the carriers and the buyers. A buyer with `max_concurrent = 1` takes one call
//! across the fleet and the overlapping call on the other node goes to the next buyer; a
//! `kill -9` of the node holding the slot frees it within `cap_lease_s`; a daily cap holds
//! across both nodes; with Redis stopped calls keep flowing under `on_cap_error = "local"`,
//! the CDR and the counters say so, and the counts reach Redis when it returns.

mod support;

use std::time::Duration;
use support::dce_process::{counter, free_port, jsonl_cdrs, outcomes, Dce, TempDir};
use support::sipp::{self, answering, carrier_call, short_call};

/// A node's config: buyers acme (1500, `acme_caps`) and bravo (1200), Redis at `redis`.
fn node(
    port: u16,
    dir: &std::path::Path,
    redis: &str,
    prefix: &str,
    (acme, bravo): (u16, u16),
    acme_caps: &str,
) -> String {
    format!(
        "[node]\nid = \"n{port}\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\n\
         [storage]\nredis_url = \"{redis}\"\nredis_key_prefix = \"{prefix}\"\nredis_timeout_ms = 200\n\
         cap_lease_s = 3\non_cap_error = \"local\"\n\
         database_url = \"sqlite://{}\"\nspool_dir = \"{}\"\n\
         [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\non_lookup_error = \"allow_and_flag\"\n\
         [cdr]\njsonl_path = \"{}\"\n\
         [[carrier]]\nid = \"carrier-a\"\nsources = [\"127.0.0.1/32\"]\n\
         [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\nbillable_after_s = 0\n\
         [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{acme}\"\nbid_cents = 1500\n{acme_caps}\n\
         [[buyer]]\nid = \"bravo\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{bravo}\"\nbid_cents = 1200\n",
        dir.join("dce.db").display(),
        dir.join("spool").display(),
        dir.join("cdr.jsonl").display()
    )
}

#[test]
fn one_slot_across_the_fleet_and_a_dead_nodes_slot_comes_back() {
    let Some(bin) = sipp::sipp() else { return };
    let Some(mut con) = support::redis_server::redis() else {
        return;
    };
    let prefix = format!("dce-caps-{}-{}", std::process::id(), free_port());
    let ports = (free_port(), free_port());
    let redis = support::redis_server::REDIS;
    let a = Dce::start_logging(
        |p, d| node(p, d, redis, &prefix, ports, "max_concurrent = 1"),
        "info,dce::call=debug",
    );
    let b = Dce::start_with(|p, d| node(p, d, redis, &prefix, ports, "max_concurrent = 1"));
    let on_acme = answering(&bin, ports.0, 2);
    let on_bravo = answering(&bin, ports.1, 1);

    // A long call on node A holds acme's only slot ...
    let long = carrier_call(&bin, &a, 60_000);
    a.wait_for_log("call answered", Duration::from_secs(10));
    // ... so node B's call goes to bravo.
    let (ok, out) = short_call(&bin, &b);
    assert!(ok, "overlapping call on node B:\n{out}\n{}", b.log());
    assert!(on_bravo.finish(20).0, "bravo answered B's call");

    // Node A dies holding the slot: it comes back within the lease (3 s).
    a.signal("KILL");
    drop(long);
    std::thread::sleep(Duration::from_millis(4_500));
    let (ok, out) = short_call(&bin, &b);
    assert!(ok, "call on node B after A died:\n{out}\n{}", b.log());
    let (_, log_b, dir_b) = b.stop_keep();
    let acme_calls = on_acme.finish(5).1;
    support::redis_server::clean(&mut con, &prefix);
    let cdrs = jsonl_cdrs(&dir_b.0);
    assert_eq!(cdrs.len(), 2, "{log_b}\n{acme_calls}");
    assert_eq!(
        outcomes(&cdrs[0]),
        ["acme=excluded:concurrency", "bravo=won"],
        "{log_b}"
    );
    assert_eq!(cdrs[1]["buyer_id"], "acme", "{log_b}");
    assert!(
        cdrs.iter().all(|c| c.get("fleet_caps").is_none()),
        "{cdrs:?}"
    );
}

#[test]
fn a_daily_cap_holds_across_both_nodes() {
    let Some(bin) = sipp::sipp() else { return };
    let Some(mut con) = support::redis_server::redis() else {
        return;
    };
    let prefix = format!("dce-caps-{}-{}", std::process::id(), free_port());
    let ports = (free_port(), free_port());
    let redis = support::redis_server::REDIS;
    let a = Dce::start_with(|p, d| node(p, d, redis, &prefix, ports, "daily_cap = 1"));
    let b = Dce::start_with(|p, d| node(p, d, redis, &prefix, ports, "daily_cap = 1"));
    let on_acme = answering(&bin, ports.0, 1);
    let on_bravo = answering(&bin, ports.1, 1);
    let (ok, out) = short_call(&bin, &a);
    assert!(ok, "first call, node A:\n{out}\n{}", a.log());
    assert!(on_acme.finish(20).0, "acme answered A's call");
    // the answered count is written without waiting: give it a moment
    std::thread::sleep(Duration::from_millis(300));
    let (ok, out) = short_call(&bin, &b);
    assert!(ok, "second call, node B:\n{out}\n{}", b.log());
    assert!(on_bravo.finish(20).0, "bravo answered B's call");
    let (_, log_a, dir_a) = a.stop_keep();
    let (_, log_b, dir_b) = b.stop_keep();
    support::redis_server::clean(&mut con, &prefix);
    let (ca, cb) = (jsonl_cdrs(&dir_a.0), jsonl_cdrs(&dir_b.0));
    assert_eq!((ca.len(), cb.len()), (1, 1), "{log_a}\n{log_b}");
    assert_eq!(ca[0]["buyer_id"], "acme");
    assert_eq!(
        outcomes(&cb[0]),
        ["acme=excluded:daily_cap", "bravo=won"],
        "{log_b}"
    );
}

#[test]
fn with_redis_stopped_calls_flow_on_this_nodes_share_and_the_counts_converge() {
    let Some(bin) = sipp::sipp() else { return };
    // a Redis of our own that keeps its data across a restart (append-only file)
    if support::redis_server::redis().is_none() {
        return;
    }
    let port = free_port();
    let data = TempDir::new("caps-redis");
    let start = || {
        support::redis_server::spawn(
            port,
            &data.0,
            &[
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ],
        )
    };
    let url = format!("redis://127.0.0.1:{port}/");
    let up = || support::redis_server::wait_up(&url);
    let mut server = start();
    drop(up());
    let prefix = "dce-caps";
    let ports = (free_port(), free_port());
    let a = Dce::start_with(|p, d| node(p, d, &url, prefix, ports, "daily_cap = 10"));
    let on_acme = answering(&bin, ports.0, 2);
    let (ok, out) = short_call(&bin, &a);
    assert!(ok, "first call, Redis up:\n{out}\n{}", a.log());
    std::thread::sleep(Duration::from_millis(300));

    server.kill().unwrap();
    server.wait().unwrap();
    let (ok, out) = short_call(&bin, &a);
    assert!(ok, "second call, Redis down:\n{out}\n{}", a.log());
    assert!(on_acme.finish(20).0, "acme answered both calls");

    server = start();
    let mut con = up();
    // the next renewal (a third of the 3 s lease) sends what waited
    let day_key = || -> Option<String> {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:cap:{{acme}}:d:*"))
            .query(&mut up())
            .unwrap();
        keys.into_iter().next()
    };
    let mut answered = 0;
    for _ in 0..60 {
        if let Some(k) = day_key() {
            answered = redis::cmd("GET").arg(&k).query(&mut con).unwrap_or(0);
            if answered == 2 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, log, dir) = a.stop_keep();
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(answered, 2, "both answered calls counted in Redis:\n{log}");
    let cdrs = jsonl_cdrs(&dir.0);
    assert_eq!(cdrs.len(), 2, "{log}");
    assert!(cdrs[0].get("fleet_caps").is_none(), "{}", cdrs[0]);
    assert_eq!(cdrs[1]["fleet_caps"], "lookup_failed:local", "{}", cdrs[1]);
    assert_eq!(cdrs[1]["buyer_id"], "acme");
    assert!(counter(&log, "cap_lookup_errors") >= 1, "{log}");
}
