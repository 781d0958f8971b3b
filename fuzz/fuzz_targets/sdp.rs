//! Fuzz the SDP reader and rewriter: no input may panic; whatever `inspect` accepts, `rewrite`
//! rewrites, the result parses again with the same streams, and every active stream in it points
//! at DCE (an address left behind would leak a party's media around the relay).
#![no_main]

use dce_media::{inspect, rewrite, SdpError};
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

fuzz_target!(|data: &[u8]| {
    let Ok(streams) = inspect(data) else {
        assert!(rewrite(data, IpAddr::V4(Ipv4Addr::LOCALHOST), &[]).is_err());
        return;
    };
    // DCE's ports: even, from its range, one per m-line
    let ports: Vec<u16> = (0..streams.len())
        .map(|i| 20_000 + (2 * i % 10_000) as u16)
        .collect();
    if let Some((_, fewer)) = ports.split_last() {
        assert!(matches!(
            rewrite(data, IpAddr::V4(Ipv4Addr::LOCALHOST), fewer),
            Err(SdpError::Ports { .. })
        ));
    }
    for ip in [
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    ] {
        let (body, announced) =
            rewrite(data, ip, &ports).expect("what inspect reads, rewrite writes");
        assert_eq!(announced, streams, "rewrite reports what inspect reads");
        let again = inspect(&body).expect("DCE's rewritten SDP parses");
        assert_eq!(again.len(), streams.len(), "same number of streams");
        for ((after, before), &port) in again.iter().zip(&streams).zip(&ports) {
            assert_eq!(
                (&after.kind, &after.codec, after.clock_rate, after.rtcp_mux),
                (
                    &before.kind,
                    &before.codec,
                    before.clock_rate,
                    before.rtcp_mux
                ),
                "only addresses and ports change"
            );
            if before.rtp.is_some() {
                assert_eq!(
                    after.rtp,
                    Some(SocketAddr::new(ip, port)),
                    "an active stream goes to DCE"
                );
            }
            if let Some(rtp) = after.rtp {
                assert_eq!(rtp.ip(), ip, "nothing points anywhere but DCE");
            }
            if let Some(rtcp) = after.rtcp {
                assert_eq!(rtcp.ip(), ip, "RTCP goes to DCE too");
            }
        }
    }
});
