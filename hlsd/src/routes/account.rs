//! Accounts and credentials over HTTP:
//! - POST `/api/login` `{"name","password"}` sets the session cookie; POST `/api/logout` clears
//!   it; GET `/api/me` says who the request acts as (401 when nobody) and
//!   which map base layer the page draws;
//! - POST `/api/tokens` mints a player token for what the caller may see: `{"stream"}` (the
//!   live window), `{"session"}`, `{"incident"}` or `{"stream","from","to"}` (one clip), with
//!   `ttl_secs` (at most `--max-token-ttl-secs`); the answer carries ready URLs;
//! - GET/POST `/api/keys`, DELETE `/api/keys/<id>`: the caller's own API keys (the secret is
//!   shown once);
//! - admin only: GET/POST `/api/users`, DELETE `/api/users/<name>`, POST/DELETE
//!   `/api/users/<name>/grants/<target>`, GET `/api/audit?limit&before`, GET `/api/settings`
//!   (what ingestd and this hlsd run with, secrets left out).
//!
//! Every change and every login (failed ones too) goes to the audit log.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use streamcore::catalog::{self, Role};
use streamcore::layout;
use warp::http::{header, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::{blocking, catalog_failed, get_or_head, request, with_state};
use crate::auth::{self, Principal};
use crate::http::{self, Req};
use crate::server::AppState;
use crate::token::now_unix;

/// Largest JSON body these routes read.
const MAX_BODY: u64 = 16 * 1024;
/// Default lifetime of a minted player token.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Most audit entries one request returns.
const MAX_AUDIT: i64 = 1000;

pub(super) fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let st = with_state(state);
    let body = warp::body::content_length_limit(MAX_BODY).and(warp::body::bytes());

    let login = warp::path!("api" / "login")
        .and(warp::post())
        .and(st.clone())
        .and(body)
        .then(login);
    let logout = warp::path!("api" / "logout")
        .and(warp::post())
        .and(st.clone())
        .map(|st: Arc<AppState>| {
            let mut r = http::json(StatusCode::OK, &json!({"logged_out": true}));
            if let Ok(v) = st.auth.cleared_cookie().parse() {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        });
    let me = warp::path!("api" / "me")
        .and(get_or_head())
        .and(st.clone())
        .and(request())
        .then(me);
    let tokens = warp::path!("api" / "tokens")
        .and(warp::post())
        .and(st.clone())
        .and(request())
        .and(body)
        .then(mint_token);
    let keys_list = warp::path!("api" / "keys")
        .and(warp::get())
        .and(st.clone())
        .and(request())
        .then(list_keys);
    let keys_add = warp::path!("api" / "keys")
        .and(warp::post())
        .and(st.clone())
        .and(request())
        .and(body)
        .then(add_key);
    let keys_del = warp::path!("api" / "keys" / String)
        .and(warp::delete())
        .and(st.clone())
        .and(request())
        .then(delete_key);
    let users_list = warp::path!("api" / "users")
        .and(warp::get())
        .and(st.clone())
        .and(request())
        .then(list_users);
    let users_add = warp::path!("api" / "users")
        .and(warp::post())
        .and(st.clone())
        .and(request())
        .and(body)
        .then(add_user);
    let users_del = warp::path!("api" / "users" / String)
        .and(warp::delete())
        .and(st.clone())
        .and(request())
        .then(delete_user);
    let grant = warp::path!("api" / "users" / String / "grants" / String)
        .and(warp::post().or(warp::delete()).unify())
        .and(warp::method())
        .and(st.clone())
        .and(request())
        .then(change_grant);
    let settings = warp::path!("api" / "settings")
        .and(warp::get())
        .and(st.clone())
        .and(request())
        .then(settings);
    let audit = warp::path!("api" / "audit")
        .and(warp::get())
        .and(st)
        .and(request())
        .then(audit_log);

    login
        .or(logout)
        .unify()
        .or(me)
        .unify()
        .or(tokens)
        .unify()
        .or(keys_list)
        .unify()
        .or(keys_add)
        .unify()
        .or(keys_del)
        .unify()
        .or(users_list)
        .unify()
        .or(users_add)
        .unify()
        .or(users_del)
        .unify()
        .or(grant)
        .unify()
        .or(audit)
        .unify()
        .or(settings)
        .unify()
}

/// What the daemons run with (admin): ingestd's segmenting, retention, automatic stop and
/// device policy as it recorded them in the catalog, and this hlsd's access settings.
async fn settings(st: Arc<AppState>, req: Req) -> Response {
    if let Err(resp) = st.auth.require(&req, Role::Admin).await {
        return resp;
    }
    let cat = st.catalog.clone();
    let rows = match blocking(move || cat.settings()).await {
        Ok(r) => r,
        Err(e) => return catalog_failed(e),
    };
    let catalog: Vec<_> = rows
        .into_iter()
        .filter(|(name, _, _)| !catalog::access::SECRET_SETTINGS.contains(&name.as_str()))
        .map(|(name, value, updated_ms)| json!({"name": name, "value": value, "updated_ms": updated_ms}))
        .collect();
    http::json(
        StatusCode::OK,
        &json!({
            "catalog": catalog,
            "hlsd": {
                "instance": st.instance,
                "allow_anonymous": st.auth.allow_anonymous,
                "tls": st.auth.secure_cookies,
                "session_hours": st.auth.session_ttl.as_secs() / 3600,
                "max_token_ttl_secs": st.auth.max_token_ttl.as_secs(),
                "live_timeout_secs": st.live_timeout.as_secs(),
                "watch_timeout_secs": st.watch_timeout.as_secs(),
                "map_tile_url": st.map_tile_url,
            },
        }),
    )
}

fn bad_request(msg: impl std::fmt::Display) -> Response {
    http::error(StatusCode::BAD_REQUEST, msg)
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("JSON body: {e}")))
}

#[derive(Deserialize)]
struct Login {
    name: String,
    password: String,
}

async fn login(st: Arc<AppState>, body: Bytes) -> Response {
    let l: Login = match parse(&body) {
        Ok(l) => l,
        Err(resp) => return resp,
    };
    let (cat, name, password) = (st.catalog.clone(), l.name.clone(), l.password);
    // Argon2 takes tens of milliseconds of CPU on purpose: off the runtime's threads.
    let checked = blocking(move || -> Result<Option<Role>, catalog::Error> {
        let user = cat.user(&name)?;
        let hash = user.as_ref().map_or(
            // Hash anyway for an unknown name, so the answer's timing does not say which
            // names exist.
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2Cna7BS8Kn5bXMbxf1OJqVY3ctaNxAoyGzvaZSq1XNM",
            |u| u.password_hash.as_str(),
        );
        let ok = auth::verify_password(&password, hash);
        Ok(user.filter(|u| ok && !u.disabled).map(|u| u.role))
    })
    .await;
    match checked {
        Ok(Some(role)) => {
            st.auth.audit(&l.name, "login", &l.name, None).await;
            let mut r = http::json(StatusCode::OK, &json!({"name": l.name, "role": role}));
            if let Ok(v) = st.auth.session_cookie(&l.name).parse() {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Ok(None) => {
            st.auth.audit(&l.name, "login.failed", &l.name, None).await;
            http::error(StatusCode::UNAUTHORIZED, "wrong name or password")
        }
        Err(e) => catalog_failed(e),
    }
}

async fn me(st: Arc<AppState>, req: Req) -> Response {
    match st.auth.principal(&req).await {
        Ok(p) => http::json(
            StatusCode::OK,
            &json!({
                "name": p.user_name(),
                "role": p.role(),
                "anonymous": matches!(p, Principal::Anonymous),
                "api_key": matches!(p, Principal::Key { .. }),
                // The page's map base layer (null tile_url: the embedded country outlines).
                "map": {
                    "tile_url": st.map_tile_url,
                    "attribution": st.map_attribution,
                },
            }),
        ),
        Err(resp) => resp,
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    stream: Option<String>,
    session: Option<String>,
    incident: Option<i64>,
    from: Option<String>,
    to: Option<String>,
    ttl_secs: Option<u64>,
}

/// What a token is asked for: its scope, the device it concerns, and the URLs it opens.
async fn mint_token(st: Arc<AppState>, req: Req, body: Bytes) -> Response {
    let p = match st.auth.principal(&req).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let t: TokenRequest = match parse(&body) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let ttl = t
        .ttl_secs
        .map_or(DEFAULT_TOKEN_TTL, Duration::from_secs)
        .min(st.auth.max_token_ttl);
    if ttl.is_zero() {
        return bad_request("ttl_secs must be at least 1");
    }
    let (scope, sim, urls): (String, Option<String>, Vec<String>) =
        match (&t.stream, &t.session, t.incident, &t.from, &t.to) {
            (Some(stream), None, None, None, None) => {
                if !layout::valid_stream_name(stream) {
                    return bad_request("invalid stream name");
                }
                (
                    stream.clone(),
                    auth::sim_of_stream(stream),
                    vec![
                        format!("/live/{stream}/{}", layout::PLAYLIST_FILE),
                        format!("/live/{stream}/{}", streamcore::ll::LL_PLAYLIST),
                    ],
                )
            }
            (Some(stream), None, None, Some(from), Some(to)) => {
                if !layout::valid_stream_name(stream) {
                    return bad_request("invalid stream name");
                }
                (
                    super::vod::clip_scope(stream, from, to),
                    auth::sim_of_stream(stream),
                    vec![format!(
                        "/api/streams/{stream}/clip.mp4?from={from}&to={to}"
                    )],
                )
            }
            (None, Some(id), None, None, None) => {
                if !layout::valid_session_id(id) {
                    return bad_request("invalid session id");
                }
                let (cat, i) = (st.catalog.clone(), id.clone());
                let sim = match blocking(move || cat.session(&i)).await {
                    Ok(Some(s)) => s.sim,
                    Ok(None) => return super::not_found(format!("session {id}")),
                    Err(e) => return catalog_failed(e),
                };
                (
                    format!("vod/session/{id}"),
                    sim,
                    vec![
                        format!("/vod/session/{id}/index.m3u8"),
                        format!("/vod/session/{id}/video.mp4"),
                    ],
                )
            }
            (None, None, Some(id), None, None) => {
                let cat = st.catalog.clone();
                let sim = match blocking(move || cat.incident(id)).await {
                    Ok(Some(i)) => Some(i.sim),
                    Ok(None) => return super::not_found(format!("incident {id}")),
                    Err(e) => return catalog_failed(e),
                };
                (
                    format!("vod/incident/{id}"),
                    sim,
                    vec![format!("/vod/incident/{id}/index.m3u8")],
                )
            }
            _ => {
                return bad_request(
                    "ask for exactly one of: stream, stream+from+to, session, incident",
                )
            }
        };
    match st.auth.may_see(&p, sim.as_deref()).await {
        Ok(true) => {}
        Ok(false) => return auth::forbidden(format!("{} may not see {scope}", p.actor())),
        Err(resp) => return resp,
    }
    let expires = now_unix() + ttl.as_secs();
    let token = st.auth.signer.sign(&scope, expires);
    st.auth
        .audit(
            &p.actor(),
            "token.mint",
            &scope,
            Some(format!("ttl {} s", ttl.as_secs())),
        )
        .await;
    let urls: Vec<String> = urls
        .into_iter()
        .map(|u| {
            let sep = if u.contains('?') { '&' } else { '?' };
            format!("{u}{sep}token={token}")
        })
        .collect();
    http::json(
        StatusCode::OK,
        &json!({"token": token, "scope": scope, "expires": expires, "urls": urls}),
    )
}

/// The logged-in account (API keys are for accounts, not for anonymous access).
async fn account(st: &AppState, req: &Req) -> Result<(Principal, String), Response> {
    let p = st.auth.principal(req).await?;
    match p.user_name().map(str::to_string) {
        Some(name) => Ok((p, name)),
        None => Err(http::error(StatusCode::UNAUTHORIZED, "login required")),
    }
}

async fn list_keys(st: Arc<AppState>, req: Req) -> Response {
    let (_, name) = match account(&st, &req).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let cat = st.catalog.clone();
    match blocking(move || cat.api_keys(Some(&name))).await {
        Ok(k) => http::json(StatusCode::OK, &k),
        Err(e) => catalog_failed(e),
    }
}

#[derive(Deserialize, Default)]
struct NewKey {
    label: Option<String>,
}

async fn add_key(st: Arc<AppState>, req: Req, body: Bytes) -> Response {
    let (p, name) = match account(&st, &req).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let k: NewKey = if body.is_empty() {
        NewKey::default()
    } else {
        match parse(&body) {
            Ok(k) => k,
            Err(resp) => return resp,
        }
    };
    let (id, secret) = (auth::random_hex(6), auth::random_hex(32));
    let (cat, i, sha, label) = (
        st.catalog.clone(),
        id.clone(),
        auth::sha256_hex(&secret),
        k.label.clone(),
    );
    let user = name.clone();
    if let Err(e) = blocking(move || cat.add_api_key(&i, &user, &sha, label.as_deref())).await {
        return catalog_failed(e);
    }
    st.auth
        .audit(&p.actor(), "key.add", &name, Some(id.clone()))
        .await;
    http::json(
        StatusCode::CREATED,
        &json!({"id": id, "key": format!("fk_{id}_{secret}"), "user": name, "label": k.label}),
    )
}

async fn delete_key(id: String, st: Arc<AppState>, req: Req) -> Response {
    let (p, name) = match account(&st, &req).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let (cat, i) = (st.catalog.clone(), id.clone());
    let owned = match blocking(move || cat.api_key(&i)).await {
        Ok(k) => k.is_some_and(|k| k.user_name == name || p.role() == Role::Admin),
        Err(e) => return catalog_failed(e),
    };
    if !owned {
        return super::not_found(format!("key {id}"));
    }
    let (cat, i) = (st.catalog.clone(), id.clone());
    if let Err(e) = blocking(move || cat.delete_api_key(&i)).await {
        return catalog_failed(e);
    }
    st.auth.forget();
    st.auth.audit(&p.actor(), "key.delete", &id, None).await;
    http::json(StatusCode::OK, &json!({"deleted": id}))
}

async fn list_users(st: Arc<AppState>, req: Req) -> Response {
    if let Err(resp) = st.auth.require(&req, Role::Admin).await {
        return resp;
    }
    let cat = st.catalog.clone();
    let listed = blocking(move || -> Result<Vec<serde_json::Value>, catalog::Error> {
        let mut out = Vec::new();
        for u in cat.users()? {
            let grants = cat.grants_of(&u.name)?;
            let mut v = serde_json::to_value(&u).unwrap_or_default();
            v["grants"] = json!(grants);
            out.push(v);
        }
        Ok(out)
    })
    .await;
    match listed {
        Ok(v) => http::json(StatusCode::OK, &v),
        Err(e) => catalog_failed(e),
    }
}

#[derive(Deserialize)]
struct NewUser {
    name: String,
    role: String,
    password: String,
    #[serde(default)]
    grants: Vec<String>,
}

async fn add_user(st: Arc<AppState>, req: Req, body: Bytes) -> Response {
    let p = match st.auth.require(&req, Role::Admin).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let u: NewUser = match parse(&body) {
        Ok(u) => u,
        Err(resp) => return resp,
    };
    let role: Role = match u.role.parse() {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    if u.password.len() < 8 {
        return bad_request("password: at least 8 characters");
    }
    let (cat, name, grants) = (st.catalog.clone(), u.name.clone(), u.grants.clone());
    let made = blocking(move || -> Result<(), catalog::Error> {
        cat.add_user(&name, role, &auth::hash_password(&u.password))?;
        for g in &grants {
            cat.grant(&name, g)?;
        }
        Ok(())
    })
    .await;
    match made {
        Ok(()) => {
            st.auth
                .audit(
                    &p.actor(),
                    "user.add",
                    &u.name,
                    Some(format!("role {role}")),
                )
                .await;
            http::json(
                StatusCode::CREATED,
                &json!({"name": u.name, "role": role, "grants": u.grants}),
            )
        }
        Err(catalog::Error::InvalidRecord(why)) => bad_request(why),
        Err(e) => catalog_failed(e),
    }
}

async fn delete_user(name: String, st: Arc<AppState>, req: Req) -> Response {
    let p = match st.auth.require(&req, Role::Admin).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let (cat, n) = (st.catalog.clone(), name.clone());
    match blocking(move || cat.delete_user(&n)).await {
        Ok(true) => {
            st.auth.forget();
            st.auth.audit(&p.actor(), "user.delete", &name, None).await;
            http::json(StatusCode::OK, &json!({"deleted": name}))
        }
        Ok(false) => super::not_found(format!("user {name}")),
        Err(e) => catalog_failed(e),
    }
}

async fn change_grant(
    name: String,
    target: String,
    method: warp::http::Method,
    st: Arc<AppState>,
    req: Req,
) -> Response {
    let p = match st.auth.require(&req, Role::Admin).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let target = percent_encoding::percent_decode_str(&target)
        .decode_utf8_lossy()
        .into_owned();
    let adding = method == warp::http::Method::POST;
    let (cat, n, t) = (st.catalog.clone(), name.clone(), target.clone());
    let done = blocking(move || -> Result<bool, catalog::Error> {
        if cat.user(&n)?.is_none() {
            return Ok(false);
        }
        if adding {
            cat.grant(&n, &t)?;
        } else {
            cat.revoke(&n, &t)?;
        }
        Ok(true)
    })
    .await;
    match done {
        Ok(true) => {
            st.auth.forget();
            let action = if adding { "grant.add" } else { "grant.delete" };
            st.auth
                .audit(&p.actor(), action, &name, Some(target.clone()))
                .await;
            http::json(
                StatusCode::OK,
                &json!({"user": name, "target": target, "granted": adding}),
            )
        }
        Ok(false) => super::not_found(format!("user {name}")),
        Err(catalog::Error::InvalidRecord(why)) => bad_request(why),
        Err(e) => catalog_failed(e),
    }
}

async fn audit_log(st: Arc<AppState>, req: Req) -> Response {
    if let Err(resp) = st.auth.require(&req, Role::Admin).await {
        return resp;
    }
    let limit = req
        .query
        .get("limit")
        .and_then(|l| l.parse::<i64>().ok())
        .unwrap_or(100)
        .clamp(1, MAX_AUDIT);
    let before = req.query.get("before").and_then(|b| b.parse::<i64>().ok());
    let cat = st.catalog.clone();
    match blocking(move || cat.audit_log(limit, before)).await {
        Ok(v) => http::json(StatusCode::OK, &v),
        Err(e) => catalog_failed(e),
    }
}
