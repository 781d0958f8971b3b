//! The background resolver against a real DNS server on loopback (`support::dns`, built on
//! hickory's codec, not on DCE's code): RFC 3263's NAPTR → SRV → A walk through
//! `hickory-resolver`, TTLs as served, a changed record followed after its TTL, and a server
//! that stops answering (the last answer is kept, marked stale).

mod support;

use dce::dns::resolver::{run, Hickory};
use dce::dns::{rfc3263, Dest, Table, Transport};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::dns::{buyer_zone, DnsServer, Rec};

fn dns(server: &DnsServer) -> Hickory {
    Hickory::new(&[server.addr], Duration::from_millis(300), true, false).expect("resolver")
}

fn dest(host: &str) -> Dest {
    Dest {
        host: host.into(),
        port: None,
        transport: None,
        sips: false,
    }
}

fn addrs(a: &dce::dns::Answer) -> Vec<String> {
    a.targets
        .iter()
        .flat_map(|t| t.addrs.iter().map(|x| x.to_string()))
        .collect()
}

#[tokio::test]
async fn naptr_srv_and_a_through_hickory() {
    let server = DnsServer::start(buyer_zone("buyer.test", &[5091, 5092], 120));
    let h = dns(&server);
    let a = rfc3263::resolve(&h, &dest("buyer.test"), &[Transport::Udp])
        .await
        .unwrap();
    assert_eq!(a.via, "naptr");
    assert_eq!(addrs(&a), ["127.0.0.1:5091", "127.0.0.1:5092"]);
    assert_eq!(
        a.targets.iter().map(|t| t.priority).collect::<Vec<_>>(),
        [10, 20]
    );
    assert_eq!(a.ttl, Duration::from_secs(120));
    // Without NAPTR: SRV; without SRV either: the host's own A record on 5060.
    server.set(vec![
        (
            "_sip._udp.srv.test".into(),
            Rec::Srv(5, 1, 6000, "x.srv.test".into()),
            60,
        ),
        ("x.srv.test".into(), Rec::A(Ipv4Addr::new(127, 0, 0, 3)), 30),
        ("plain.test".into(), Rec::A(Ipv4Addr::new(127, 0, 0, 4)), 45),
    ]);
    let a = rfc3263::resolve(&h, &dest("srv.test"), &[Transport::Udp])
        .await
        .unwrap();
    assert_eq!(
        (a.via, addrs(&a), a.ttl),
        (
            "srv",
            vec!["127.0.0.3:6000".to_owned()],
            Duration::from_secs(30)
        )
    );
    let a = rfc3263::resolve(&h, &dest("plain.test"), &[Transport::Udp])
        .await
        .unwrap();
    assert_eq!((a.via, addrs(&a)), ("a", vec!["127.0.0.4:5060".to_owned()]));
    let e = rfc3263::resolve(&h, &dest("nowhere.test"), &[Transport::Udp])
        .await
        .unwrap_err();
    assert!(
        e.contains("nowhere.test") && e.contains("no records"),
        "{e}"
    );
}

async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_table_follows_ttls_and_keeps_the_last_answer_when_dns_fails() {
    let server = DnsServer::start(buyer_zone("buyer.test", &[5091], 1));
    let table = Arc::new(Table::default());
    let (tx, rx) = tokio::sync::watch::channel(vec![dest("buyer.test"), dest("gone.test")]);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let task = tokio::spawn(run(
        dns(&server),
        table.clone(),
        rx,
        Box::new(move |ips| s2.lock().unwrap().push(ips)),
    ));
    let t = table.clone();
    wait_for("first answers", Duration::from_secs(5), || {
        t.get("buyer.test").is_some() && t.get("gone.test").is_some()
    })
    .await;
    let first = table.get("buyer.test").unwrap();
    assert_eq!(addrs(first.answer.as_ref().unwrap()), ["127.0.0.1:5091"]);
    let gone = table.get("gone.test").unwrap();
    assert!(gone.answer.is_none() && gone.error.is_some(), "{gone:?}");
    assert_eq!(
        seen.lock().unwrap()[0],
        vec!["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
    // The record changes; within about its TTL (1 s) the table has the new one.
    server.set(buyer_zone("buyer.test", &[5093], 1));
    let t = table.clone();
    wait_for("the changed record", Duration::from_secs(5), || {
        t.get("buyer.test")
            .and_then(|s| s.answer.as_ref().map(addrs))
            == Some(vec!["127.0.0.1:5093".to_owned()])
    })
    .await;
    // The server goes quiet: the answer stays, with the error beside it.
    server.silence(true);
    let t = table.clone();
    wait_for("a failed refresh", Duration::from_secs(8), || {
        t.get("buyer.test").is_some_and(|s| s.error.is_some())
    })
    .await;
    let s = table.get("buyer.test").unwrap();
    assert_eq!(addrs(s.answer.as_ref().unwrap()), ["127.0.0.1:5093"]);
    let mut m = String::new();
    table.render(&mut m);
    assert!(m.contains("dce_dns_failing{host=\"buyer.test\""), "{m}");
    // A reload that drops a host drops its entry.
    tx.send(vec![dest("buyer.test")]).unwrap();
    let t = table.clone();
    wait_for("the dropped host", Duration::from_secs(5), || {
        t.get("gone.test").is_none()
    })
    .await;
    drop(tx);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the resolver ends with its sender")
        .unwrap();
}
