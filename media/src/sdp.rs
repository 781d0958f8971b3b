//! SDP offer/answer rewriting (RFC 4566, RFC 3264) so both parties send RTP and RTCP to DCE.
//!
//! Only addresses and ports change: `o=` and `c=` addresses become DCE's, each m-line's port
//! becomes DCE's port for that stream, and `a=rtcp` follows. Codecs, payload types, `ptime`,
//! `telephone-event`, direction attributes and unknown attributes are kept as they are. A held
//! stream (`c=0.0.0.0`, or port 0) stays held.

use bytes::Bytes;
use sdp_types::{Attribute, Connection, Session};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Why an SDP body was not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// It does not parse as SDP.
    #[error("SDP does not parse: {0}")]
    Parse(String),
    /// The caller gave a different number of ports than the SDP has m-lines.
    #[error("SDP has {have} m-lines, {given} ports were given")]
    Ports {
        /// m-lines in the SDP.
        have: usize,
        /// ports given.
        given: usize,
    },
}

/// What one m-line announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// `audio`, `video` …
    pub kind: String,
    /// Where the party wants RTP (None: held or disabled).
    pub rtp: Option<SocketAddr>,
    /// Where it wants RTCP (`a=rtcp`, else RTP port + 1; the RTP address with rtcp-mux).
    pub rtcp: Option<SocketAddr>,
    /// `a=rtcp-mux` present.
    pub rtcp_mux: bool,
    /// First payload's encoding name (`PCMU`, `PCMA`, `G729`, `opus` …), if known.
    pub codec: Option<String>,
    /// RTP clock rate of that payload.
    pub clock_rate: u32,
    /// RFC 4733 `telephone-event`: its payload type and clock rate, when offered.
    pub telephone_event: Option<(u8, u32)>,
}

fn is_hold_addr(a: &str) -> bool {
    a == "0.0.0.0" || a == "::"
}

fn static_payload(pt: u8) -> Option<(&'static str, u32)> {
    Some(match pt {
        0 => ("PCMU", 8000),
        3 => ("GSM", 8000),
        4 => ("G723", 8000),
        8 => ("PCMA", 8000),
        9 => ("G722", 8000),
        13 => ("CN", 8000),
        18 => ("G729", 8000),
        _ => return None,
    })
}

fn parse(body: &[u8]) -> Result<Session, SdpError> {
    Session::parse(body).map_err(|e| SdpError::Parse(e.to_string()))
}

/// The streams an SDP body announces.
pub fn inspect(body: &[u8]) -> Result<Vec<Stream>, SdpError> {
    let s = parse(body)?;
    Ok(streams(&s))
}

fn streams(s: &Session) -> Vec<Stream> {
    s.medias
        .iter()
        .map(|m| {
            let conn = m.connections.first().or(s.connection.as_ref());
            let ip = conn
                .filter(|c| !is_hold_addr(&c.connection_address))
                .and_then(|c| {
                    c.connection_address
                        .split('/')
                        .next()?
                        .parse::<IpAddr>()
                        .ok()
                });
            let rtp = match (ip, m.port) {
                (Some(ip), p) if p != 0 => Some(SocketAddr::new(ip, p)),
                _ => None,
            };
            let rtcp_mux = m.attributes.iter().any(|a| a.attribute == "rtcp-mux");
            let rtcp_attr = m
                .attributes
                .iter()
                .find(|a| a.attribute == "rtcp")
                .and_then(|a| a.value.as_deref())
                .and_then(|v| {
                    let mut parts = v.split_whitespace();
                    let port: u16 = parts.next()?.parse().ok()?;
                    let addr = parts.nth(2).and_then(|a| a.parse::<IpAddr>().ok());
                    Some((port, addr))
                });
            let rtcp = rtp.map(|r| {
                if rtcp_mux {
                    r
                } else if let Some((port, addr)) = rtcp_attr {
                    SocketAddr::new(addr.unwrap_or(r.ip()), port)
                } else {
                    SocketAddr::new(r.ip(), r.port().wrapping_add(1))
                }
            });
            let first_pt: Option<u8> = m.fmt.split_whitespace().next().and_then(|p| p.parse().ok());
            let rtpmap = first_pt.and_then(|pt| {
                m.attributes.iter().find_map(|a| {
                    let v = a.value.as_deref()?;
                    if a.attribute != "rtpmap" {
                        return None;
                    }
                    let (p, rest) = v.split_once(' ')?;
                    if p.parse::<u8>().ok()? != pt {
                        return None;
                    }
                    let mut it = rest.split('/');
                    let name = it.next()?.to_owned();
                    let rate = it.next().and_then(|r| r.parse().ok()).unwrap_or(8000);
                    Some((name, rate))
                })
            });
            let offered: Vec<u8> = m
                .fmt
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            let telephone_event = m.attributes.iter().find_map(|a| {
                let (p, rest) = a
                    .value
                    .as_deref()
                    .filter(|_| a.attribute == "rtpmap")?
                    .split_once(' ')?;
                let pt: u8 = p.parse().ok()?;
                let mut it = rest.split('/');
                let name = it.next()?;
                let rate = it.next().and_then(|r| r.parse().ok()).unwrap_or(8000);
                (name.eq_ignore_ascii_case("telephone-event") && offered.contains(&pt))
                    .then_some((pt, rate))
            });
            let (codec, clock_rate) = match (rtpmap, first_pt.and_then(static_payload)) {
                (Some((n, r)), _) => (Some(n), r),
                (None, Some((n, r))) => (Some(n.to_owned()), r),
                (None, None) => (None, 8000),
            };
            Stream {
                kind: m.media.clone(),
                rtp,
                rtcp,
                rtcp_mux,
                codec,
                clock_rate,
                telephone_event,
            }
        })
        .collect()
}

fn rewrite_conn(c: &mut Connection, ip: IpAddr) {
    if is_hold_addr(&c.connection_address) {
        return;
    }
    c.connection_address = ip.to_string();
    c.addrtype = if ip.is_ipv4() {
        sdp_types::AddrType::Ip4
    } else {
        sdp_types::AddrType::Ip6
    };
}

/// Rewrite `body` so every stream goes to `ip` at `ports[i]` (RTCP at `ports[i] + 1`, or the
/// same port with rtcp-mux). Returns the new body and what the original announced.
pub fn rewrite(body: &[u8], ip: IpAddr, ports: &[u16]) -> Result<(Bytes, Vec<Stream>), SdpError> {
    Parsed::parse(body)?.rewrite(ip, ports)
}

/// An SDP body parsed once: what it announces ([`Parsed::streams`]), then its rewrite — the
/// call path needs both and parsing twice was a third of its SDP cost.
pub struct Parsed {
    session: Session,
    streams: Vec<Stream>,
    len: usize,
}

impl Parsed {
    /// Parse `body`.
    pub fn parse(body: &[u8]) -> Result<Parsed, SdpError> {
        let session = parse(body)?;
        let streams = streams(&session);
        Ok(Parsed {
            session,
            streams,
            len: body.len(),
        })
    }

    /// The streams it announces.
    pub fn streams(&self) -> &[Stream] {
        &self.streams
    }

    /// [`rewrite`] of the parsed body.
    pub fn rewrite(self, ip: IpAddr, ports: &[u16]) -> Result<(Bytes, Vec<Stream>), SdpError> {
        let Parsed {
            session,
            streams,
            len,
        } = self;
        rewrite_session(session, streams, len, ip, ports)
    }
}

fn rewrite_session(
    mut s: Session,
    announced: Vec<Stream>,
    len: usize,
    ip: IpAddr,
    ports: &[u16],
) -> Result<(Bytes, Vec<Stream>), SdpError> {
    if s.medias.len() != ports.len() {
        return Err(SdpError::Ports {
            have: s.medias.len(),
            given: ports.len(),
        });
    }
    s.origin.unicast_address = ip.to_string();
    s.origin.addrtype = if ip.is_ipv4() {
        sdp_types::AddrType::Ip4
    } else {
        sdp_types::AddrType::Ip6
    };
    if let Some(c) = s.connection.as_mut() {
        rewrite_conn(c, ip);
    }
    for (m, &port) in s.medias.iter_mut().zip(ports) {
        for c in m.connections.iter_mut() {
            rewrite_conn(c, ip);
        }
        if m.port != 0 {
            m.port = port;
        }
        let mux = m.attributes.iter().any(|a| a.attribute == "rtcp-mux");
        for a in m.attributes.iter_mut() {
            if a.attribute == "rtcp" {
                let rtcp_port = if mux { port } else { port + 1 };
                *a = Attribute {
                    attribute: "rtcp".into(),
                    value: Some(format!(
                        "{rtcp_port} IN {} {ip}",
                        if ip.is_ipv4() { "IP4" } else { "IP6" }
                    )),
                };
            }
        }
    }
    let mut out = Vec::with_capacity(len + 32);
    s.write(&mut out)
        .map_err(|e| SdpError::Parse(e.to_string()))?;
    Ok((Bytes::from(out), announced))
}

/// `body` with every audio m-line cut down to the codecs named in `allow` (encoding names,
/// case-insensitive: `PCMU`, `PCMA`, `G729`, `opus` …), a buyer's allow-list. Payload types are
/// named by their `a=rtpmap` or, without one, the RFC 3551 static table; `telephone-event` and
/// `CN` are kept (DTMF and comfort noise are not codecs a buyer chooses). The `a=rtpmap`,
/// `a=fmtp` and `a=rtcp-fb` lines of dropped payloads go with them. `Ok(None)` when an audio
/// stream would be left with no allowed codec: there is nothing to offer that buyer.
pub fn keep_codecs(body: &[u8], allow: &[String]) -> Result<Option<Bytes>, SdpError> {
    let mut s = parse(body)?;
    for m in s.medias.iter_mut().filter(|m| m.media == "audio") {
        let name_of = |pt: &str| -> Option<String> {
            m.attributes
                .iter()
                .filter(|a| a.attribute == "rtpmap")
                .filter_map(|a| a.value.as_deref())
                .find_map(|v| {
                    let (p, enc) = v.split_once(' ')?;
                    (p == pt).then(|| enc.split('/').next().unwrap_or("").to_owned())
                })
                .or_else(|| {
                    pt.parse()
                        .ok()
                        .and_then(static_payload)
                        .map(|(n, _)| n.to_owned())
                })
        };
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        let mut codecs = 0;
        for pt in m.fmt.split_whitespace() {
            let name = name_of(pt).unwrap_or_default();
            let always =
                name.eq_ignore_ascii_case("telephone-event") || name.eq_ignore_ascii_case("CN");
            if allow.iter().any(|a| a.eq_ignore_ascii_case(&name)) {
                codecs += 1;
                kept.push(pt.to_owned());
            } else if always {
                kept.push(pt.to_owned());
            } else {
                dropped.push(pt.to_owned());
            }
        }
        if codecs == 0 && m.port != 0 {
            return Ok(None);
        }
        m.fmt = kept.join(" ");
        m.attributes.retain(|a| {
            if !matches!(a.attribute.as_str(), "rtpmap" | "fmtp" | "rtcp-fb") {
                return true;
            }
            let pt = a.value.as_deref().and_then(|v| v.split_whitespace().next());
            !pt.is_some_and(|pt| dropped.iter().any(|d| d == pt))
        });
    }
    let mut out = Vec::with_capacity(body.len());
    s.write(&mut out)
        .map_err(|e| SdpError::Parse(e.to_string()))?;
    Ok(Some(Bytes::from(out)))
}

/// Unspecified IPv4 address (for callers that need a placeholder).
pub const UNSPECIFIED: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=carrier 123 456 IN IP4 10.9.9.9\r\ns=-\r\nc=IN IP4 10.9.9.9\r\nt=0 0\r\n\
m=audio 31604 RTP/AVP 0 8 18 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n\
a=ptime:20\r\na=sendrecv\r\na=x-carrier-thing:keep me\r\na=rtcp:31700 IN IP4 10.9.9.8\r\n\
m=video 31610 RTP/AVP 96\r\nc=IN IP4 10.9.9.7\r\na=rtpmap:96 H264/90000\r\na=rtcp-mux\r\n";

    #[test]
    fn rewrites_addresses_and_ports_only() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let (body, announced) = rewrite(OFFER.as_bytes(), ip, &[20000, 20002]).unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            !text.contains("10.9.9."),
            "no carrier address left:\n{text}"
        );
        assert!(text.contains("o=carrier 123 456 IN IP4 127.0.0.1"));
        assert!(text.contains("m=audio 20000 RTP/AVP 0 8 18 101"));
        assert!(text.contains("a=rtcp:20001 IN IP4 127.0.0.1"));
        assert!(text.contains("m=video 20002 RTP/AVP 96"));
        for keep in [
            "a=fmtp:101 0-15",
            "a=ptime:20",
            "a=sendrecv",
            "a=x-carrier-thing:keep me",
            "a=rtcp-mux",
            "telephone-event/8000",
        ] {
            assert!(text.contains(keep), "{keep} kept:\n{text}");
        }
        assert_eq!(announced[0].rtp, Some("10.9.9.9:31604".parse().unwrap()));
        assert_eq!(announced[0].rtcp, Some("10.9.9.8:31700".parse().unwrap()));
        assert_eq!(announced[0].codec.as_deref(), Some("PCMU"));
        assert_eq!(announced[0].telephone_event, Some((101, 8000)));
        assert_eq!(announced[1].telephone_event, None);
        assert_eq!(announced[1].rtp, Some("10.9.9.7:31610".parse().unwrap()));
        assert_eq!(announced[1].rtcp, announced[1].rtp, "rtcp-mux");
        assert_eq!(
            (announced[1].codec.as_deref(), announced[1].clock_rate),
            (Some("H264"), 90000)
        );
    }

    #[test]
    fn telephone_event_is_found_only_when_its_payload_type_is_offered() {
        let sdp = |fmt: &str, maps: &str| {
            format!("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP {fmt}\r\n{maps}")
        };
        let te = |body: String| inspect(body.as_bytes()).unwrap()[0].telephone_event;
        assert_eq!(
            te(sdp("8 96", "a=rtpmap:96 TELEPHONE-EVENT/8000\r\n")),
            Some((96, 8000))
        );
        assert_eq!(
            te(sdp("0 97", "a=rtpmap:97 telephone-event\r\n")),
            Some((97, 8000))
        );
        // mapped but not offered on the m-line, or not offered at all
        assert_eq!(te(sdp("0", "a=rtpmap:101 telephone-event/8000\r\n")), None);
        assert_eq!(te(sdp("0 8", "")), None);
    }

    #[test]
    fn hold_stays_hold() {
        let held = OFFER
            .replace("c=IN IP4 10.9.9.9", "c=IN IP4 0.0.0.0")
            .replace("a=sendrecv", "a=sendonly");
        let (body, announced) = rewrite(
            held.as_bytes(),
            "127.0.0.1".parse().unwrap(),
            &[20000, 20002],
        )
        .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("c=IN IP4 0.0.0.0"));
        assert!(text.contains("a=sendonly"));
        assert_eq!(announced[0].rtp, None, "held audio has no destination");
        let disabled = OFFER.replace("m=video 31610", "m=video 0");
        let (body, announced) = rewrite(
            disabled.as_bytes(),
            "127.0.0.1".parse().unwrap(),
            &[20000, 20002],
        )
        .unwrap();
        assert!(String::from_utf8(body.to_vec())
            .unwrap()
            .contains("m=video 0 "));
        assert_eq!(announced[1].rtp, None);
    }

    #[test]
    fn errors() {
        assert!(matches!(
            rewrite(b"garbage", UNSPECIFIED, &[]),
            Err(SdpError::Parse(_))
        ));
        assert_eq!(
            rewrite(OFFER.as_bytes(), UNSPECIFIED, &[20000]).unwrap_err(),
            SdpError::Ports { have: 2, given: 1 }
        );
    }

    /// What the fuzz target checks (`fuzz/fuzz_targets/sdp.rs`), on inputs at the edges of what
    /// `inspect` reads: the rewrite re-reads with the same streams, and the active ones point
    /// at DCE.
    #[test]
    fn odd_inputs_rewrite_to_dce_only() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let head = "v=0\r\no=- 1 1 IN IP4 10.1.1.1\r\ns=-\r\nt=0 0\r\n";
        let mut read = 0;
        for media in [
            "c=IN IP4 10.1.1.1\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp\r\n",
            "c=IN IP4 10.1.1.1\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:notaport\r\n",
            "c=IN IP4 10.1.1.1\r\nm=audio 65535 RTP/AVP 0\r\n",
            "c=IN IP4 carrier.example\r\nm=audio 4000 RTP/AVP 0\r\n",
            "c=IN IP4 224.2.1.1/127/3\r\nm=audio 4000/2 RTP/AVP 0\r\n",
            "m=audio 4000 RTP/AVP 0\r\nc=IN IP6 2001:db8::1\r\nc=IN IP6 2001:db8::2\r\n",
            "m=audio 4000 RTP/AVP 0\r\nm=video 0 RTP/AVP 96\r\n",
        ] {
            let body = format!("{head}{media}");
            let Ok(before) = inspect(body.as_bytes()) else {
                continue;
            };
            read += 1;
            let ports: Vec<u16> = (0..before.len() as u16).map(|i| 20000 + 2 * i).collect();
            let (out, announced) = rewrite(body.as_bytes(), ip, &ports).unwrap();
            assert_eq!(announced, before);
            let after = inspect(&out).unwrap();
            assert_eq!(after.len(), before.len(), "{media}");
            for ((a, b), &port) in after.iter().zip(&before).zip(&ports) {
                if b.rtp.is_some() {
                    assert_eq!(a.rtp, Some(SocketAddr::new(ip, port)), "{media}");
                }
                assert!(a.rtp.is_none_or(|r| r.ip() == ip), "{media}");
                assert!(a.rtcp.is_none_or(|r| r.ip() == ip), "{media}");
            }
        }
        assert_eq!(read, 7, "every case is one inspect reads");
    }

    #[test]
    fn a_codec_allow_list_cuts_the_offer() {
        let offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0 8 18 101 13\r\na=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=no\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n";
        let allow = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let out = keep_codecs(offer.as_bytes(), &allow(&["pcma"]))
            .unwrap()
            .unwrap();
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.contains("m=audio 4000 RTP/AVP 8 101 13\r\n"), "{text}");
        assert!(!text.contains("G729") && !text.contains("annexb"), "{text}");
        assert!(
            text.contains("a=fmtp:101 0-16") && text.contains("a=ptime:20"),
            "{text}"
        );
        let out = keep_codecs(offer.as_bytes(), &allow(&["G729", "PCMU"]))
            .unwrap()
            .unwrap();
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(
            text.contains("m=audio 4000 RTP/AVP 0 18 101 13\r\n"),
            "{text}"
        );
        assert!(text.contains("a=fmtp:18 annexb=no"), "{text}");
        assert_eq!(
            keep_codecs(offer.as_bytes(), &allow(&["opus"])).unwrap(),
            None
        );
    }
}
