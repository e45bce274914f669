//! Who is asking and what they may see: operator accounts (Argon2id password hashes in the
//! catalog), the session cookie a login sets, API keys for scripts, scoped player tokens, and
//! anonymous access when the operator allows it (`--allow-anonymous`).
//!
//! Credentials, in the order they are looked at:
//! - a player token (`/t/<token>/` in the path or `?token=`) opens exactly its scope: one
//!   stream's live playlist and segments (scope = the stream name), one VOD playlist
//!   (`vod/session/<id>`, `vod/incident/<id>`), or one segment (`<stream>/<n>.ts`, the scope of
//!   the URIs in a token-opened VOD playlist, so a recording's token never opens the rest of
//!   its stream);
//! - the session cookie `fleet_session=<user>:<token of scope session/<user>>` (HttpOnly,
//!   SameSite=Strict, Secure under TLS), stateless and signed with the same key, re-checked
//!   against the account (disabled, role, grants) at most [`ACCOUNT_TTL`] old;
//! - an API key, `Authorization: Bearer fk_<id>_<secret>` or `X-Api-Key: fk_...`; the catalog
//!   keeps the SHA-256 of the secret;
//! - nothing: refused with 401, unless anonymous access is on, in which case the request acts
//!   as an operator on every device (never as an admin).
//!
//! Grants name SIMs, `group:<name>` (device groups from the catalog) or `*`; admins see
//! everything. Raw streams (no SIM) need `*`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use streamcore::catalog::{self, Catalog, NewAuditEntry, Role};
use streamcore::layout::StreamName;
use warp::http::{header, StatusCode};
use warp::reply::Response;

use crate::http::{self, Req};
use crate::token::{now_unix, TokenError, TokenSigner};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "fleet_session";
/// How long an account's row and grants are trusted before they are read again (a disabled
/// account or a withdrawn grant takes effect within this long).
pub const ACCOUNT_TTL: Duration = Duration::from_secs(5);
/// How long the device-groups map is trusted.
const GROUPS_TTL: Duration = Duration::from_secs(10);
/// The settings-table key of hlsd's signing key (shared by every hlsd on the catalog).
pub const SIGNING_KEY_SETTING: &str = "hlsd_signing_key";

/// What a principal may see.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    all: bool,
    sims: HashSet<String>,
    groups: HashSet<String>,
}

impl Grants {
    fn from_targets(targets: &[String]) -> Self {
        let mut g = Grants::default();
        for t in targets {
            if t == "*" {
                g.all = true;
            } else if let Some(group) = t.strip_prefix("group:") {
                g.groups.insert(group.to_string());
            } else {
                g.sims.insert(t.clone());
            }
        }
        g
    }
}

/// An account as the server trusts it for [`ACCOUNT_TTL`].
#[derive(Debug)]
pub struct Account {
    pub name: String,
    pub role: Role,
    grants: Grants,
}

/// Who a request acts as.
#[derive(Debug, Clone)]
pub enum Principal {
    /// No credentials, and anonymous access is on.
    Anonymous,
    /// A logged-in user (session cookie).
    User(Arc<Account>),
    /// A script with an API key of an account.
    Key { id: String, account: Arc<Account> },
}

impl Principal {
    pub fn role(&self) -> Role {
        match self {
            Principal::Anonymous => Role::Operator,
            Principal::User(a) | Principal::Key { account: a, .. } => a.role,
        }
    }

    /// The name the audit log records.
    pub fn actor(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".into(),
            Principal::User(a) => a.name.clone(),
            Principal::Key { id, account } => format!("{} (key {id})", account.name),
        }
    }

    pub fn user_name(&self) -> Option<&str> {
        match self {
            Principal::Anonymous => None,
            Principal::User(a) | Principal::Key { account: a, .. } => Some(&a.name),
        }
    }

    fn sees_everything(&self) -> bool {
        match self {
            Principal::Anonymous => true,
            Principal::User(a) | Principal::Key { account: a, .. } => {
                a.role == Role::Admin || a.grants.all
            }
        }
    }
}

/// Authentication state shared by the handlers.
pub struct Auth {
    pub signer: TokenSigner,
    pub allow_anonymous: bool,
    /// Cookies get `Secure` (the server runs TLS).
    pub secure_cookies: bool,
    pub session_ttl: Duration,
    /// Longest lifetime of a minted player token.
    pub max_token_ttl: Duration,
    catalog: Catalog,
    accounts: Mutex<HashMap<String, Cached<Option<Arc<Account>>>>>,
    keys: Mutex<HashMap<String, Cached<Option<KeyRow>>>>,
    groups: Mutex<Option<Cached<Arc<DeviceGroups>>>>,
}

/// An API key's SHA-256 of the secret and account name, by key id.
type KeyRow = (String, String);
/// A value and when it was read from the catalog.
type Cached<T> = (Instant, T);
/// Every device's groups, by SIM.
type DeviceGroups = HashMap<String, Vec<String>>;

/// Why a request was refused, before it becomes a response.
fn unauthorized(why: impl std::fmt::Display) -> Response {
    let mut r = http::error(StatusCode::UNAUTHORIZED, why);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"hlsd\""),
    );
    r
}

pub fn forbidden(why: impl std::fmt::Display) -> Response {
    http::error(StatusCode::FORBIDDEN, why)
}

fn catalog_down(e: catalog::Error) -> Response {
    tracing::warn!(error = %e, "catalog query failed while authenticating");
    http::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "cannot check credentials now",
    )
}

/// The SHA-256 of `s`, in hex.
pub fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `n` random bytes from the OS, in hex.
pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("the OS random source works");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An Argon2id PHC string for `password` (default parameters: 19 MiB, 2 passes).
pub fn hash_password(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the OS random source works");
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("Argon2 with default parameters hashes any password")
        .to_string()
}

/// Whether `password` matches the PHC string `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A cookie value's `<user>:<token>` parts.
fn parse_session_cookie(req: &Req) -> Option<(String, String)> {
    for v in req.headers.get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for pair in v.split(';') {
            if let Some(value) = pair
                .trim()
                .strip_prefix(SESSION_COOKIE)
                .and_then(|r| r.strip_prefix('='))
            {
                let (user, token) = value.trim_matches('"').rsplit_once(':')?;
                return Some((user.to_string(), token.to_string()));
            }
        }
    }
    None
}

/// The API key a request carries, if any.
fn api_key(req: &Req) -> Option<&str> {
    let bearer = req
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    bearer.or_else(|| {
        req.headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    })
}

impl Auth {
    pub fn new(
        catalog: Catalog,
        signer: TokenSigner,
        allow_anonymous: bool,
        secure_cookies: bool,
        session_ttl: Duration,
        max_token_ttl: Duration,
    ) -> Self {
        Auth {
            signer,
            allow_anonymous,
            secure_cookies,
            session_ttl,
            max_token_ttl,
            catalog,
            accounts: Mutex::default(),
            keys: Mutex::default(),
            groups: Mutex::default(),
        }
    }

    /// The account `name` (with its grants) unless it is missing or disabled; cached.
    async fn account(&self, name: &str) -> Result<Option<Arc<Account>>, Response> {
        if let Some((at, a)) = self
            .accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            if at.elapsed() < ACCOUNT_TTL {
                return Ok(a.clone());
            }
        }
        let (cat, n) = (self.catalog.clone(), name.to_string());
        let loaded = tokio::task::spawn_blocking(move || -> Result<_, catalog::Error> {
            let Some(u) = cat.user(&n)?.filter(|u| !u.disabled) else {
                return Ok(None);
            };
            let grants = Grants::from_targets(&cat.grants_of(&n)?);
            Ok(Some(Arc::new(Account {
                name: u.name,
                role: u.role,
                grants,
            })))
        })
        .await
        .expect("account lookup panicked")
        .map_err(catalog_down)?;
        let mut cache = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(name.to_string(), (Instant::now(), loaded.clone()));
        Ok(loaded)
    }

    /// Forgets cached accounts and keys (after an admin changed them here).
    pub fn forget(&self) {
        self.accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The account behind an API key `fk_<id>_<secret>`.
    async fn key_account(&self, key: &str) -> Result<Option<(String, Arc<Account>)>, Response> {
        let Some((id, secret)) = key.strip_prefix("fk_").and_then(|k| k.split_once('_')) else {
            return Ok(None);
        };
        let cached = self
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .filter(|(at, _)| at.elapsed() < ACCOUNT_TTL)
            .map(|(_, row)| row.clone());
        let row = match cached {
            Some(row) => row,
            None => {
                let (cat, i) = (self.catalog.clone(), id.to_string());
                let row = tokio::task::spawn_blocking(move || cat.api_key(&i))
                    .await
                    .expect("key lookup panicked")
                    .map_err(catalog_down)?
                    .map(|k| (k.secret_sha256, k.user_name));
                let mut cache = self.keys.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() > 10_000 {
                    cache.clear();
                }
                cache.insert(id.to_string(), (Instant::now(), row.clone()));
                row
            }
        };
        let Some((sha, user)) = row else {
            return Ok(None);
        };
        // Both sides are hex digests of the same length: compare without an early exit.
        let given = sha256_hex(secret);
        let same = given.len() == sha.len()
            && given
                .bytes()
                .zip(sha.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Ok(None);
        }
        Ok(self.account(&user).await?.map(|a| (id.to_string(), a)))
    }

    /// Who the request acts as, from its cookie or API key; `None` when it carries neither
    /// (a bad one is refused with 401 rather than treated as anonymous).
    pub async fn identify(&self, req: &Req) -> Result<Option<Principal>, Response> {
        if let Some(key) = api_key(req) {
            return match self.key_account(key).await? {
                Some((id, account)) => Ok(Some(Principal::Key { id, account })),
                None => Err(unauthorized("API key invalid or revoked")),
            };
        }
        if let Some((user, token)) = parse_session_cookie(req) {
            let scope = format!("session/{user}");
            if self.signer.verify(&scope, &token, now_unix()).is_ok() {
                if let Some(a) = self.account(&user).await? {
                    return Ok(Some(Principal::User(a)));
                }
            }
            // An expired or stale cookie is no worse than none: anonymous access (when on)
            // or the login page.
        }
        Ok(None)
    }

    /// The principal of a request that needs one: 401 without credentials unless anonymous
    /// access is on.
    pub async fn principal(&self, req: &Req) -> Result<Principal, Response> {
        match self.identify(req).await? {
            Some(p) => Ok(p),
            None if self.allow_anonymous => Ok(Principal::Anonymous),
            None => Err(unauthorized("login required")),
        }
    }

    /// The principal, if its role is at least `role` (403 otherwise).
    pub async fn require(&self, req: &Req, role: Role) -> Result<Principal, Response> {
        let p = self.principal(req).await?;
        if p.role() < role {
            return Err(forbidden(format!(
                "{} needs the {role} role (has {})",
                p.actor(),
                p.role()
            )));
        }
        Ok(p)
    }

    async fn groups(&self) -> Result<Arc<DeviceGroups>, Response> {
        if let Some((at, g)) = &*self.groups.lock().unwrap_or_else(|e| e.into_inner()) {
            if at.elapsed() < GROUPS_TTL {
                return Ok(g.clone());
            }
        }
        let cat = self.catalog.clone();
        let g = Arc::new(
            tokio::task::spawn_blocking(move || cat.device_groups())
                .await
                .expect("groups lookup panicked")
                .map_err(catalog_down)?,
        );
        *self.groups.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), g.clone()));
        Ok(g)
    }

    /// Whether `p` may see device `sim` (`None`: a raw stream, which needs `*`).
    pub async fn may_see(&self, p: &Principal, sim: Option<&str>) -> Result<bool, Response> {
        if p.sees_everything() {
            return Ok(true);
        }
        let (Principal::User(a) | Principal::Key { account: a, .. }) = p else {
            return Ok(false);
        };
        let Some(sim) = sim else { return Ok(false) };
        if a.grants.sims.contains(sim) {
            return Ok(true);
        }
        if a.grants.groups.is_empty() {
            return Ok(false);
        }
        let groups = self.groups().await?;
        Ok(groups
            .get(sim)
            .is_some_and(|gs| gs.iter().any(|g| a.grants.groups.contains(g))))
    }

    /// A filter for lists: which of `sims` `p` may see (`None`: all).
    pub async fn visible_sims(
        &self,
        p: &Principal,
        sims: Vec<String>,
    ) -> Result<Option<HashSet<String>>, Response> {
        if p.sees_everything() {
            return Ok(None);
        }
        let mut out = HashSet::new();
        for s in sims {
            if self.may_see(p, Some(&s)).await? {
                out.insert(s);
            }
        }
        Ok(Some(out))
    }

    /// Checks a request for a device's data or commands: the principal, its role, and its
    /// grant on `sim`. 404 rather than 403 for a device it may not see, so nobody learns
    /// which SIMs exist.
    pub async fn require_device(
        &self,
        req: &Req,
        role: Role,
        sim: &str,
    ) -> Result<Principal, Response> {
        let p = self.require(req, role).await?;
        if !self.may_see(&p, Some(sim)).await? {
            return Err(http::error(
                StatusCode::NOT_FOUND,
                format!("device {sim} not found"),
            ));
        }
        Ok(p)
    }

    /// Media access: a token for one of `scopes` (path form first, then `?token=`), else a
    /// principal that may see `sim` (`None`: a raw stream). Returns the accepted token and its
    /// expiry, which playlists pass on to their URIs.
    pub async fn media(
        &self,
        req: &Req,
        path_token: Option<&str>,
        scopes: &[&str],
        sim: Option<&str>,
    ) -> Result<Option<(String, u64)>, Response> {
        if let Some(tok) = path_token.or(req.query.get("token").map(String::as_str)) {
            let now = now_unix();
            let mut last = TokenError::Forged;
            for scope in scopes {
                match self.signer.verify(scope, tok, now) {
                    Ok(expiry) => return Ok(Some((tok.to_string(), expiry))),
                    Err(e) => last = e,
                }
            }
            return Err(forbidden(last));
        }
        let p = self.principal(req).await?;
        if !self.may_see(&p, sim).await? {
            return Err(forbidden(format!("{} may not see this", p.actor())));
        }
        Ok(None)
    }

    /// The `Set-Cookie` value of a new session of `user`.
    pub fn session_cookie(&self, user: &str) -> String {
        let expiry = now_unix() + self.session_ttl.as_secs();
        let token = self.signer.sign(&format!("session/{user}"), expiry);
        format!(
            "{SESSION_COOKIE}={user}:{token}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
            self.session_ttl.as_secs(),
            if self.secure_cookies { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that ends a session in the browser.
    pub fn cleared_cookie(&self) -> String {
        format!(
            "{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
            if self.secure_cookies { "; Secure" } else { "" }
        )
    }

    /// Appends to the audit log off the runtime; a failure is logged, never fatal.
    pub async fn audit(&self, actor: &str, action: &str, target: &str, detail: Option<String>) {
        let (cat, actor, action, target) = (
            self.catalog.clone(),
            actor.to_string(),
            action.to_string(),
            target.to_string(),
        );
        let r = tokio::task::spawn_blocking(move || {
            cat.audit(&NewAuditEntry {
                at_ms: catalog::now_ms(),
                actor: &actor,
                action: &action,
                target: &target,
                detail: detail.as_deref(),
                client: None,
            })
        })
        .await;
        if let Ok(Err(e)) = r {
            tracing::warn!(error = %e, "cannot write the audit log");
        }
    }
}

/// The SIM a stream name belongs to (`None` for raw streams).
pub fn sim_of_stream(stream: &str) -> Option<String> {
    StreamName::parse(stream).and_then(|n| n.sim().map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("correct horse", "not a hash"));
        assert_ne!(h, hash_password("correct horse"), "salted");
    }

    #[test]
    fn grants_parse() {
        let g = Grants::from_targets(&["013800000000".into(), "group:north".into(), "*".into()]);
        assert!(g.all && g.sims.contains("013800000000") && g.groups.contains("north"));
    }
}
