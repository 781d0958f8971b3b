//! DCE against a Redis Cluster end to end (issue #15, item 1): two real `dce` nodes given the
//! same cluster's seed nodes (`[storage] redis_cluster`), SIPp as the carrier and the buyers,
//! a three-master cluster of the test's own. A buyer with `max_concurrent = 1` takes one call
//! across the fleet and the overlapping call on the other node goes to the next buyer; a
//! `kill -9` of the node holding the slot frees it within `cap_lease_s`. The fleet-wide
//! compliance check works through the cluster too: the frequency cap counts calls of both
//! nodes, and a number put on the shared DNC through one node's API is refused by the other.

mod support;

use std::path::Path;
use std::time::Duration;
use support::dce_process::{free_port, jsonl_cdrs, outcomes, Dce};
use support::redis_cluster::RedisCluster;
use support::sipp::{self, answering, carrier_call, short_call};

/// SHA-256 of "ops-secret".
const OPS_SHA: &str = "32323cfa9ec9d62750daad0836a4cf3d7b60d23723b7852a529667deed01669f";

/// A node's config: the cluster's seeds, buyers acme (1500, `acme_caps`) and bravo (1200),
/// `compliance` added to `[compliance]`, an API on `http`.
struct Node<'a> {
    seeds: &'a [String],
    prefix: &'a str,
    buyers: (u16, u16),
    acme_caps: &'a str,
    compliance: &'a str,
    http: u16,
}

impl Node<'_> {
    fn config(&self, port: u16, dir: &Path) -> String {
        let seeds: Vec<String> = self.seeds.iter().map(|s| format!("\"{s}\"")).collect();
        let (acme, bravo) = self.buyers;
        format!(
            "[node]\nid = \"n{port}\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\n\
             [storage]\nredis_cluster = [{}]\nredis_key_prefix = \"{}\"\nredis_timeout_ms = 500\n\
             cap_lease_s = 3\non_cap_error = \"skip_buyer\"\n\
             database_url = \"sqlite://{}\"\nspool_dir = \"{}\"\n\
             [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\non_lookup_error = \"reject\"\n{}\n\
             [cdr]\njsonl_path = \"{}\"\n\
             [http]\nlisten = \"127.0.0.1:{}\"\napi_keys = [{{ name = \"ops\", sha256 = \"{OPS_SHA}\", role = \"admin\" }}]\n\
             [[carrier]]\nid = \"carrier-a\"\nsources = [\"127.0.0.1/32\"]\n\
             [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\nbillable_after_s = 0\n\
             [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{acme}\"\nbid_cents = 1500\n{}\n\
             [[buyer]]\nid = \"bravo\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{bravo}\"\nbid_cents = 1200\n",
            seeds.join(", "),
            self.prefix,
            dir.join("dce.db").display(),
            dir.join("spool").display(),
            self.compliance,
            dir.join("cdr.jsonl").display(),
            self.http,
            self.acme_caps,
        )
    }
}

/// A carrier call that must be refused `603` with `Reason: …;text="<text>"`.
fn refused_603(bin: &std::path::PathBuf, dce: &Dce, text: &str) -> (bool, String) {
    let s = std::fs::read_to_string(sipp::scenario("uac_expect.xml")).unwrap().replace(
        "<recv response=\"EXPECTED_CODE\"/>",
        &format!("<recv response=\"603\"><action><ereg regexp=\"text=.{text}.\" search_in=\"hdr\" header=\"Reason:\" check_it=\"true\" assign_to=\"r\"/></action></recv>\n  <Reference variables=\"r\"/>"),
    );
    let p = dce.dir().join(format!("expect_{text}.xml"));
    std::fs::write(&p, s).unwrap();
    let mut args = sipp::args(&p, free_port(), &["-s", "+18005550100", "-m", "1"]);
    args.push(dce.sip.to_string());
    let out = sipp::run(bin, &args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn one_slot_across_the_fleet_on_a_cluster_and_a_dead_nodes_slot_comes_back() {
    let Some(bin) = sipp::sipp() else { return };
    let Some(cluster) = RedisCluster::start("e2e cluster caps") else {
        return;
    };
    let seeds = cluster.seeds();
    let prefix = format!("dce-cluster-caps-{}", std::process::id());
    let buyers = (free_port(), free_port());
    let node = |http| Node {
        seeds: &seeds,
        prefix: &prefix,
        buyers,
        acme_caps: "max_concurrent = 1",
        compliance: "",
        http,
    };
    let (na, nb) = (node(free_port()), node(free_port()));
    let a = Dce::start_logging(|p, d| na.config(p, d), "info,dce::call=debug");
    let b = Dce::start_with(|p, d| nb.config(p, d));
    let on_acme = answering(&bin, buyers.0, 2);
    let on_bravo = answering(&bin, buyers.1, 1);

    // A long call on node A holds acme's only slot, in the cluster ...
    let long = carrier_call(&bin, &a, 60_000);
    a.wait_for_log("call answered", Duration::from_secs(10));
    let held = cluster.keys(&format!("{prefix}:cap:{{acme}}:slots"));
    assert_eq!(held.len(), 1, "acme's slots key in the cluster: {held:?}");
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
    cluster.clean(&prefix);
    let cdrs = jsonl_cdrs(&dir_b.0);
    assert_eq!(cdrs.len(), 2, "{log_b}\n{acme_calls}");
    assert_eq!(
        outcomes(&cdrs[0]),
        ["acme=excluded:concurrency", "bravo=won"],
        "{log_b}"
    );
    assert_eq!(cdrs[1]["buyer_id"], "acme", "{log_b}");
    // Redis answered every lease: no lookup failed
    assert!(
        cdrs.iter().all(|c| c.get("fleet_caps").is_none()),
        "{cdrs:?}"
    );
}

#[test]
fn the_frequency_cap_and_the_shared_dnc_hold_across_nodes_on_a_cluster() {
    let Some(bin) = sipp::sipp() else { return };
    let Some(cluster) = RedisCluster::start("e2e cluster compliance") else {
        return;
    };
    let seeds = cluster.seeds();
    let prefix = format!("dce-cluster-compliance-{}", std::process::id());
    let buyers = (free_port(), free_port());
    let (http_a, http_b) = (free_port(), free_port());
    let node = |http| Node {
        seeds: &seeds,
        prefix: &prefix,
        buyers,
        acme_caps: "",
        compliance: "max_calls_per_day = 2",
        http,
    };
    let (na, nb) = (node(http_a), node(http_b));
    let a = Dce::start_with(|p, d| na.config(p, d));
    let b = Dce::start_with(|p, d| nb.config(p, d));
    let on_acme = answering(&bin, buyers.0, 2);
    // the SIPp caller is +1 310 555 1234: one call through each node is the day's cap
    let (ok, out) = short_call(&bin, &a);
    assert!(ok, "call 1 via node A:\n{out}\n{}", a.log());
    let (ok, out) = short_call(&bin, &b);
    assert!(ok, "call 2 via node B:\n{out}\n{}", b.log());
    assert!(on_acme.finish(20).0, "acme answered both");
    let (ok, out) = refused_603(&bin, &a, "TCPA_FREQUENCY");
    assert!(
        ok,
        "call 3 via node A is over the fleet's cap:\n{out}\n{}",
        a.log()
    );
    let counter = format!("{prefix}:freq:{{3105551234}}:auto");
    let count: i64 = redis::cmd("GET")
        .arg(&counter)
        .query(&mut cluster.connection())
        .unwrap();
    assert_eq!(count, 3, "one counter for the fleet");

    // on the shared DNC through node A's API: node B sees it, and refuses the number
    let (code, body) = support::http::request(
        http_a,
        "PUT",
        "/v1/dnc/+13105551234",
        Some("ops-secret"),
        "",
    );
    assert_eq!(code, 200, "{body}");
    let on_b = support::http::get_json(http_b, "/v1/dnc/3105551234", "ops-secret");
    assert_eq!(
        on_b["shared"], true,
        "node B sees it in the cluster: {on_b}"
    );
    let listed = cluster.keys(&format!("{prefix}:dnc:*"));
    assert_eq!(listed, [format!("{prefix}:dnc:{{3105551234}}")]);
    let _: i64 = redis::cmd("DEL")
        .arg(&counter)
        .query(&mut cluster.connection())
        .unwrap();
    let (ok, out) = refused_603(&bin, &b, "DNC");
    assert!(
        ok,
        "node B refuses the number on the shared DNC:\n{out}\n{}",
        b.log()
    );

    let (_, log_a, dir_a) = a.stop_keep();
    let (_, log_b, dir_b) = b.stop_keep();
    cluster.clean(&prefix);
    assert!(cluster.keys(&format!("{prefix}:*")).is_empty());
    let verdicts = |d: &Path| -> Vec<String> {
        jsonl_cdrs(d)
            .iter()
            .map(|c| c["compliance"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        verdicts(&dir_a.0),
        ["pass:dnc,tcpa_hours,frequency", "reject:TCPA_FREQUENCY"],
        "{log_a}"
    );
    assert_eq!(
        verdicts(&dir_b.0),
        ["pass:dnc,tcpa_hours,frequency", "reject:DNC"],
        "{log_b}"
    );
}
