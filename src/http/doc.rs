//! The OpenAPI document, generated from the handlers' `utoipa::path` annotations and the
//! response types, served at `/openapi.json`. Answers every route can give (401, 403, 408,
//! 413, 429) are added here once rather than on each handler.

use super::routes::{
    BuyerList, CallList, DncEntry, ErrorBody, ErrorDetail, Figures, GroupFigures, HangupDone, Stats,
};
use crate::call::view::{
    BuyerPatch, BuyerView, CallView, DnsView, HealthView, LegView, PauseRuleView,
};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

/// One dependency in `/health` (fields that do not apply are left out).
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct DependencyHealth {
    /// `ok`, `down`, `backlog`, `low` or `not_configured`.
    pub status: String,
    /// What failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Spool: bytes waiting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Port pool: pairs in use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_use: Option<u64>,
    /// Port pool: pairs in the range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

impl DependencyHealth {
    /// Just a status.
    pub fn status(status: &str) -> Self {
        DependencyHealth {
            status: status.into(),
            ..Default::default()
        }
    }

    /// Down, and why.
    pub fn down(error: String) -> Self {
        DependencyHealth {
            error: Some(error),
            ..Self::status("down")
        }
    }
}

/// `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `degraded` (a dependency is down; calls still flow) or `draining` (SIGTERM).
    pub status: String,
    /// The CDR database.
    pub database: DependencyHealth,
    /// Redis (fleet-wide state).
    pub redis: DependencyHealth,
    /// CDRs waiting in the spool.
    pub spool: DependencyHealth,
    /// RTP ports.
    pub port_pool: DependencyHealth,
    /// Calls in progress.
    pub active_calls: u64,
}

/// `POST /v1/reload`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reloaded {
    /// Always true.
    pub reloaded: bool,
    /// What was loaded (file, campaigns, buyers).
    pub config: String,
}

/// `GET /v1/cdrs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CdrPage {
    /// Calls, newest first.
    pub cdrs: Vec<crate::store::db::ExportRow>,
    /// The `cursor` of the next page; null on the last page.
    pub next: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "DCE control API",
        description = "Dependable Call Exchange edge: calls, buyers, CDRs, DNC, stats, GDPR erasure, live events. \
            Send `Authorization: Bearer <key>`; GET needs a read key, everything else an admin key, \
            except `POST /v1/bid`, which only a publisher key (tied to a carrier) may call, and \
            `/v1/calls/{id}/conversion`, which a buyer key (tied to a buyer) may call for calls that buyer answered.",
        license(name = "Apache-2.0")
    ),
    paths(
        super::health, super::metrics, super::cdrs, super::reload,
        super::routes::calls, super::routes::call, super::routes::hangup,
        super::routes::buyers, super::routes::patch_buyer,
        super::routes::dnc_get, super::routes::dnc_put, super::routes::dnc_delete,
        super::routes::stats, super::gdpr::erase, super::ws::events, super::bid::bid,
        super::conversion::post, super::conversion::get, super::webhooks::list, super::recording::get,
    ),
    components(schemas(
        ErrorBody, ErrorDetail, CallList, CallView, LegView, HangupDone, BuyerList, BuyerView, DnsView, HealthView, PauseRuleView,
        BuyerPatch, DncEntry, Stats, Figures, GroupFigures, Health, DependencyHealth, Reloaded,
        CdrPage, crate::store::db::ExportRow, super::gdpr::EraseRequest,
        crate::store::gdpr::Erased, super::bid::BidRequestDoc, super::bid::ByNumber, super::bid::ByCampaign, super::bid::BidAnswer,
        super::conversion::ConversionBody, crate::store::conversions::ConversionState, crate::store::conversions::ConversionEvent,
        super::webhooks::DeliveryList, super::webhooks::Delivery, super::webhooks::DeliveryCounts,
    )),
    modifiers(&Common)
)]
pub struct ApiDoc;

/// Adds the bearer scheme and the answers any route can give.
struct Common;

fn err(desc: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(desc)
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "ErrorBody",
                ))))
                .build(),
        )
        .build()
        .into()
}

impl Modify for Common {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let comps = api.components.get_or_insert_with(Default::default);
        comps.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        for (path, item) in api.paths.paths.iter_mut() {
            let open = path == "/health" || path == "/metrics";
            let ops: [&mut Option<Operation>; 5] = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                let r = &mut op.responses.responses;
                let mut put = |code: &str, desc: &str| {
                    r.entry(code.to_owned()).or_insert_with(|| err(desc));
                };
                put("401", "No key, or a wrong one");
                put("403", "A read key on an admin route");
                put("408", "The body did not arrive in time");
                put("413", "Body too large");
                put("429", "Rate limited (see Retry-After)");
                put("503", "DCE is shutting down or a dependency did not answer");
                if !open {
                    op.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
                        "bearer",
                        Vec::<String>::new(),
                    )]);
                }
            }
        }
    }
}

/// The document as served. Links are added here, on the JSON: utoipa 5 writes a link's
/// `operationId` as `operation_id`, which no client reads.
pub fn document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    // GET /v1/calls leads to the call and its hangup (clients and schemathesis follow it).
    if let Some(ok) = doc.pointer_mut("/paths/~1v1~1calls/get/responses/200") {
        ok["links"] = serde_json::json!({
            "GetCall": { "operationId": "call", "parameters": { "id": "$response.body#/calls/0/id" } },
            "HangUpCall": { "operationId": "hangup", "parameters": { "id": "$response.body#/calls/0/id" } },
        });
    }
    doc
}

/// `GET /openapi.json`.
pub async fn openapi_json() -> Response {
    axum::Json(document()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_its_errors() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/health",
            "/metrics",
            "/v1/cdrs",
            "/v1/reload",
            "/v1/calls",
            "/v1/calls/{id}",
            "/v1/calls/{id}/hangup",
            "/v1/buyers",
            "/v1/buyers/{id}",
            "/v1/dnc/{number}",
            "/v1/stats",
            "/v1/gdpr/erase",
            "/v1/events",
            "/v1/calls/{id}/conversion",
            "/v1/webhooks",
            "/v1/calls/{id}/recording",
        ] {
            assert!(paths.contains_key(p), "{p} missing from the document");
        }
        let patch = &doc["paths"]["/v1/buyers/{id}"]["patch"];
        assert!(patch["responses"]["401"].is_object());
        assert!(patch["responses"]["404"].is_object());
        assert_eq!(patch["security"][0]["bearer"], serde_json::json!([]));
        assert!(doc["paths"]["/health"]["get"]["security"].is_null());
        assert!(doc["components"]["schemas"]["CallView"].is_object());
        let links = &doc["paths"]["/v1/calls"]["get"]["responses"]["200"]["links"];
        assert_eq!(links["GetCall"]["operationId"], "call");
        assert_eq!(doc["paths"]["/v1/calls/{id}"]["get"]["operationId"], "call");
        assert_eq!(
            doc["paths"]["/v1/calls/{id}/hangup"]["post"]["operationId"],
            "hangup"
        );
    }

    #[test]
    fn the_erasure_body_is_strict() {
        let doc = document();
        let op = &doc["paths"]["/v1/gdpr/erase"]["post"];
        assert_eq!(op["security"][0]["bearer"], serde_json::json!([]));
        for code in ["200", "400", "401", "403", "503"] {
            assert!(op["responses"][code].is_object(), "{code}");
        }
        let body = &doc["components"]["schemas"]["EraseRequest"];
        assert_eq!(body["required"], serde_json::json!(["number"]));
        assert_eq!(body["additionalProperties"], false, "{body}");
        assert_eq!(body["properties"]["number"]["pattern"], r"^\+?[0-9]{8,15}$");
    }

    #[test]
    fn the_bid_request_is_one_of_two_strict_shapes_with_the_checks_in_the_document() {
        let doc = document();
        let op = &doc["paths"]["/v1/bid"]["post"];
        assert!(op["responses"]["200"].is_object() && op["responses"]["400"].is_object());
        let schemas = &doc["components"]["schemas"];
        for (name, key) in [("ByNumber", "called"), ("ByCampaign", "campaign")] {
            let s = &schemas[name];
            assert_eq!(s["additionalProperties"], false, "{name}: {s}");
            assert_eq!(
                s["required"],
                serde_json::json!(["caller", key]),
                "{name}: {s}"
            );
            let p = &s["properties"];
            assert_eq!(p["tags"]["maxItems"], 20, "{name}: {p}");
            assert_eq!(p["tags"]["items"]["maxLength"], 64, "{name}: {p}");
            assert_eq!(p["zip"]["pattern"], r"^[0-9]{5}(-[0-9]{4})?$");
            let states = p["state"]["pattern"].as_str().unwrap();
            let codes: Vec<&str> = states
                .trim_start_matches("^(")
                .trim_end_matches(")$")
                .split('|')
                .collect();
            assert_eq!(codes.len(), 56, "every USPS code DCE knows");
            assert!(codes.iter().all(|c| dce_routing::State::parse(c).is_some()));
        }
        assert_eq!(
            schemas["BidRequestDoc"]["oneOf"].as_array().map(Vec::len),
            Some(2),
            "{}",
            schemas["BidRequestDoc"]
        );
    }
}
