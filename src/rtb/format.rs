//! The shapes of bid requests and bid answers: DCE's own JSON (`docs/rtb.md`), Ringba's and
//! Retreaver's. Pure functions: facts in, a body out; a status and a body in, a
//! [`PingResult`] out. Anything DCE cannot read as a bid is `malformed`, never a guess.

use super::{Bid, CallFacts, Destination, PingResult};
use dce_routing::RtbFormat;

/// Bodies over this are not read as bids (`malformed`).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The request body for `format` and its content type.
pub fn request(format: RtbFormat, f: &CallFacts, expose_caller: bool) -> (String, &'static str) {
    let caller = if expose_caller {
        format!("+{}", f.caller)
    } else {
        mask(&f.caller)
    };
    match format {
        RtbFormat::Dce => {
            let v = serde_json::json!({
                "call_id": f.call_id,
                "caller": caller,
                "called": format!("+{}", f.called),
                "campaign": f.campaign,
                "publisher": f.carrier,
                "state": f.state,
            });
            let mut v = v;
            if let Some(z) = &f.zip {
                v["zip"] = z.as_str().into();
            }
            if !f.tags.is_empty() {
                v["tags"] = f.tags.clone().into();
            }
            (v.to_string(), "application/json")
        }
        RtbFormat::Ringba => {
            let mut v = serde_json::json!({
                "CID": caller.trim_start_matches('+'),
                "exposeCallerId": if expose_caller { "yes" } else { "no" },
                "sipOk": "yes",
            });
            if let Some(s) = f.state {
                v["State"] = s.into();
            }
            if let Some(z) = &f.zip {
                v["zipcode"] = z.as_str().into();
            }
            (v.to_string(), "application/json")
        }
        RtbFormat::Retreaver => {
            let mut form = vec![
                ("caller_number", caller),
                ("publisher_id", f.carrier.clone()),
            ];
            if let Some(s) = f.state {
                form.push(("caller_state", s.to_owned()));
            }
            if let Some(z) = &f.zip {
                form.push(("caller_zip", z.clone()));
            }
            let body = form
                .iter()
                .map(|(k, v)| format!("{k}={}", url_escape(v)))
                .collect::<Vec<_>>()
                .join("&");
            (body, "application/x-www-form-urlencoded")
        }
    }
}

/// What an answer with HTTP `status` and `body` says, in `format`.
pub fn answer(format: RtbFormat, status: u16, body: &[u8]) -> PingResult {
    if !(200..300).contains(&status) {
        return PingResult::Error(status.to_string());
    }
    if status == 204 {
        return PingResult::Rejected("no content".into());
    }
    if body.len() > MAX_ANSWER_BYTES {
        return PingResult::Malformed(format!("answer over {MAX_ANSWER_BYTES} bytes"));
    }
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        Ok(_) => return PingResult::Malformed("not a JSON object".into()),
        Err(e) => return PingResult::Malformed(format!("not JSON: {e}")),
    };
    let r = match format {
        RtbFormat::Dce => dce(&v),
        RtbFormat::Ringba => ringba(&v),
        RtbFormat::Retreaver => retreaver(&v),
    };
    r.unwrap_or_else(PingResult::Malformed)
}

/// `{ "bid_cents", "destination", "expires_in_s", "min_duration_s" }` or `{ "reject" }`.
fn dce(v: &serde_json::Value) -> Result<PingResult, String> {
    if let Some(r) = v.get("reject") {
        return Ok(PingResult::Rejected(reason(r)));
    }
    let cents = match v.get("bid_cents") {
        Some(c) => c
            .as_u64()
            .filter(|c| *c <= u64::from(u32::MAX))
            .ok_or("bid_cents is not a whole number of cents")? as u32,
        None => return Err("no bid_cents and no reject".into()),
    };
    if cents == 0 {
        return Ok(PingResult::Rejected("zero bid".into()));
    }
    Ok(PingResult::Bid(Bid {
        cents,
        destination: destination(v.get("destination"))?,
        expires_in_s: seconds(v.get("expires_in_s"), "expires_in_s")?,
        min_duration_s: seconds(v.get("min_duration_s"), "min_duration_s")?,
    }))
}

/// Ringba: `bidAmount` (dollars), `expireInSeconds`, `phoneNumber` / `sipAddress`,
/// `bidTerms[].callMinDuration`, `rejectReason` (a failed bid is `bidAmount: 0`).
fn ringba(v: &serde_json::Value) -> Result<PingResult, String> {
    let cents = dollars(v.get("bidAmount"), "bidAmount")?;
    let reject = v
        .get("rejectReason")
        .filter(|r| !r.is_null() && r.as_str() != Some(""));
    if cents == 0 || reject.is_some() {
        return Ok(PingResult::Rejected(
            reject.map_or("zero bid".into(), reason),
        ));
    }
    let dest = match (v.get("sipAddress"), v.get("phoneNumber")) {
        (Some(s), _) if s.as_str().is_some_and(|s| !s.is_empty()) => destination(Some(s))?,
        (_, p) => destination(p)?,
    };
    let min = match v.get("bidTerms") {
        Some(serde_json::Value::Array(terms)) => terms
            .iter()
            .filter_map(|t| t.get("callMinDuration"))
            .map(|d| seconds(Some(d), "bidTerms[].callMinDuration"))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .max(),
        Some(serde_json::Value::Null) | None => None,
        Some(_) => return Err("bidTerms is not a list".into()),
    };
    Ok(PingResult::Bid(Bid {
        cents,
        destination: dest,
        expires_in_s: seconds(v.get("expireInSeconds"), "expireInSeconds")?,
        min_duration_s: min,
    }))
}

/// Retreaver (the object itself or under `rtb`): `status: "reserved"` (or `confirmed`),
/// `retreaver_payout` (dollars), `retreaver_seconds` (the conversion timer), `sip_address` /
/// `inbound_number`, `expires_at` (RFC 3339). Any other status is a refusal.
fn retreaver(v: &serde_json::Value) -> Result<PingResult, String> {
    let v = v.get("rtb").filter(|r| r.is_object()).unwrap_or(v);
    let status = v
        .get("status")
        .and_then(|s| s.as_str())
        .ok_or("no status")?;
    if !["reserved", "confirmed"].contains(&status.to_ascii_lowercase().as_str()) {
        let why = v
            .get("reason")
            .or_else(|| v.get("message"))
            .map(reason)
            .unwrap_or_else(|| status.to_owned());
        return Ok(PingResult::Rejected(why));
    }
    let cents = dollars(v.get("retreaver_payout"), "retreaver_payout")?;
    if cents == 0 {
        return Ok(PingResult::Rejected("zero payout".into()));
    }
    let sip = v
        .get("sip_address")
        .and_then(|s| s.as_str())
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.starts_with("sip:") || s.starts_with("sips:") {
                s.to_owned()
            } else {
                format!("sip:{s}")
            }
        });
    let dest = match sip {
        Some(s) => destination(Some(&serde_json::Value::String(s)))?,
        None => destination(v.get("inbound_number"))?,
    };
    let expires_in_s = match v.get("expires_at").and_then(|e| e.as_str()) {
        Some(at) => {
            let at = chrono::DateTime::parse_from_rfc3339(at)
                .map_err(|e| format!("expires_at `{at}`: {e}"))?;
            let left = at.timestamp() - chrono::Utc::now().timestamp();
            Some(left.clamp(0, i64::from(u32::MAX)) as u32)
        }
        None => None,
    };
    Ok(PingResult::Bid(Bid {
        cents,
        destination: dest,
        expires_in_s,
        min_duration_s: seconds(v.get("retreaver_seconds"), "retreaver_seconds")?,
    }))
}

/// A price in dollars (a number or a numeric string) as whole cents, rounded.
fn dollars(v: Option<&serde_json::Value>, name: &str) -> Result<u32, String> {
    let d = match v {
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(serde_json::Value::Null) | None => return Err(format!("no {name}")),
        Some(_) => None,
    }
    .filter(|d| d.is_finite() && *d >= 0.0 && *d < 10_000_000.0)
    .ok_or_else(|| format!("{name} is not an amount of dollars"))?;
    Ok((d * 100.0).round() as u32)
}

fn seconds(v: Option<&serde_json::Value>, name: &str) -> Result<Option<u32>, String> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(serde_json::Value::String(s)) => s
            .trim()
            .parse::<u32>()
            .map(Some)
            .map_err(|_| format!("{name} is not a number of seconds")),
        Some(n) => n
            .as_u64()
            .filter(|n| *n <= 86_400 * 30)
            .map(|n| Some(n as u32))
            .ok_or_else(|| format!("{name} is not a number of seconds")),
    }
}

/// A destination: a `sip:`/`sips:` URI or a phone number (E.164, or 10-digit NANP).
fn destination(v: Option<&serde_json::Value>) -> Result<Option<Destination>, String> {
    let s = match v {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::String(s)) if s.is_empty() => return Ok(None),
        Some(serde_json::Value::String(s)) => s.trim(),
        Some(_) => return Err("destination is not a string".into()),
    };
    if s.len() > 256
        || s.bytes()
            .any(|b| b.is_ascii_control() || b"<>\"\\".contains(&b))
    {
        return Err("destination is not a SIP URI or a phone number".into());
    }
    if s.starts_with("sip:") || s.starts_with("sips:") {
        if s.contains(' ') {
            return Err(format!("destination `{s}` is not a SIP URI"));
        }
        if !s.contains('@') {
            return Err(format!("destination `{s}` has no user@host"));
        }
        return Ok(Some(Destination::Sip(s.to_owned())));
    }
    match dce_routing::normalize(s) {
        Some(n) => Ok(Some(Destination::Number(n))),
        None => Err(format!(
            "destination `{s}` is not a SIP URI or a phone number"
        )),
    }
}

/// A reason as text, bounded.
fn reason(v: &serde_json::Value) -> String {
    let s = match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let s: String = s.chars().filter(|c| !c.is_control()).take(120).collect();
    if s.is_empty() {
        "no reason".into()
    } else {
        s
    }
}

/// The caller as a bidder sees it unless `expose_caller`: country code, area code and
/// exchange, the line masked (`+1310555XXXX`), enough to price by geography.
pub fn mask(digits: &str) -> String {
    // By characters: a caller DCE could not read as a number is passed as received, and must
    // not be cut inside a UTF-8 sequence.
    let chars: Vec<char> = digits.chars().collect();
    let keep = if chars.len() == 11 && digits.starts_with('1') {
        7
    } else {
        chars.len().saturating_sub(4)
    };
    let kept: String = chars[..keep].iter().collect();
    format!("+{kept}{}", "X".repeat(chars.len() - keep))
}

fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> CallFacts {
        CallFacts {
            call_id: "c-1".into(),
            caller: "13105551234".into(),
            called: "18005550100".into(),
            campaign: "auto".into(),
            carrier: "carrier-a".into(),
            state: Some("CA"),
            zip: None,
            tags: Vec::new(),
            loop_via: None,
        }
    }

    fn bid(
        cents: u32,
        dest: Option<Destination>,
        exp: Option<u32>,
        min: Option<u32>,
    ) -> PingResult {
        PingResult::Bid(Bid {
            cents,
            destination: dest,
            expires_in_s: exp,
            min_duration_s: min,
        })
    }

    #[test]
    fn the_caller_is_masked_unless_exposed() {
        let (body, ct) = request(RtbFormat::Dce, &facts(), false);
        assert_eq!(ct, "application/json");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["caller"], "+1310555XXXX");
        assert_eq!(v["called"], "+18005550100");
        assert_eq!(v["state"], "CA");
        assert_eq!(v["publisher"], "carrier-a");
        let (body, _) = request(RtbFormat::Dce, &facts(), true);
        assert!(body.contains("\"+13105551234\""), "{body}");
        assert_eq!(mask("442071234567"), "+44207123XXXX");
        assert_eq!(mask("anonymous"), "+anonyXXXX");
        assert_eq!(
            mask("ünïcødé"),
            "+ünïXXXX",
            "cut by characters, never inside one"
        );
        assert_eq!(mask("12"), "+XX");
    }

    /// What a publisher's bid request adds (`POST /v1/bid`): the ZIP code in each format,
    /// the tags in DCE's, and the loop chain with this node added.
    #[test]
    fn a_publishers_zip_tags_and_loop_chain_are_passed_on() {
        let mut f = facts();
        f.zip = Some("90210".into());
        f.tags = vec!["auto".into(), "spanish".into()];
        let v: serde_json::Value =
            serde_json::from_str(&request(RtbFormat::Dce, &f, false).0).unwrap();
        assert_eq!(
            (v["zip"].as_str(), v["tags"][1].as_str()),
            (Some("90210"), Some("spanish"))
        );
        let v: serde_json::Value =
            serde_json::from_str(&request(RtbFormat::Ringba, &f, false).0).unwrap();
        assert_eq!(v["zipcode"], "90210");
        assert!(request(RtbFormat::Retreaver, &f, false)
            .0
            .ends_with("&caller_zip=90210"));
        let v: serde_json::Value =
            serde_json::from_str(&request(RtbFormat::Dce, &facts(), false).0).unwrap();
        assert!(v.get("zip").is_none() && v.get("tags").is_none(), "{v}");
        assert_eq!(f.loop_header("dce-1"), "dce-1");
        f.loop_via = Some(" exch-a, exch-b ".into());
        assert_eq!(f.loop_header("dce-1"), "exch-a, exch-b, dce-1");
        assert!(super::super::loops_back("exch-a, dce-1", "dce-1"));
        assert!(!super::super::loops_back("exch-a, dce-10", "dce-1"));
    }

    #[test]
    fn ringba_request_and_answers() {
        let (body, _) = request(RtbFormat::Ringba, &facts(), true);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["CID"], "13105551234");
        assert_eq!(v["exposeCallerId"], "yes");
        assert_eq!(v["State"], "CA");
        // An accepted bid, as Ringba documents it.
        let ok =
            br#"{"bidId":"bdb74fe968224e55b941f02fa1cb23b0","bidAmount":12.5,"expireInSeconds":60,
            "phoneNumber":"+18885551212","phoneNumberNoPlus":"18885551212",
            "bidTerms":[{"callMinDuration":120}]}"#;
        assert_eq!(
            answer(RtbFormat::Ringba, 200, ok),
            bid(
                1250,
                Some(Destination::Number("18885551212".into())),
                Some(60),
                Some(120)
            )
        );
        // The SIP address wins over the number when both come.
        let sip = br#"{"bidAmount":"7.25","expireInSeconds":30,"phoneNumber":"+18885551212",
            "sipAddress":"sip:abc@rtb.example.com"}"#;
        assert_eq!(
            answer(RtbFormat::Ringba, 200, sip),
            bid(
                725,
                Some(Destination::Sip("sip:abc@rtb.example.com".into())),
                Some(30),
                None
            )
        );
        // A failed bid: $0 with a reason.
        let no = br#"{"bidId":"bdb74fe968224e55b941f02fa1cb23b0","bidAmount":0,"rejectReason":"Missing required fields"}"#;
        assert_eq!(
            answer(RtbFormat::Ringba, 200, no),
            PingResult::Rejected("Missing required fields".into())
        );
        assert!(matches!(
            answer(RtbFormat::Ringba, 200, br#"{"bidAmount":"lots"}"#),
            PingResult::Malformed(_)
        ));
        assert!(matches!(
            answer(
                RtbFormat::Ringba,
                200,
                br#"{"bidAmount":3,"bidTerms":{"x":1}}"#
            ),
            PingResult::Malformed(_)
        ));
    }

    #[test]
    fn retreaver_request_and_answers() {
        let (body, ct) = request(RtbFormat::Retreaver, &facts(), false);
        assert_eq!(ct, "application/x-www-form-urlencoded");
        assert_eq!(
            body,
            "caller_number=%2B1310555XXXX&publisher_id=carrier-a&caller_state=CA"
        );
        let at = (chrono::Utc::now() + chrono::Duration::seconds(45)).to_rfc3339();
        // A reservation, wrapped in `rtb` as Retreaver answers.
        let ok = format!(
            r#"{{"rtb":{{"uuid":"0c4d6f2a-1b3e-4a9d-8c7f-9e2b1a6d4f30","status":"reserved","retreaver_payout":12.5,
            "retreaver_seconds":60,"inbound_number":"+18005551234",
            "sip_address":"0c4d6f2a@sip.rtb.retreaver.example","expires_at":"{at}"}}}}"#
        );
        match answer(RtbFormat::Retreaver, 200, ok.as_bytes()) {
            PingResult::Bid(b) => {
                assert_eq!(b.cents, 1250);
                assert_eq!(
                    b.destination,
                    Some(Destination::Sip(
                        "sip:0c4d6f2a@sip.rtb.retreaver.example".into()
                    ))
                );
                assert!(matches!(b.expires_in_s, Some(43..=45)), "{b:?}");
                assert_eq!(b.min_duration_s, Some(60));
            }
            other => panic!("{other:?}"),
        }
        // Unwrapped, with a number only.
        let num = br#"{"uuid":"597060af","status":"reserved","retreaver_payout":90.0,"retreaver_seconds":120,"inbound_number":"+18339510260"}"#;
        assert_eq!(
            answer(RtbFormat::Retreaver, 200, num),
            bid(
                9000,
                Some(Destination::Number("18339510260".into())),
                None,
                Some(120)
            )
        );
        let no = br#"{"status":"rejected","reason":"no buyer available"}"#;
        assert_eq!(
            answer(RtbFormat::Retreaver, 200, no),
            PingResult::Rejected("no buyer available".into())
        );
        assert!(matches!(
            answer(RtbFormat::Retreaver, 200, br#"{"retreaver_payout":1}"#),
            PingResult::Malformed(_)
        ));
    }

    #[test]
    fn dce_answers() {
        let ok = br#"{"bid_cents":450,"destination":"+1 (212) 555-0199","expires_in_s":20,"min_duration_s":45}"#;
        assert_eq!(
            answer(RtbFormat::Dce, 200, ok),
            bid(
                450,
                Some(Destination::Number("12125550199".into())),
                Some(20),
                Some(45)
            )
        );
        assert_eq!(
            answer(RtbFormat::Dce, 200, br#"{"reject":"over capacity"}"#),
            PingResult::Rejected("over capacity".into())
        );
        assert_eq!(
            answer(RtbFormat::Dce, 500, b"oops"),
            PingResult::Error("500".into())
        );
        assert_eq!(
            answer(RtbFormat::Dce, 204, b""),
            PingResult::Rejected("no content".into())
        );
        for bad in [
            &b"{not json"[..],
            b"[1,2]",
            br#"{"bid_cents":-5}"#,
            br#"{"bid_cents":1.5}"#,
            br#"{"bid_cents":100,"destination":"sip:nohost"}"#,
            br#"{"bid_cents":100,"destination":"call me"}"#,
            br#"{"bid_cents":100,"expires_in_s":"soon"}"#,
            br#"{}"#,
        ] {
            assert!(
                matches!(answer(RtbFormat::Dce, 200, bad), PingResult::Malformed(_)),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let big = vec![b' '; MAX_ANSWER_BYTES + 1];
        assert!(matches!(
            answer(RtbFormat::Dce, 200, &big),
            PingResult::Malformed(_)
        ));
    }
}
