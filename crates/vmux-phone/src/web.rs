//! The page's HTTP side: static files, the JSON API, the event stream,
//! and the listener (HTTPS, or plain HTTP on loopback behind a proxy).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tracing::{debug, info, warn};
use vmux_webauthn::{
    verify_assertion, verify_registration, AssertionResponse, RegistrationResponse,
    UserVerification,
};

use crate::assets;
use actions::{challenge_for, confirm, Confirmation, PushRemove, PushSubscribe};
pub use actions::{Confirmed, Unpair};

mod actions;
use crate::desk::{check_approval, check_burst, ApproveError};
use crate::limits::{self, Purpose};
use crate::service::Phones;
use crate::session::SignedIn;
use crate::tls::PageTls;

/// The session cookie's name (`__Host-`: Secure, no Domain, Path=/).
pub const SESSION_COOKIE: &str = "__Host-vmux-session";
/// The largest request body the API reads.
pub const MAX_BODY: usize = 64 * 1024;
/// Time for a client to finish the TLS handshake and send its headers
/// (and for an idle connection to send its next request's).
const HANDSHAKE_TIME: Duration = Duration::from_secs(10);
/// Time for a request's body once its headers arrived: with
/// [`HANDSHAKE_TIME`], a whole request arrives within 20 s or its
/// connection is closed.
const BODY_TIME: Duration = Duration::from_secs(10);
/// How often an open event stream proves it is alive (and learns it is
/// not): the signer knows within about this long that a page went away.
pub const KEEP_ALIVE: Duration = Duration::from_secs(1);

/// The Content-Security-Policy of every response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; manifest-src 'self'; worker-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// A paired agent, as the page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// When it paired, Unix seconds.
    pub paired_at: u64,
    /// When it last connected.
    pub last_seen: Option<u64>,
}

/// A recent decision from the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct RecentView {
    /// When, Unix seconds.
    pub time: u64,
    /// `pair`, `sign` or `certificate`.
    pub kind: String,
    /// `approved`, `refused`, …
    pub outcome: String,
    /// What it was, in a line.
    pub summary: String,
    /// The phone that decided, if one did.
    pub phone: Option<String>,
}

/// What the page may learn of, and do to, the signer it belongs to.
pub trait SignerInfo: Send + Sync + 'static {
    /// The signer's name.
    fn name(&self) -> String;
    /// Whether it is locked.
    fn locked(&self) -> bool;
    /// Its paired agents.
    fn agents(&self) -> Vec<AgentView>;
    /// Its last `n` decisions, newest first.
    fn recent(&self, n: usize) -> Vec<RecentView>;
    /// Unpairs the agent the phone's passkey confirmed unpairing
    /// ([`Confirmed::target`]); false when there is none.
    fn unpair(&self, agent: &Confirmed<Unpair>) -> Result<bool, String>;
}

/// The address a request came from (set for every request by the
/// listener), and whether it is known to be the client's (not a proxy's
/// whose header is not trusted).
#[derive(Debug, Clone, Copy)]
struct PeerIp {
    ip: std::net::IpAddr,
    known: bool,
}

struct App {
    phones: Arc<Phones>,
    signer: Arc<dyn SignerInfo>,
}

type AppState = State<Arc<App>>;

/// An API error: a status and one sentence.
struct ApiError(StatusCode, String);

impl ApiError {
    fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError(status, msg.into())
    }
    /// A refused approval: 410 when the request no longer waits, 400 when
    /// the page asked for what is not offered, else 403.
    fn approval(e: ApproveError) -> Self {
        let status = match e {
            ApproveError::NotPending => StatusCode::GONE,
            ApproveError::NoWindowOffered | ApproveError::NotABurst => StatusCode::BAD_REQUEST,
            _ => StatusCode::FORBIDDEN,
        };
        Self::new(status, e.to_string())
    }
    fn bad(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }
    fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "sign in with this phone's passkey first",
        )
    }
    /// The error, and the connection closed after it.
    fn closing(self) -> Response {
        let mut r = self.into_response();
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// A request body as the JSON this page sends, or 400: what every
/// handler that reads a body takes it as.
struct Parsed<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Parsed<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let body = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        serde_json::from_slice(&body).map(Parsed).map_err(|_| {
            ApiError::bad("the request is not the JSON this page sends").into_response()
        })
    }
}

fn b64(field: &str, s: &str) -> Result<Vec<u8>, ApiError> {
    B64URL
        .decode(s.trim_end_matches('='))
        .map_err(|_| ApiError::bad(format!("{field} is not base64url")))
}

/// The session cookie's value in `headers`, if any.
fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// A request from a signed-in phone: its session cookie names a live
/// session. Every handler that acts for a phone takes a [`SignedIn`], so
/// none can forget the check.
impl FromRequestParts<Arc<App>> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        signed_in(app, &parts.headers)
    }
}

/// The signed-in phone, or 401.
fn signed_in(app: &App, headers: &HeaderMap) -> Result<SignedIn, ApiError> {
    let token = session_token(headers).ok_or_else(ApiError::unauthorized)?;
    SignedIn::of(&app.phones.sessions, &token).ok_or_else(ApiError::unauthorized)
}

fn session_cookie(token: &str) -> HeaderValue {
    let lifetime = crate::auth::SESSION_LIFETIME.as_secs();
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age={lifetime}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

/// A JSON answer that sets the session cookie.
fn with_session(token: &str, body: serde_json::Value) -> Response {
    let mut r = Json(body).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(token));
    r
}

/// Every state-changing request must come from the page itself.
async fn check_origin(State(app): AppState, req: Request, next: Next) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        if origin != Some(app.phones.origin()) {
            warn!(origin = ?origin.map(vmux_proto::sanitize), path = %req.uri().path(), "refused a request from another origin");
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "this request did not come from the phone page",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Reads the whole body within [`BODY_TIME`] (and [`MAX_BODY`]) before
/// the handler runs, so a body trickled a byte at a time cannot hold a
/// connection; a late one is answered 408 and its connection closed.
async fn bounded_body(req: Request, next: Next) -> Response {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request is larger than this page sends",
        )
        .into_response()
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(BODY_TIME, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => too_large(),
        Err(_) => {
            debug!(path = %parts.uri.path(), "a request body took too long");
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "the request took too long to arrive",
            )
            .closing()
        }
    }
}

/// The headers every response of the page, and of the plain-HTTP trust
/// page, carries: its policy `csp`, no sniffing, no framing, no referrer.
pub(crate) fn page_headers(h: &mut HeaderMap, csp: &'static str) {
    h.insert("content-security-policy", HeaderValue::from_static(csp));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
}

/// Headers on every response: no framing, no sniffing, no caching of the
/// API, the strict policy.
async fn security_headers(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    page_headers(h, CSP);
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "strict-transport-security",
        HeaderValue::from_static("max-age=31536000"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if api { "no-store" } else { "no-cache" }),
    );
    r
}

async fn asset(path: axum::http::Uri) -> Response {
    match assets::get(path.path()) {
        Some((mime, body)) => ([(header::CONTENT_TYPE, mime)], body).into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, "no such page").into_response(),
    }
}

async fn session(State(app): AppState, headers: HeaderMap) -> ApiResult {
    let rp_id = app.phones.rp.id().to_owned();
    Ok(match signed_in(&app, &headers) {
        Ok(signed) => Json(json!({
            "signed_in": true, "phone": signed.phone(), "signer": app.signer.name(), "rp_id": rp_id,
        })),
        Err(_) => Json(json!({ "signed_in": false, "rp_id": rp_id })),
    }
    .into_response())
}

#[derive(Deserialize)]
struct Token {
    token: String,
}

/// Refuses while too many attempts failed in the last minute.
fn not_flooded(app: &App, peer: PeerIp) -> Result<(), ApiError> {
    if app.phones.failures.allowed(peer.ip) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed attempts; wait a minute",
        ))
    }
}

/// Counts a failed attempt and passes its error on.
fn failed(app: &App, peer: PeerIp, e: ApiError) -> ApiError {
    app.phones.failures.record(peer.ip);
    e
}

async fn enrol_begin(
    State(app): AppState,
    Extension(peer): Extension<PeerIp>,
    Parsed(t): Parsed<Token>,
) -> ApiResult {
    // A live link is served whatever others' failures filled.
    let Some(b) = app.phones.enrolments.begin(&t.token) else {
        not_flooded(&app, peer)?;
        return Err(failed(
            &app,
            peer,
            ApiError::bad("this enrolment link was used already or has expired; run `vmux signer phone add` again"),
        ));
    };
    Ok(Json(json!({
        "phone": b.name,
        "options": {
            "challenge": B64URL.encode(b.challenge),
            "rp": { "id": app.phones.rp.id(), "name": app.signer.name() },
            "user": { "id": B64URL.encode(b.user_id), "name": b.name, "displayName": b.name },
            "timeout_ms": 120_000,
        },
    }))
    .into_response())
}

#[derive(Deserialize)]
struct EnrolFinish {
    token: String,
    credential_id: String,
    attestation_object: String,
    client_data_json: String,
}

async fn enrol_finish(
    State(app): AppState,
    Extension(peer): Extension<PeerIp>,
    Parsed(f): Parsed<EnrolFinish>,
) -> ApiResult {
    let Some((name, challenge)) = app.phones.enrolments.pending(&f.token) else {
        not_flooded(&app, peer)?;
        return Err(failed(&app, peer, ApiError::bad("this enrolment link was used already or has expired; run `vmux signer phone add` again")));
    };
    let (id, att, cdj) = (
        b64("credential_id", &f.credential_id)?,
        b64("attestation_object", &f.attestation_object)?,
        b64("client_data_json", &f.client_data_json)?,
    );
    let credential = verify_registration(
        &app.phones.rp,
        &challenge,
        &RegistrationResponse {
            credential_id: &id,
            attestation_object: &att,
            client_data_json: &cdj,
        },
        UserVerification::Required,
    )
    .map_err(|e| {
        failed(
            &app,
            peer,
            ApiError::bad(format!("the new passkey was refused: {e}")),
        )
    })?;
    if !app.phones.enrolments.consume(&f.token) {
        return Err(failed(
            &app,
            peer,
            ApiError::bad("this enrolment link was used already"),
        ));
    }
    app.phones
        .book
        .add(
            &name,
            &credential,
            app.phones.rp.id(),
            vmux_home::time::now_s(),
        )
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, e.to_string()))?;
    app.phones.enrolments.forget(&name);
    info!(phone = %name, "phone enrolled");
    let token = app.phones.sessions.open(&name);
    Ok(with_session(&token, json!({ "phone": name })))
}

/// A sign-in challenge: stateless (MAC'd, see `limits::Tickets`), so
/// nobody's begins displace the owner's. Limited per source where the
/// source is known, only to bound the work.
async fn signin_begin(State(app): AppState, Extension(peer): Extension<PeerIp>) -> ApiResult {
    if peer.known {
        if !app.phones.begins.allowed(peer.ip) {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many sign-in attempts from this address; wait a minute",
            ));
        }
        app.phones.begins.record(peer.ip);
    }
    let c = app.phones.tickets.issue(&Purpose::SignIn);
    Ok(Json(json!({
        "challenge": B64URL.encode(c),
        "rp_id": app.phones.rp.id(),
        "timeout_ms": crate::auth::CHALLENGE_LIFETIME.as_millis() as u64,
    }))
    .into_response())
}

/// An assertion as the page posts it.
#[derive(Deserialize)]
struct AssertionBody {
    #[serde(default)]
    challenge: String,
    #[serde(default)]
    window: bool,
    credential_id: String,
    authenticator_data: String,
    client_data_json: String,
    signature: String,
}

struct OwnedAssertion {
    id: Vec<u8>,
    authenticator_data: Vec<u8>,
    client_data_json: Vec<u8>,
    signature: Vec<u8>,
}

impl OwnedAssertion {
    fn from(a: &AssertionBody) -> Result<OwnedAssertion, ApiError> {
        Ok(OwnedAssertion {
            id: b64("credential_id", &a.credential_id)?,
            authenticator_data: b64("authenticator_data", &a.authenticator_data)?,
            client_data_json: b64("client_data_json", &a.client_data_json)?,
            signature: b64("signature", &a.signature)?,
        })
    }
    fn response(&self) -> AssertionResponse<'_> {
        AssertionResponse {
            credential_id: &self.id,
            authenticator_data: &self.authenticator_data,
            client_data_json: &self.client_data_json,
            signature: &self.signature,
        }
    }
}

async fn signin_finish(
    State(app): AppState,
    Extension(peer): Extension<PeerIp>,
    Parsed(a): Parsed<AssertionBody>,
) -> ApiResult {
    let challenge = b64("challenge", &a.challenge)?;
    let owned = OwnedAssertion::from(&a)?;
    let stale = || ApiError::bad("this sign-in took too long or was used already; try again");
    let refused = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "this passkey is not an enrolled phone's",
        )
    };
    // The cheap checks first: a fresh challenge of this signer's and an
    // enrolled credential. Only a request failing them can be refused by
    // the failure limits; one passing them has its assertion checked
    // whatever others' failures filled.
    let ticket = app.phones.tickets.check(&Purpose::SignIn, &challenge);
    let record = app.phones.book.by_credential(&owned.id);
    let (Some(ticket), Some(record)) = (ticket, record) else {
        not_flooded(&app, peer)?;
        let stale_challenge = app
            .phones
            .tickets
            .check(&Purpose::SignIn, &challenge)
            .is_none();
        return Err(failed(
            &app,
            peer,
            if stale_challenge { stale() } else { refused() },
        ));
    };
    let credential = record
        .credential()
        .ok_or_else(|| failed(&app, peer, refused()))?;
    let assertion = verify_assertion(
        &app.phones.rp,
        &credential,
        &challenge,
        &owned.response(),
        UserVerification::Required,
    )
    .map_err(|e| {
        failed(
            &app,
            peer,
            ApiError::new(StatusCode::FORBIDDEN, format!("sign-in refused: {e}")),
        )
    })?;
    if !app.phones.tickets.spend(ticket) {
        return Err(failed(&app, peer, stale()));
    }
    app.phones
        .book
        .record_use(&record.name, &assertion, vmux_home::time::now_s())
        .map_err(|e| ApiError::new(StatusCode::FORBIDDEN, e.to_string()))?;
    info!(phone = %record.name, "phone signed in");
    let token = app.phones.sessions.open(&record.name);
    Ok(with_session(&token, json!({ "phone": record.name })))
}

async fn signout(State(app): AppState, headers: HeaderMap) -> ApiResult {
    if let Some(t) = session_token(&headers) {
        app.phones.sessions.close(&t);
    }
    let mut r = Json(json!({})).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "__Host-vmux-session=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        ),
    );
    Ok(r)
}

/// The state `phone`'s page sees: the cards it may decide, and no other
/// phone's.
fn state_event(app: &App, phone: &str) -> Event {
    let credential = app
        .phones
        .book
        .list()
        .into_iter()
        .find(|p| p.name == phone)
        .map(|p| p.credential_id);
    let body = json!({
        "signer": { "name": app.signer.name(), "locked": app.signer.locked() },
        "requests": app.phones.desk.cards(phone, credential.as_deref()),
    });
    Event::default().event("state").data(body.to_string())
}

async fn events(State(app): AppState, signed: SignedIn) -> Result<Response, ApiError> {
    let (phone, token) = (signed.phone().to_owned(), signed.token().to_owned());
    let presence = app.phones.present(&phone);
    let changes = app.phones.desk.subscribe();
    let first = state_event(&app, &phone);
    // Each step: the next change of the desk, or a second passing (to
    // notice a revoked session); the stream ends with the session.
    let stream = futures_util::stream::unfold(
        (app, token, changes, Some(first), presence, phone),
        |(app, token, mut changes, first, presence, phone)| async move {
            if let Some(e) = first {
                return Some((
                    Ok::<_, Infallible>(e),
                    (app, token, changes, None, presence, phone),
                ));
            }
            loop {
                let changed = tokio::time::timeout(KEEP_ALIVE, changes.changed()).await;
                app.phones.sessions.phone(&token)?;
                match changed {
                    Ok(Ok(())) => {
                        let e = state_event(&app, &phone);
                        return Some((Ok(e), (app, token, changes, None, presence, phone)));
                    }
                    Ok(Err(_)) => return None,
                    Err(_) => continue,
                }
            }
        },
    );
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // The connection ends with the stream: a browser that closes the page
    // then closes the socket (rather than keeping it to drain and reuse),
    // so the next keep-alive fails and the signer knows the page is gone.
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    Ok(r)
}

async fn status(State(app): AppState, signed: SignedIn) -> ApiResult {
    let me = signed.phone();
    let phones: Vec<_> = app
        .phones
        .list()
        .into_iter()
        .map(|p| {
            json!({
                "name": p.name, "added_at": p.added_at, "last_seen": p.last_seen,
                "online": p.online, "this": p.name == me,
            })
        })
        .collect();
    // The audit log is a file: read it off the runtime.
    let signer = app.signer.clone();
    let recent = tokio::task::spawn_blocking(move || signer.recent(20))
        .await
        .unwrap_or_default();
    // Each agent with the challenge that confirms unpairing it.
    let agents: Vec<_> = app
        .signer
        .agents()
        .into_iter()
        .map(|a| {
            let challenge = challenge_for::<Unpair>(&app, &signed, &a.id);
            let mut v = json!(a);
            v["unpair_challenge"] = json!(challenge);
            v
        })
        .collect();
    Ok(Json(json!({
        "signer": { "name": app.signer.name(), "locked": app.signer.locked() },
        "agents": agents,
        "phones": phones,
        "recent": recent,
    }))
    .into_response())
}

async fn approve(
    State(app): AppState,
    Path(id): Path<String>,
    signed: SignedIn,
    Parsed(a): Parsed<AssertionBody>,
) -> ApiResult {
    let phone = signed.phone();
    let owned = OwnedAssertion::from(&a)?;
    let approval = check_approval(
        &app.phones.rp,
        &app.phones.book,
        &app.phones.desk,
        &signed,
        &id,
        a.window,
        &owned.response(),
    )
    .map_err(|e| {
        warn!(phone = %phone, error = %e, "approval refused");
        ApiError::approval(e)
    })?;
    if !app.phones.desk.approve(approval) {
        return Err(ApiError::approval(ApproveError::NotPending));
    }
    info!(phone = %phone, "request approved on the phone");
    Ok(Json(json!({ "approved": true })).into_response())
}

/// An "Approve all N" as the page posts it: the list it showed, in its
/// order, and one assertion over that list's burst challenge.
#[derive(Deserialize)]
struct BurstBody {
    ids: Vec<String>,
    #[serde(flatten)]
    assertion: AssertionBody,
}

async fn approve_all(
    State(app): AppState,
    signed: SignedIn,
    Parsed(b): Parsed<BurstBody>,
) -> ApiResult {
    let phone = signed.phone();
    let owned = OwnedAssertion::from(&b.assertion)?;
    let approval = check_burst(
        &app.phones.rp,
        &app.phones.book,
        &app.phones.desk,
        &signed,
        &b.ids,
        &owned.response(),
    )
    .map_err(|e| {
        warn!(phone = %phone, error = %e, "burst approval refused");
        ApiError::approval(e)
    })?;
    let approved = app.phones.desk.approve_burst(approval);
    if approved == 0 {
        return Err(ApiError::approval(ApproveError::NotPending));
    }
    info!(phone = %phone, approved, "requests approved together on the phone");
    Ok(Json(json!({ "approved": approved })).into_response())
}

async fn deny(State(app): AppState, Path(id): Path<String>, signed: SignedIn) -> ApiResult {
    let phone = signed.phone();
    if !app.phones.desk.deny(&id, phone) {
        return Err(ApiError::approval(ApproveError::NotPending));
    }
    info!(phone = %phone, "request denied on the phone");
    Ok(Json(json!({ "denied": true })).into_response())
}

/// Unpairs an agent: only with the phone's passkey confirming it (a
/// stolen cookie alone unpairs nothing).
async fn unpair(
    State(app): AppState,
    Path(id): Path<String>,
    signed: SignedIn,
    Parsed(c): Parsed<Confirmation>,
) -> ApiResult {
    let phone = signed.phone();
    let agent = confirm::<Unpair>(&app, &signed, &id, &c).inspect_err(|_| {
        warn!(phone = %phone, "an unpair without a valid passkey confirmation was refused");
    })?;
    match app.signer.unpair(&agent) {
        Ok(true) => {
            info!(phone = %phone, agent = %vmux_proto::sanitize(&id), "agent unpaired from the phone page");
            Ok(Json(json!({ "unpaired": true })).into_response())
        }
        Ok(false) => Err(ApiError::new(StatusCode::NOT_FOUND, "no such paired agent")),
        Err(e) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e)),
    }
}

/// The signer's VAPID public key, and the endpoints this phone's pages
/// are subscribed with as the signer knows them, so that a page whose
/// subscription the signer dropped (gone at its push service), never
/// received (a rotation) or cannot use (another key) subscribes anew
/// instead of saying notifications are on; the subscriptions to list
/// (each with the challenge that confirms removing it) and the challenge
/// that confirms subscribing.
async fn push_key(State(app): AppState, signed: SignedIn) -> ApiResult {
    let phone = signed.phone();
    let key = app.phones.vapid.public_b64().map_err(|e| {
        warn!(error = %e, "no Web Push key");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    })?;
    let subs: Vec<_> = app
        .phones
        .book
        .list()
        .into_iter()
        .filter(|p| p.name == phone)
        .flat_map(|p| p.push)
        .collect();
    let subscribed: Vec<&str> = subs.iter().map(|s| s.endpoint.as_str()).collect();
    let subscriptions: Vec<_> = subs
        .iter()
        .map(|s| {
            json!({
                "endpoint": s.endpoint,
                "added_at": s.added_at,
                "remove_challenge": challenge_for::<PushRemove>(&app, &signed, &s.endpoint),
            })
        })
        .collect();
    Ok(Json(json!({
        "key": key,
        "subscribed": subscribed,
        "subscriptions": subscriptions,
        "subscribe_challenge": challenge_for::<PushSubscribe>(&app, &signed, ""),
    }))
    .into_response())
}

/// A subscription as `PushSubscription.toJSON()` gives it, and the
/// passkey's confirmation.
#[derive(Deserialize)]
struct SubscribeBody {
    endpoint: String,
    keys: SubscribeKeys,
    #[serde(flatten)]
    confirmation: Confirmation,
}

#[derive(Deserialize)]
struct SubscribeKeys {
    p256dh: String,
    auth: String,
}

async fn push_subscribe(
    State(app): AppState,
    signed: SignedIn,
    Parsed(b): Parsed<SubscribeBody>,
) -> ApiResult {
    let phone = signed.phone();
    let sub = crate::book::PushSubscription::checked(
        &b.endpoint,
        &b.keys.p256dh,
        &b.keys.auth,
        vmux_home::time::now_s(),
    )
    .ok_or_else(|| ApiError::bad("not a Web Push subscription this signer can use"))?;
    // A stolen cookie alone cannot add a feed of the requests.
    confirm::<PushSubscribe>(&app, &signed, "", &b.confirmation).inspect_err(|_| {
        warn!(phone = %phone, "a push subscription without a valid passkey confirmation was refused");
    })?;
    app.phones
        .book
        .subscribe(phone, sub)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    info!(phone = %phone, "the page subscribed to Web Push");
    Ok(Json(json!({ "subscribed": true })).into_response())
}

#[derive(Deserialize)]
struct UnsubscribeBody {
    endpoint: String,
    #[serde(flatten)]
    confirmation: Confirmation,
}

async fn push_unsubscribe(
    State(app): AppState,
    signed: SignedIn,
    Parsed(b): Parsed<UnsubscribeBody>,
) -> ApiResult {
    let phone = signed.phone();
    // A stolen cookie alone cannot stop the phone being woken.
    confirm::<PushRemove>(&app, &signed, &b.endpoint, &b.confirmation)?;
    let removed = app
        .phones
        .book
        .unsubscribe(Some(phone), &b.endpoint)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if removed {
        info!(phone = %phone, "the page unsubscribed from Web Push");
    }
    Ok(Json(json!({ "unsubscribed": removed })).into_response())
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such page")
}

/// The page's routes.
fn router(app: Arc<App>) -> Router {
    let mut r = Router::new();
    for path in assets::PATHS {
        r = r.route(path, get(asset));
    }
    r.route("/api/session", get(session))
        .route("/api/enrol/begin", post(enrol_begin))
        .route("/api/enrol/finish", post(enrol_finish))
        .route("/api/signin/begin", post(signin_begin))
        .route("/api/signin/finish", post(signin_finish))
        .route("/api/signout", post(signout))
        .route("/api/events", get(events))
        .route("/api/status", get(status))
        .route("/api/requests/{id}/approve", post(approve))
        .route("/api/requests/approve-all", post(approve_all))
        .route("/api/requests/{id}/deny", post(deny))
        .route("/api/agents/{id}/unpair", post(unpair))
        .route("/api/push/key", get(push_key))
        .route("/api/push/subscribe", post(push_subscribe))
        .route("/api/push/unsubscribe", post(push_unsubscribe))
        .fallback(not_found)
        .layer(middleware::from_fn(bounded_body))
        .layer(middleware::from_fn_with_state(app.clone(), check_origin))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(security_headers))
        .with_state(app)
}

/// Serves the phone page on `listener` (HTTPS with `tls`, else plain HTTP,
/// which the caller allows only on loopback) until the future is dropped.
pub async fn serve(
    listener: TcpListener,
    tls: Option<PageTls>,
    phones: Arc<Phones>,
    signer: Arc<dyn SignerInfo>,
) {
    // Web Push runs beside the page, for as long as it is served.
    let _push = AbortOnDrop(tokio::spawn(crate::push::run(phones.clone())));
    let router = router(Arc::new(App {
        phones: phones.clone(),
        signer,
    }));
    let (acceptor, watch) = match &tls {
        Some(t) => {
            let (a, w) = t.acceptor();
            (Some(a), Some(w))
        }
        None => (None, None),
    };
    let _watch = watch.map(tokio::spawn).map(AbortOnDrop);
    // Serving TLS itself, the page sees each client's address; behind a
    // proxy every connection is the proxy's (its own limits apply there).
    let direct = tls.is_some();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(admission) = phones.slots.admit(peer.ip(), direct) else {
            debug!(%peer, "no connection slot for this source; closed");
            drop(stream);
            continue;
        };
        let conn = Conn {
            router: router.clone(),
            phones: phones.clone(),
            peer,
            direct,
            reserved: admission.reserved,
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _admission = admission;
            match acceptor {
                Some(a) => match tokio::time::timeout(HANDSHAKE_TIME, a.accept(stream)).await {
                    Ok(Ok(tls)) => serve_connection(tls, conn).await,
                    _ => debug!(%peer, "TLS handshake failed or took too long"),
                },
                None => serve_connection(stream, conn).await,
            }
        });
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One connection's context.
struct Conn {
    router: Router,
    phones: Arc<Phones>,
    peer: SocketAddr,
    direct: bool,
    /// It holds a reserved slot: only signed-in requests are served.
    reserved: bool,
}

/// The answer on a reserved slot to a request without a live session.
fn busy() -> Response {
    let mut r = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the signer's page is busy; try again in a moment",
    )
    .closing();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

async fn serve_connection<S>(io: S, conn: Conn)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let conn = Arc::new(conn);
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let conn = conn.clone();
        async move {
            if conn.reserved
                && session_token(req.headers())
                    .is_none_or(|t| conn.phones.sessions.phone(&t).is_none())
            {
                return Ok::<_, Infallible>(busy());
            }
            let (ip, known) = limits::client_addr(
                conn.peer.ip(),
                req.headers(),
                conn.direct,
                conn.phones.trust_forwarded_for,
            );
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(PeerIp { ip, known });
            conn.router.clone().oneshot(req).await
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIME)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    if let Err(e) = conn.await {
        debug!(%peer, error = %e, "page connection ended");
    }
}
