//! What the HTTP API asks of the node task (which asks the SIP workers, who own the calls).

/// Where the outcome of an API-requested reload goes: what was loaded, or every problem.
pub type ReloadReply = tokio::sync::oneshot::Sender<Result<String, Vec<String>>>;

/// What the HTTP API asks of the node task; each carries its reply.
pub enum ApiRequest {
    /// `POST /v1/reload`.
    Reload(ReloadReply),
    /// `GET /v1/calls`.
    Calls(tokio::sync::oneshot::Sender<Vec<crate::call::view::CallView>>),
    /// `GET /v1/calls/{id}`.
    Call(
        String,
        tokio::sync::oneshot::Sender<Option<crate::call::view::CallView>>,
    ),
    /// `POST /v1/calls/{id}/hangup`: true when the call existed.
    Hangup(String, tokio::sync::oneshot::Sender<bool>),
    /// `GET /v1/buyers`.
    Buyers(tokio::sync::oneshot::Sender<Vec<crate::call::view::BuyerView>>),
    /// `PATCH /v1/buyers/{id}`.
    PatchBuyer(
        String,
        crate::call::view::BuyerPatch,
        tokio::sync::oneshot::Sender<Option<crate::call::view::BuyerView>>,
    ),
    /// `POST /v1/bid`.
    Quote(
        crate::call::QuoteRequest,
        tokio::sync::oneshot::Sender<crate::call::QuoteAnswer>,
    ),
}
