//! `dce demo`: DCE from a config file on loopback, a simulated carrier and three simulated
//! buyers on real UDP sockets (built on `dce-sip`), a few dozen calls that show every path,
//! and a table of what happened, read back from the CDR file.
//!
//! The simulated buyers decide from the caller number (which DCE passes as the From user):
//! callers ending `01xx` are answered by the top bidder; `02xx` get 486 from it and fail over;
//! `03xx` ring unanswered until the ring timeout and fail over; `04xx` are cancelled by the
//! carrier while ringing; calls to the second campaign find no eligible buyer.

use crate::config::Config;
use anyhow::{bail, Context};
use bytes::Bytes;
use dce_sip::{parse, HeaderName, Message, MessageBuf, Method};
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, Mutex};

const SDP: &str = "v=0\r\no=demo 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Win,
    Busy,
    NoAnswer,
    Cancel,
    NoBuyer,
}

/// Run the demo against `config` (the ring timeout is shortened to 2 s and billing to 2 s so
/// it finishes quickly). Prints the table; returns an error when a call did not end as
/// scripted.
pub async fn run(mut config: Config) -> anyhow::Result<()> {
    config.sip.ring_timeout = Duration::from_secs(2);
    // The demo must work at any hour: calling hours are opened to the whole day.
    config.compliance.calling_hours = dce_compliance::Window {
        start: 0,
        end: 24 * 60,
    };
    config.compliance.state_hours.clear();
    for c in &mut config.routing.campaigns {
        c.billable_after_s = c.billable_after_s.min(2);
    }
    let dce_addr = config
        .sip
        .listen
        .iter()
        .find(|l| l.proto == crate::config::ListenProto::Udp)
        .map(|l| l.addr)
        .context("the demo needs a udp:// listen address")?;
    let campaigns: Vec<(String, String)> = config
        .routing
        .campaigns
        .iter()
        .flat_map(|c| c.numbers.iter().map(move |n| (c.id.clone(), n.clone())))
        .collect();
    let (first_number, second_number) = match (
        campaigns.first(),
        campaigns
            .iter()
            .find(|(c, _)| Some(c) != campaigns.first().map(|f| &f.0)),
    ) {
        (Some(a), Some(b)) => (a.1.clone(), b.1.clone()),
        _ => bail!("the demo needs two campaigns (see config/dce.toml)"),
    };
    // The demo reads its table back from the JSON-lines copy of the CDRs.
    let cdr_path = config
        .cdr
        .jsonl_path
        .clone()
        .unwrap_or_else(|| "cdr.jsonl".into());
    config.cdr.jsonl_path = Some(cdr_path.clone());
    let cdrs_before = std::fs::read_to_string(&cdr_path)
        .map(|t| t.lines().count())
        .unwrap_or(0);

    // Buyers: the simulated endpoints listen where the config's buyer URIs point.
    let mut buyer_addrs = Vec::new();
    for b in &config.routing.buyers {
        let addr = match crate::config::routing::target_of(&b.uri, "1", "1")
            .map_err(anyhow::Error::msg)?
        {
            (_, crate::config::routing::TargetHost::Ip(a, _)) => a,
            (_, crate::config::routing::TargetHost::Name(d)) => anyhow::bail!(
                "the demo plays every buyer itself, so buyer uris need IP addresses (`{}` is a name)",
                d.host
            ),
        };
        if !buyer_addrs.contains(&addr) {
            buyer_addrs.push(addr);
        }
    }
    // The top bidder of the first campaign plays the scripted part (busy, no answer, cancel).
    let top_addr = config
        .routing
        .buyers
        .iter()
        .filter(|b| b.campaigns.contains(&0))
        .max_by_key(|b| b.bid_cents)
        .and_then(|b| crate::config::routing::target_of(&b.uri, "1", "1").ok())
        .and_then(|(_, h)| match h {
            crate::config::routing::TargetHost::Ip(a, _) => Some(a),
            crate::config::routing::TargetHost::Name(_) => None,
        });
    for addr in &buyer_addrs {
        let sock = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("demo buyer cannot bind {addr}"))?;
        tokio::spawn(buyer(Arc::new(sock), Some(*addr) == top_addr));
    }

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(crate::server::run(config, None, async {
        let _ = stop_rx.await;
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    if server.is_finished() {
        match server.await {
            Ok(Err(e)) => return Err(e),
            _ => bail!("DCE stopped at start"),
        }
    }

    // Carrier.
    let carrier = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let routes: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Message>>>> = Arc::default();
    tokio::spawn(carrier_rx(carrier.clone(), routes.clone()));
    let round = [
        Kind::Win,
        Kind::Busy,
        Kind::Win,
        Kind::NoAnswer,
        Kind::Win,
        Kind::Cancel,
        Kind::Win,
        Kind::NoBuyer,
    ];
    let plan: Vec<Kind> = round.iter().copied().cycle().take(32).collect();
    println!("DCE demo: {} calls through {dce_addr} (ring timeout 2 s, billable after 2 s, calling hours all day — for the demo)\n", plan.len());
    let mut calls = Vec::new();
    for (i, kind) in plan.iter().enumerate() {
        let code = match kind {
            Kind::Win => 1,
            Kind::Busy => 2,
            Kind::NoAnswer => 3,
            Kind::Cancel => 4,
            Kind::NoBuyer => 1,
        };
        let caller = format!("+1310555{code:02}{i:02}");
        let called = if *kind == Kind::NoBuyer {
            second_number.clone()
        } else {
            first_number.clone()
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let call_id = format!("demo-{i}-{}@127.0.0.1", std::process::id());
        routes.lock().await.insert(call_id.clone(), tx);
        calls.push(tokio::spawn(place_call(
            carrier.clone(),
            dce_addr,
            call_id,
            caller,
            called,
            *kind,
            rx,
        )));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut problems = Vec::new();
    for c in calls {
        if let Err(e) = c.await? {
            problems.push(e.to_string());
        }
    }
    // let DCE finish the last hangups before it is stopped
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_tx.send(());
    server.await??;

    print_table(&cdr_path, cdrs_before)?;
    if !problems.is_empty() {
        bail!(
            "{} call(s) did not go as scripted:\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
    Ok(())
}

async fn carrier_rx(
    sock: Arc<UdpSocket>,
    routes: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Message>>>>,
) {
    let mut buf = vec![0u8; 65_535];
    while let Ok((n, from)) = sock.recv_from(&mut buf).await {
        let Ok(msg) = parse(Bytes::copy_from_slice(&buf[..n])) else {
            continue;
        };
        if msg.is_request() {
            // DCE's BYE (buyer hung up): answer it.
            let resp = msg.response(200, "OK", "", None);
            let _ = sock.send_to(&resp.print(), from).await;
        }
        if let Some(tx) = routes.lock().await.get(msg.call_id()) {
            let _ = tx.send(msg);
        }
    }
}

fn carrier_request(
    method: Method,
    uri: &str,
    sock: &UdpSocket,
    invite: &MessageBuf,
    to: Option<&str>,
    cseq: &str,
    branch: Option<&str>,
) -> MessageBuf {
    let local = sock.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut m = MessageBuf::request(method, uri);
    let branch = branch.map(str::to_owned).unwrap_or_else(crate::ids::branch);
    m.push(
        HeaderName::Via,
        format!("SIP/2.0/UDP {local};branch={branch};rport"),
    )
    .push(HeaderName::MaxForwards, "70")
    .push(
        HeaderName::From,
        invite.header(&HeaderName::From).unwrap_or_default(),
    )
    .push(
        HeaderName::To,
        to.unwrap_or(invite.header(&HeaderName::To).unwrap_or_default()),
    )
    .push(
        HeaderName::CallId,
        invite.header(&HeaderName::CallId).unwrap_or_default(),
    )
    .push(HeaderName::CSeq, cseq);
    m
}

async fn place_call(
    sock: Arc<UdpSocket>,
    dce: SocketAddr,
    call_id: String,
    caller: String,
    called: String,
    kind: Kind,
    mut rx: mpsc::UnboundedReceiver<Message>,
) -> anyhow::Result<()> {
    let local = sock.local_addr()?;
    let uri = format!("sip:+{called}@{dce}");
    let branch = crate::ids::branch();
    let mut invite = MessageBuf::request(Method::Invite, uri.clone());
    invite
        .push(
            HeaderName::Via,
            format!("SIP/2.0/UDP {local};branch={branch};rport"),
        )
        .push(HeaderName::MaxForwards, "70")
        .push(
            HeaderName::From,
            format!("<sip:{caller}@{local}>;tag={}", crate::ids::tag()),
        )
        .push(HeaderName::To, format!("<{uri}>"))
        .push(HeaderName::CallId, call_id.clone())
        .push(HeaderName::CSeq, "1 INVITE")
        .push(HeaderName::Contact, format!("<sip:carrier@{local}>"))
        .push(HeaderName::ContentType, "application/sdp");
    invite.body = Bytes::from_static(SDP.as_bytes());
    sock.send_to(&invite.print(), dce).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut cancelled = false;
    loop {
        let msg = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(m)) => m,
            _ => bail!("{call_id}: no final answer in time"),
        };
        let Some(code) = msg.code() else {
            // DCE hung up on us (buyer BYE); carrier_rx answered it.
            return Ok(());
        };
        if msg.cseq_method() != &Method::Invite {
            continue;
        }
        match code {
            180 | 183 if kind == Kind::Cancel && !cancelled => {
                cancelled = true;
                tokio::time::sleep(Duration::from_millis(700)).await;
                let cancel = carrier_request(
                    Method::Cancel,
                    &uri,
                    &sock,
                    &invite,
                    None,
                    "1 CANCEL",
                    Some(&branch),
                );
                sock.send_to(&cancel.print(), dce).await?;
            }
            100..=199 => {}
            200..=299 => {
                let target = msg
                    .contact()
                    .map(|c| c.uri.raw.clone())
                    .unwrap_or(uri.clone());
                let to = msg.header(&HeaderName::To).unwrap_or_default().to_owned();
                let ack = carrier_request(
                    Method::Ack,
                    &target,
                    &sock,
                    &invite,
                    Some(&to),
                    "1 ACK",
                    None,
                );
                sock.send_to(&ack.print(), dce).await?;
                if kind == Kind::Cancel || kind == Kind::NoBuyer {
                    bail!("{call_id}: answered but should not have been");
                }
                let hold = Duration::from_millis(2200 + (call_id.len() as u64 % 7) * 150);
                tokio::time::sleep(hold).await;
                let bye = carrier_request(
                    Method::Bye,
                    &target,
                    &sock,
                    &invite,
                    Some(&to),
                    "2 BYE",
                    None,
                );
                sock.send_to(&bye.print(), dce).await?;
                return Ok(());
            }
            _ => {
                let to = msg.header(&HeaderName::To).unwrap_or_default().to_owned();
                let ack = carrier_request(
                    Method::Ack,
                    &uri,
                    &sock,
                    &invite,
                    Some(&to),
                    "1 ACK",
                    Some(&branch),
                );
                sock.send_to(&ack.print(), dce).await?;
                let expected = match kind {
                    Kind::Cancel => code == 487,
                    Kind::NoBuyer => code == 480,
                    _ => false,
                };
                if !expected {
                    bail!("{call_id}: unexpected {code}");
                }
                return Ok(());
            }
        }
    }
}

/// A buyer: the top bidder follows the script in the caller number; the others answer.
async fn buyer(sock: Arc<UdpSocket>, top: bool) {
    let mut buf = vec![0u8; 65_535];
    let mut calls: HashMap<String, (Message, String)> = HashMap::new();
    let me = sock.local_addr().map(|a| a.to_string()).unwrap_or_default();
    while let Ok((n, from)) = sock.recv_from(&mut buf).await {
        let Ok(msg) = parse(Bytes::copy_from_slice(&buf[..n])) else {
            continue;
        };
        let Some(method) = msg.method().cloned() else {
            continue;
        };
        let call_id = msg.call_id().to_owned();
        match method {
            Method::Invite => {
                if calls.contains_key(&call_id) {
                    continue;
                }
                let tag = crate::ids::tag();
                let scenario = msg
                    .from()
                    .uri
                    .user()
                    .and_then(|u| u.get(7..9))
                    .unwrap_or("01")
                    .to_owned();
                calls.insert(call_id.clone(), (msg.clone(), tag.clone()));
                let mut ringing = msg.response(180, "Ringing", &tag, None);
                ringing.push(HeaderName::Contact, format!("<sip:buyer@{me}>"));
                if top && scenario == "02" {
                    let _ = sock
                        .send_to(&msg.response(486, "Busy Here", &tag, None).print(), from)
                        .await;
                    continue;
                }
                let _ = sock.send_to(&ringing.print(), from).await;
                if top && (scenario == "03" || scenario == "04") {
                    continue; // ring until cancelled
                }
                let mut ok = msg.response(200, "OK", &tag, None);
                ok.push(HeaderName::Contact, format!("<sip:buyer@{me}>"))
                    .push(HeaderName::ContentType, "application/sdp");
                ok.body = Bytes::from_static(SDP.as_bytes());
                let bytes = ok.print();
                let answer = sock.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    let _ = answer.send_to(&bytes, from).await;
                });
            }
            Method::Cancel => {
                if let Some((inv, tag)) = calls.get(&call_id) {
                    let _ = sock
                        .send_to(&msg.response(200, "OK", tag, None).print(), from)
                        .await;
                    let _ = sock
                        .send_to(
                            &inv.response(487, "Request Terminated", tag, None).print(),
                            from,
                        )
                        .await;
                }
            }
            Method::Ack => {}
            _ => {
                let _ = sock
                    .send_to(&msg.response(200, "OK", "", None).print(), from)
                    .await;
            }
        }
    }
}

fn money(cents: u64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

fn print_table(path: &std::path::Path, skip: usize) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rows: Vec<Value> = text
        .lines()
        .skip(skip)
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    rows.sort_by(|a, b| a["invite_at"].as_str().cmp(&b["invite_at"].as_str()));
    println!(
        "{:<4} {:<13} {:<9} {:<10} {:>7}  bids",
        "#", "caller", "winner", "outcome", "secs"
    );
    let mut totals: HashMap<String, usize> = HashMap::new();
    let mut revenue = 0;
    for (i, r) in rows.iter().enumerate() {
        let bids: Vec<String> = r["bids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|b| {
                        format!(
                            "{} {} {}",
                            b["buyer_id"].as_str().unwrap_or(""),
                            money(b["amount_cents"].as_u64().unwrap_or(0)),
                            b["outcome"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let disposition = r["disposition"].as_str().unwrap_or("?").to_owned();
        revenue += r["revenue_cents"].as_u64().unwrap_or(0);
        println!(
            "{:<4} {:<13} {:<9} {:<10} {:>7.1}  {}",
            i + 1,
            r["caller"].as_str().unwrap_or(""),
            r["buyer_id"].as_str().unwrap_or("-"),
            disposition,
            r["duration_s"].as_f64().unwrap_or(0.0),
            bids.join(" | ")
        );
        *totals.entry(disposition).or_default() += 1;
    }
    let mut t: Vec<_> = totals.into_iter().collect();
    t.sort();
    let t: Vec<String> = t.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "\ntotals: {} calls — {}; revenue {}",
        rows.len(),
        t.join(", "),
        money(revenue)
    );
    Ok(())
}
