//! `POST /v1/bid`: a publisher (an API key with role `publisher`, tied to a carrier) asks what
//! a call would be paid before sending it (`crate::call::quote`).

// An axum `Response` is the natural error of a handler helper.
#![allow(clippy::result_large_err)]

use super::{error, ApiState, Caller};
use crate::call::{QuoteAnswer, QuoteRequest};
use crate::http::ApiRequest;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

/// The most tags a bid request may carry, and the longest tag.
const MAX_TAGS: usize = 20;
const MAX_TAG: usize = 64;

/// A publisher's bid request, as the API document describes it: `caller` with either
/// `called` or `campaign`. The patterns are a subset of what [`read`] takes (it also takes
/// separators such as `(800) 555-0100`, and lower-case states); anything they allow, it takes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // the document's shape; [`BidRequest`] is what is read
pub enum BidRequestDoc {
    /// By the number the call would dial.
    ByNumber(ByNumber),
    /// By campaign id.
    ByCampaign(ByCampaign),
}

/// A bid request naming the dialled number.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ByNumber {
    /// The caller's number (E.164, or 10-digit NANP).
    #[schema(pattern = r"^(\+[0-9]{8,15}|[0-9]{10}|1[0-9]{10}|[0-9]{12,15})$")]
    pub caller: String,
    /// The number the call would dial.
    #[schema(pattern = r"^(\+[0-9]{8,15}|[0-9]{10}|1[0-9]{10}|[0-9]{12,15})$")]
    pub called: String,
    /// The caller's US state (USPS code), when known better than from the area code.
    #[schema(
        pattern = "^(AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR|GU|VI|AS|MP)$"
    )]
    pub state: Option<String>,
    /// The caller's ZIP code (5 digits, or ZIP+4).
    #[schema(pattern = r"^[0-9]{5}(-[0-9]{4})?$")]
    pub zip: Option<String>,
    /// Tags for the bidders.
    #[serde(default)]
    #[schema(max_items = 20, max_length = 64)]
    pub tags: Vec<String>,
}

/// A bid request naming the campaign.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ByCampaign {
    /// The caller's number (E.164, or 10-digit NANP).
    #[schema(pattern = r"^(\+[0-9]{8,15}|[0-9]{10}|1[0-9]{10}|[0-9]{12,15})$")]
    pub caller: String,
    /// The campaign id.
    pub campaign: String,
    /// The caller's US state (USPS code), when known better than from the area code.
    #[schema(
        pattern = "^(AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR|GU|VI|AS|MP)$"
    )]
    pub state: Option<String>,
    /// The caller's ZIP code (5 digits, or ZIP+4).
    #[schema(pattern = r"^[0-9]{5}(-[0-9]{4})?$")]
    pub zip: Option<String>,
    /// Tags for the bidders.
    #[serde(default)]
    #[schema(max_items = 20, max_length = 64)]
    pub tags: Vec<String>,
}

/// A publisher's bid request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BidRequest {
    /// The caller's number (E.164 or 10-digit NANP).
    pub caller: String,
    /// The number the call would dial (or give `campaign`).
    pub called: Option<String>,
    /// The campaign id (instead of `called`).
    pub campaign: Option<String>,
    /// The caller's US state (two letters), when known better than from the area code.
    pub state: Option<String>,
    /// The caller's ZIP code (5 digits, or ZIP+4).
    pub zip: Option<String>,
    /// Tags for the bidders.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// DCE's answer: a price, or a refusal.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum BidAnswer {
    /// A price, held until `expires_at` for the key's carrier's next call from this caller.
    Offer {
        /// What the publisher is paid for the call, cents (after the campaign's margin).
        bid_cents: u32,
        /// The price holds until then (RFC 3339).
        expires_at: String,
        /// Where to send the call.
        destination: String,
        /// This quote's id (DCE's logs name it).
        bid_id: String,
    },
    /// No price.
    Refusal {
        /// Why: `loop`, `shutting_down`, `unknown_carrier`, `no_campaign`,
        /// `compliance:<RULE>`, `no_eligible_buyer`, `lookup_failed`, `busy`.
        refused: String,
    },
}

fn bad(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_body", message)
}

/// The request as the core takes it, or the 400 to send.
fn read(carrier: &str, body: &[u8], headers: &HeaderMap) -> Result<QuoteRequest, Response> {
    let b: BidRequest = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "expected {{\"caller\": \"+1…\", \"called\": \"+1…\" | \"campaign\": \"…\", \"state\"?, \"zip\"?, \"tags\"?}}: {e}"
        ))
    })?;
    let number = |name: &str, v: &str| {
        dce_routing::normalize(v).ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "bad_number",
                format!("`{name}` is not a phone number (E.164 or 10-digit NANP)"),
            )
        })
    };
    let caller = number("caller", &b.caller)?;
    let called = match (&b.called, &b.campaign) {
        (Some(n), None) => Some(number("called", n)?),
        (None, Some(_)) => None,
        _ => return Err(bad("give exactly one of `called` and `campaign`")),
    };
    let state = match &b.state {
        None => None,
        Some(s) => Some(
            dce_routing::State::parse(&s.to_ascii_uppercase())
                .ok_or_else(|| bad("`state` must be a US state's two letters, e.g. CA"))?
                .code(),
        ),
    };
    if let Some(z) = &b.zip {
        let zip5 = z.len() == 5 && z.bytes().all(|c| c.is_ascii_digit());
        let zip9 = z.len() == 10
            && z.as_bytes()[5] == b'-'
            && z.bytes()
                .enumerate()
                .all(|(i, c)| i == 5 || c.is_ascii_digit());
        if !zip5 && !zip9 {
            return Err(bad("`zip` must be 5 digits or ZIP+4 (12345-6789)"));
        }
    }
    if b.tags.len() > MAX_TAGS || b.tags.iter().any(|t| t.chars().count() > MAX_TAG) {
        return Err(bad(format!(
            "at most {MAX_TAGS} `tags` of at most {MAX_TAG} characters each"
        )));
    }
    let loop_via = headers
        .get("x-dce-loop")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    Ok(QuoteRequest {
        id: 0,
        carrier: carrier.to_owned(),
        caller,
        called,
        campaign: b.campaign,
        state,
        zip: b.zip,
        tags: b.tags,
        loop_via,
    })
}

/// What a call from this caller would be paid: DCE runs the call's checks and auction
/// (compliance, the buyers' filters, the real-time bidders under the campaign's deadline)
/// without placing a call. A price is reserved for the key's carrier's next call from the
/// caller until `expires_at`; that call goes to the reserved buyer at the reserved price.
/// Needs a `publisher` key.
#[utoipa::path(post, path = "/v1/bid", tag = "bids",
    request_body = BidRequestDoc,
    responses((status = 200, description = "A price, or a refusal with its reason", body = BidAnswer),
              (status = 400, description = "Malformed request", body = super::routes::ErrorBody),
              (status = 503, description = "DCE is shutting down or its core is busy", body = super::routes::ErrorBody)))]
pub async fn bid(
    State(st): State<Arc<ApiState>>,
    Extension(Caller(key)): Extension<Caller>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    // The guard lets only publisher keys here, and a publisher key always names its carrier.
    let Some(carrier) = key.carrier.as_deref() else {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "POST /v1/bid needs a publisher key tied to a carrier",
        );
    };
    let req = match read(carrier, &body, &headers) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match st.ask(|tx| ApiRequest::Quote(req, tx)).await {
        Ok(QuoteAnswer::Bid {
            bid_cents,
            expires_at,
            destination,
            quote,
        }) => Json(BidAnswer::Offer {
            bid_cents,
            expires_at: expires_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            destination,
            bid_id: quote,
        })
        .into_response(),
        Ok(QuoteAnswer::Refused(refused)) => Json(BidAnswer::Refusal { refused }).into_response(),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bid_request_is_checked_before_it_reaches_the_core() {
        let h = HeaderMap::new();
        let ok = read(
            "carrier-a",
            br#"{"caller":"+1 310 555 1234","called":"8005550100","state":"ca","zip":"90210","tags":["auto"]}"#,
            &h,
        )
        .unwrap();
        assert_eq!(
            (
                ok.caller.as_str(),
                ok.called.as_deref(),
                ok.state,
                ok.zip.as_deref()
            ),
            (
                "13105551234",
                Some("18005550100"),
                Some("CA"),
                Some("90210")
            )
        );
        let by_campaign = read(
            "carrier-a",
            br#"{"caller":"+13105551234","campaign":"auto"}"#,
            &h,
        )
        .unwrap();
        assert_eq!(
            (by_campaign.called, by_campaign.campaign.as_deref()),
            (None, Some("auto"))
        );
        for body in [
            &br#"{"caller":"nobody","called":"+18005550100"}"#[..],
            br#"{"caller":"+13105551234"}"#,
            br#"{"caller":"+13105551234","called":"+18005550100","campaign":"auto"}"#,
            br#"{"caller":"+13105551234","called":"+18005550100","state":"XX"}"#,
            br#"{"caller":"+13105551234","called":"+18005550100","zip":"9021"}"#,
            br#"{"caller":"+13105551234","called":"+18005550100","price":1}"#,
            br#"not json"#,
        ] {
            assert!(
                read("carrier-a", body, &h).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let mut h = HeaderMap::new();
        h.insert("x-dce-loop", "exch-a".parse().unwrap());
        let r = read(
            "carrier-a",
            br#"{"caller":"+13105551234","campaign":"auto"}"#,
            &h,
        )
        .unwrap();
        assert_eq!(r.loop_via.as_deref(), Some("exch-a"));
    }
}
