//! TLS (issue #13, items 2 and 3), the real `dce` binary:
//! - towards buyers, a buyer's certificate is checked against its host name and the CAs it
//!   is given: a wrong host, an expired certificate and an unknown CA are each refused with a
//!   log line that says which, and the call goes on to the next bidder at once;
//! - with Kamailio's `tls` module (a real peer, not DCE's code) in front of SIPp, a call comes
//!   in over TLS (SIPp → Kamailio → DCE) and goes out over TLS (DCE → Kamailio → SIPp), and
//!   hangs up, through the same TLS connections.

mod support;

use std::sync::Arc;
use support::dce_process::{counter, free_port, jsonl_cdrs, outcomes, Dce};
use support::dns::{DnsServer, Rec};
use support::pki::{Ca, Leaf};
use support::sipp::{self, Background};

/// A TLS server on loopback presenting `leaf`: it accepts connections and completes (or
/// fails) handshakes; it never answers SIP. Returns its port.
fn tls_server(leaf: &Leaf) -> u16 {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(&leaf.cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&leaf.key).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = std_listener.local_addr().unwrap().port();
    std_listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                let a = acceptor.clone();
                tokio::spawn(async move {
                    let _ = a.accept(s).await;
                });
            }
        });
    });
    port
}

#[test]
fn bad_buyer_certificates_are_refused_and_say_why() {
    let Some(bin) = sipp::sipp() else {
        return;
    };
    let dir = support::dce_process::TempDir::new("pki");
    let ca = Ca::new(&dir.0, "good");
    let stranger = Ca::new(&dir.0, "stranger");
    let wrong_host = tls_server(&ca.issue(&dir.0, "wrong-host", &["other.test"], false));
    let expired = tls_server(&ca.issue(&dir.0, "expired", &["buyer.test"], true));
    let unknown_ca = tls_server(&stranger.issue(&dir.0, "unknown-ca", &["buyer.test"], false));
    let dns = DnsServer::start(vec![(
        "buyer.test".into(),
        Rec::A(std::net::Ipv4Addr::LOCALHOST),
        300,
    )]);
    let bravo = free_port();
    let tls_buyer = |id: &str, port: u16, bid: u32| {
        format!(
            "[[buyer]]\nid = \"{id}\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@buyer.test:{port};transport=tls\"\nbid_cents = {bid}\ntls_ca = \"{}\"\n",
            ca.pem.display()
        )
    };
    let dce = Dce::start_with(|port, d| {
        format!(
            "[node]\nid = \"tls\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\", \"tls://127.0.0.1:{tls}\"]\nadvertised_host = \"127.0.0.1\"\nmax_attempts = 4\nring_timeout_s = 15\n\
             [sip.tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n\
             [dns]\nservers = [\"{dns}\"]\n\
             [media]\nport_min = 47000\nport_max = 47999\n\
             [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
             [cdr]\njsonl_path = \"{cdr}\"\n\
             [[carrier]]\nid = \"carrier-a\"\nsources = [\"127.0.0.1/32\"]\n\
             [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\nbillable_after_s = 0\n\
             {}{}{}\
             [[buyer]]\nid = \"bravo\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{bravo}\"\nbid_cents = 100\n",
            tls_buyer("wrong_host", wrong_host, 900),
            tls_buyer("expired", expired, 800),
            tls_buyer("unknown_ca", unknown_ca, 700),
            tls = free_port(),
            cert = ca.issue(&dir.0, "dce", &["127.0.0.1"], false).cert.display(),
            key = dir.0.join("dce.key").display(),
            dns = dns.addr,
            cdr = d.join("cdr.jsonl").display(),
        )
    });
    let b = Background::start(
        &bin,
        &sipp::args(&sipp::scenario("uas_answer.xml"), bravo, &["-m", "1"]),
    );
    let t0 = std::time::Instant::now();
    let (ok, out) = sipp::carrier(
        &bin,
        &sipp::scenario("uac_call.xml"),
        dce.sip,
        &["-m", "1", "-d", "100"],
    );
    assert!(ok, "carrier:\n{out}\nDCE log:\n{}", dce.log());
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(10),
        "no ring timeout waited out"
    );
    let (bok, bout) = b.finish(20);
    assert!(bok, "bravo:\n{bout}");
    let (_, log, d) = dce.stop_keep();
    let cdrs = jsonl_cdrs(&d.0);
    assert_eq!(
        outcomes(&cdrs[0]),
        [
            "wrong_host=attempted:timeout",
            "expired=attempted:timeout",
            "unknown_ca=attempted:timeout",
            "bravo=won"
        ],
        "{}",
        cdrs[0]
    );
    for (port, why) in [
        (wrong_host, "not valid for name \"buyer.test\""),
        (expired, "expired"),
        (unknown_ca, "UnknownIssuer"),
    ] {
        let line = log
            .lines()
            .find(|l| {
                l.contains(&format!("127.0.0.1:{port}")) && l.contains("TLS handshake failed")
            })
            .unwrap_or_else(|| panic!("no handshake failure logged for {port}:\n{log}"));
        assert!(line.contains(why), "{why}: {line}");
        eprintln!("{line}");
        assert!(line.contains("buyer.test"), "names the server name: {line}");
    }
    assert_eq!(counter(&log, "tls_handshake_failed"), 3, "{log}");
}

/// Kamailio's `kamailio.cfg` for the test: SIPp's UDP requests go to DCE over TLS, DCE's TLS
/// requests go to the SIPp buyer over UDP; record-routed, so in-dialog requests pass it too.
fn kamailio_cfg(dir: &std::path::Path, udp: u16, tls: u16, dce_tls: u16, buyer: u16) -> String {
    format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
children=2
tcp_children=2
enable_tls=yes
auto_aliases=no
listen=udp:127.0.0.1:{udp}
listen=tls:127.0.0.1:{tls}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tls.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "textops.so"
loadmodule "siputils.so"
modparam("tls", "config", "{cfg}")
request_route {{
    if (has_totag()) {{
        xlog("L_INFO", "in-dialog $rm from $pr ruri=$ru route=$hdr(Route)\n");
        # Record-routed, or (SIPp's UAS does not copy Record-Route) to the Request-URI.
        loose_route();
        t_relay();
        exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    record_route();
    if ($pr == "udp") {{
        $du = "sip:127.0.0.1:{dce_tls};transport=tls";
    }} else {{
        $du = "sip:127.0.0.1:{buyer}";
    }}
    xlog("L_INFO", "relaying $rm from $pr to $du\n");
    t_relay();
    exit;
}}
"#,
        cfg = dir.join("tls.cfg").display()
    )
}

#[test]
fn calls_cross_kamailio_over_tls_both_ways() {
    let Some(bin) = sipp::sipp() else {
        return;
    };
    let Some(kamailio) = support::kamailio() else {
        return;
    };
    let dir = support::dce_process::TempDir::new("kam-tls");
    let ca = Ca::new(&dir.0, "test");
    let kam_cert = ca.issue(&dir.0, "kamailio", &["buyer.test", "127.0.0.1"], false);
    let dce_cert = ca.issue(&dir.0, "dce", &["127.0.0.1"], false);
    let (k_udp, k_tls, dce_tls, buyer) = (free_port(), free_port(), free_port(), free_port());
    std::fs::write(
        dir.0.join("tls.cfg"),
        format!(
            "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\ncertificate = {}\nprivate_key = {}\n\n\
             [client:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n",
            kam_cert.cert.display(),
            kam_cert.key.display()
        ),
    )
    .unwrap();
    let cfg = dir.0.join("kamailio.cfg");
    std::fs::write(&cfg, kamailio_cfg(&dir.0, k_udp, k_tls, dce_tls, buyer)).unwrap();
    let kam = support::Kamailio::start(&kamailio, &cfg, &dir.0);
    let dns = DnsServer::start(vec![(
        "buyer.test".into(),
        Rec::A(std::net::Ipv4Addr::LOCALHOST),
        300,
    )]);
    let dce = Dce::start_with(|port, d| {
        format!(
            "[node]\nid = \"tls\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\", \"tls://127.0.0.1:{dce_tls}\"]\nadvertised_host = \"127.0.0.1\"\n\
             [sip.tls]\ncert = \"{}\"\nkey = \"{}\"\n\
             [dns]\nservers = [\"{}\"]\n\
             [media]\nport_min = 48000\nport_max = 48999\n\
             [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
             [cdr]\njsonl_path = \"{}\"\n\
             [[carrier]]\nid = \"carrier-a\"\nsources = [\"127.0.0.1/32\"]\n\
             [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\nbillable_after_s = 0\n\
             [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sips:{{called}}@buyer.test:{k_tls}\"\nbid_cents = 900\ntls_ca = \"{}\"\n",
            dce_cert.cert.display(),
            dce_cert.key.display(),
            dns.addr,
            d.join("cdr.jsonl").display(),
            ca.pem.display()
        )
    });
    // Two calls: the first hung up by the carrier, the second by the buyer.
    for (i, (uas, uac)) in [
        ("uas_answer.xml", "uac_call.xml"),
        ("uas_answer_bye.xml", "uac_wait_bye.xml"),
    ]
    .iter()
    .enumerate()
    {
        let b = Background::start(&bin, &sipp::args(&sipp::scenario(uas), buyer, &["-m", "1"]));
        let carrier_to = std::net::SocketAddr::from(([127, 0, 0, 1], k_udp));
        let (ok, out) = sipp::carrier(
            &bin,
            &sipp::scenario(uac),
            carrier_to,
            &["-m", "1", "-d", "200"],
        );
        assert!(
            ok,
            "call {i}: carrier:\n{out}\nDCE log:\n{}\nKamailio:\n{}",
            dce.log(),
            kam.log()
        );
        let (bok, bout) = b.finish(20);
        assert!(
            bok,
            "call {i}: buyer:\n{bout}\nDCE log:\n{}\nKamailio:\n{}",
            dce.log(),
            kam.log()
        );
    }
    let (_, log, d) = dce.stop_keep();
    let cdrs = jsonl_cdrs(&d.0);
    assert_eq!(cdrs.len(), 2, "{log}");
    assert_eq!(cdrs[0]["hangup_by"], "carrier", "{}", cdrs[0]);
    assert_eq!(cdrs[1]["hangup_by"], "buyer", "{}", cdrs[1]);
    for c in &cdrs {
        assert_eq!(outcomes(c), ["acme=won"], "{c}");
    }
    assert_eq!(
        counter(&log, "tcp_buyer_connected"),
        1,
        "one TLS connection to the buyer for both calls:\n{log}"
    );
    assert_eq!(counter(&log, "tls_handshake_failed"), 0, "{log}");
}

/// A TLS client to `port` with `cert` (or none), trusting `ca`: sends one OPTIONS and returns
/// the first line of the answer, or the handshake error; and the server's certificate.
fn tls_options(
    port: u16,
    ca: &std::path::Path,
    cert: Option<&Leaf>,
) -> (Result<String, String>, Vec<u8>) {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let cfg = match cert {
        None => b.with_no_client_auth(),
        Some(l) => b
            .with_client_auth_cert(
                rustls::pki_types::CertificateDer::pem_file_iter(&l.cert)
                    .unwrap()
                    .map(|c| c.unwrap())
                    .collect(),
                rustls::pki_types::PrivateKeyDer::from_pem_file(&l.key).unwrap(),
            )
            .unwrap(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut s = match tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await {
            Ok(s) => s,
            Err(e) => return (Err(e.to_string()), Vec::new()),
        };
        let served = s
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first().map(|c| c.to_vec()))
            .unwrap_or_default();
        let opt = format!(
            "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKtls1\r\nMax-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=t1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: tls-probe-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        s.write_all(opt.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 2048];
        // A server that refuses the client certificate says so at the first read (TLS 1.3).
        let r = match tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => Ok(String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_owned()),
            Ok(Ok(_)) => Err("closed".to_owned()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer".to_owned()),
        };
        (r, served)
    })
}

#[test]
fn mtls_carriers_need_a_certificate_and_sighup_reloads_dces() {
    let dir = support::dce_process::TempDir::new("mtls");
    let ca = Ca::new(&dir.0, "test");
    let carriers = Ca::new(&dir.0, "carriers");
    let first = ca.issue(&dir.0, "dce", &["127.0.0.1"], false);
    let cert = dir.0.join("live.pem");
    let key = dir.0.join("live.key");
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let tls = free_port();
    let dce = Dce::start_with(|port, d| {
        format!(
            "[node]\nid = \"mtls\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\", \"tls://127.0.0.1:{tls}\"]\nadvertised_host = \"127.0.0.1\"\n\
             [sip.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\nhandshake_timeout_s = 1\n\
             [cdr]\njsonl_path = \"{}\"\n",
            cert.display(),
            key.display(),
            carriers.pem.display(),
            d.join("cdr.jsonl").display()
        )
    });
    // A carrier with a certificate the carriers' CA signed: OPTIONS answered over TLS.
    let good = carriers.issue(&dir.0, "carrier", &["carrier.test"], false);
    let (r, served) = tls_options(tls, &ca.pem, Some(&good));
    assert_eq!(r.as_deref(), Ok("SIP/2.0 200 OK"), "{}", dce.log());
    // No certificate, or one from another CA: refused, and the log says so.
    let (r, _) = tls_options(tls, &ca.pem, None);
    assert!(r.is_err(), "{r:?}");
    let stranger = ca.issue(&dir.0, "stranger", &["carrier.test"], false);
    let (r, _) = tls_options(tls, &ca.pem, Some(&stranger));
    assert!(r.is_err(), "{r:?}");
    dce.wait_for_log(
        "TLS handshake from a client failed",
        std::time::Duration::from_secs(5),
    );
    // A client that never starts its handshake is closed after handshake_timeout_s.
    let idle = std::net::TcpStream::connect(("127.0.0.1", tls)).unwrap();
    dce.wait_for_log("not finished in time", std::time::Duration::from_secs(5));
    drop(idle);
    // New certificate files and SIGHUP: new handshakes get the new certificate.
    let second = ca.issue(&dir.0, "dce2", &["127.0.0.1"], false);
    std::fs::copy(&second.cert, &cert).unwrap();
    std::fs::copy(&second.key, &key).unwrap();
    dce.signal("HUP");
    dce.wait_for_log(
        "TLS certificate reloaded",
        std::time::Duration::from_secs(5),
    );
    let (r, served2) = tls_options(tls, &ca.pem, Some(&good));
    assert_eq!(r.as_deref(), Ok("SIP/2.0 200 OK"));
    assert_ne!(served, served2, "the reloaded certificate is served");
    // A broken file on SIGHUP: refused, the current certificate stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    dce.signal("HUP");
    dce.wait_for_log("reload refused", std::time::Duration::from_secs(5));
    let (r, served3) = tls_options(tls, &ca.pem, Some(&good));
    assert_eq!(r.as_deref(), Ok("SIP/2.0 200 OK"));
    assert_eq!(served2, served3);
    let (_, log) = dce.stop();
    assert!(counter(&log, "tls_handshake_failed") >= 3, "{log}");
}
