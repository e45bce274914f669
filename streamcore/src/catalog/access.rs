//! The access side of the catalog: settings shared by every process (the
//! persistent JT/T 808 auth secret, hlsd's session key), the SIM allow-list,
//! operator accounts, their API keys and grants, device groups, the audit log
//! and the viewers table that tells ingestd when nobody watches a stream.
//!
//! Only storage lives here. Hashing passwords, checking roles and deciding
//! what a grant opens belong to the daemons; rows hold hashes, never
//! passwords or key secrets.

use std::collections::HashMap;

use diesel::prelude::*;

use super::conn::dispatch;
use super::schema::{
    allowed_sims, api_keys, audit_log, device_groups, devices, grants, settings, users, viewers,
};
use super::{now_ms, Catalog, Error};

/// Settings that hold secrets (the device auth secret, hlsd's signing key): never shown.
pub const SECRET_SETTINGS: [&str; 2] = ["jt808_auth_secret", "hlsd_signing_key"];

/// What an account may do. Ordered: each role can do everything the ones
/// before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Watches live video and recordings of what it is granted.
    Viewer,
    /// Also starts and stops video and asks devices for their recordings.
    Operator,
    /// Everything, on every device, and manages users, keys and devices.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: expected viewer, operator or admin"))
    }
}

/// An operator account.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// Argon2id PHC string; never serialised.
    #[serde(skip)]
    pub password_hash: String,
    pub created_ms: i64,
    pub disabled: bool,
}

/// An API key's row (the secret itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = api_keys)]
pub struct ApiKey {
    pub id: String,
    pub user_name: String,
    #[serde(skip)]
    pub secret_sha256: String,
    pub label: Option<String>,
    pub created_ms: i64,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = audit_log)]
pub struct AuditEntry {
    pub id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: Option<String>,
    pub client: Option<String>,
}

/// A new audit log entry.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = audit_log)]
pub struct NewAuditEntry<'a> {
    pub at_ms: i64,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub detail: Option<&'a str>,
    pub client: Option<&'a str>,
}

/// Whether `name` is a valid login name: `[A-Za-z0-9_.@-]{1,64}`.
pub fn valid_user_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-'))
}

#[derive(Queryable)]
struct UserRow {
    name: String,
    role: String,
    password_hash: String,
    created_ms: i64,
    disabled: bool,
}

impl TryFrom<UserRow> for User {
    type Error = Error;
    fn try_from(r: UserRow) -> Result<Self, Error> {
        Ok(User {
            role: r.role.parse().map_err(Error::InvalidRecord)?,
            name: r.name,
            password_hash: r.password_hash,
            created_ms: r.created_ms,
            disabled: r.disabled,
        })
    }
}

impl Catalog {
    // ---------------------------------------------------------- settings

    /// A setting's value, `None` when it was never written.
    pub fn setting(&self, name: &str) -> Result<Option<String>, Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| settings::table
                .filter(settings::name.eq(name))
                .select(settings::value)
                .first::<String>(c)
                .optional())?)
        })
    }

    /// Every setting as (name, value, updated_ms), by name. Secrets are in there too: callers
    /// that show settings leave out [`SECRET_SETTINGS`].
    pub fn settings(&self) -> Result<Vec<(String, String, i64)>, Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| settings::table
                .select((settings::name, settings::value, settings::updated_ms))
                .order(settings::name.asc())
                .load::<(String, String, i64)>(c))?)
        })
    }

    /// Writes a setting (replacing any value).
    pub fn set_setting(&self, name: &str, value: &str) -> Result<(), Error> {
        let now = now_ms();
        self.with_conn(|c| {
            dispatch!(c, |c| {
                diesel::insert_into(settings::table)
                    .values((
                        settings::name.eq(name),
                        settings::value.eq(value),
                        settings::updated_ms.eq(now),
                    ))
                    .on_conflict_do_nothing()
                    .execute(c)?;
                diesel::update(settings::table.filter(settings::name.eq(name)))
                    .set((settings::value.eq(value), settings::updated_ms.eq(now)))
                    .execute(c)
            })?;
            Ok(())
        })
    }

    /// The setting's value; when it has none, stores `make()` first. Several
    /// processes starting at once all get the value the first one stored.
    pub fn setting_or_init(
        &self,
        name: &str,
        make: impl FnOnce() -> String,
    ) -> Result<String, Error> {
        if let Some(v) = self.setting(name)? {
            return Ok(v);
        }
        let value = make();
        let now = now_ms();
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| diesel::insert_into(settings::table)
                .values((
                    settings::name.eq(name),
                    settings::value.eq(&value),
                    settings::updated_ms.eq(now),
                ))
                .on_conflict_do_nothing()
                .execute(c))?)
        })?;
        self.setting(name)?
            .ok_or_else(|| Error::InvalidRecord(format!("setting {name} vanished after insert")))
    }

    // ------------------------------------------------------- allow-list

    /// SIMs allowed to register (empty: the catalog restricts nothing).
    pub fn allowed_sims(&self) -> Result<Vec<String>, Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| allowed_sims::table
                .select(allowed_sims::sim)
                .order(allowed_sims::sim.asc())
                .load::<String>(c))?)
        })
    }

    /// Adds a SIM to the allow-list (no-op when present).
    pub fn allow_sim(&self, sim: &str, note: Option<&str>) -> Result<(), Error> {
        if sim.is_empty() || sim.len() > 20 || !sim.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::InvalidRecord(format!(
                "SIM {sim:?}: expected 1-20 digits"
            )));
        }
        let now = now_ms();
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| diesel::insert_into(allowed_sims::table)
                .values((
                    allowed_sims::sim.eq(sim),
                    allowed_sims::note.eq(note),
                    allowed_sims::added_ms.eq(now),
                ))
                .on_conflict_do_nothing()
                .execute(c))?)
        })
        .map(|_| ())
    }

    /// Removes a SIM from the allow-list; returns whether it was there.
    pub fn disallow_sim(&self, sim: &str) -> Result<bool, Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| diesel::delete(
                allowed_sims::table.filter(allowed_sims::sim.eq(sim))
            )
            .execute(c))?)
        })
        .map(|n| n > 0)
    }

    // ----------------------------------------------------------- users

    /// Creates an account. Fails with [`Error::InvalidRecord`] on a bad name
    /// or when the name is taken.
    pub fn add_user(&self, name: &str, role: Role, password_hash: &str) -> Result<(), Error> {
        if !valid_user_name(name) {
            return Err(Error::InvalidRecord(format!(
                "user name {name:?}: expected 1-64 of A-Z a-z 0-9 _ . @ -"
            )));
        }
        let now = now_ms();
        let n = self.with_conn(|c| {
            Ok(dispatch!(c, |c| diesel::insert_into(users::table)
                .values((
                    users::name.eq(name),
                    users::role.eq(role.as_str()),
                    users::password_hash.eq(password_hash),
                    users::created_ms.eq(now),
                    users::disabled.eq(false),
                ))
                .on_conflict_do_nothing()
                .execute(c))?)
        })?;
        if n == 0 {
            return Err(Error::InvalidRecord(format!("user {name:?} exists")));
        }
        Ok(())
    }

    /// One account, `None` when there is no such name.
    pub fn user(&self, name: &str) -> Result<Option<User>, Error> {
        let row = self.with_conn(|c| {
            Ok(dispatch!(c, |c| users::table
                .filter(users::name.eq(name))
                .select((
                    users::name,
                    users::role,
                    users::password_hash,
                    users::created_ms,
                    users::disabled,
                ))
                .first::<UserRow>(c)
                .optional())?)
        })?;
        row.map(User::try_from).transpose()
    }

    /// Every account, by name.
    pub fn users(&self) -> Result<Vec<User>, Error> {
        let rows = self.with_conn(|c| {
            Ok(dispatch!(c, |c| users::table
                .select((
                    users::name,
                    users::role,
                    users::password_hash,
                    users::created_ms,
                    users::disabled,
                ))
                .order(users::name.asc())
                .load::<UserRow>(c))?)
        })?;
        rows.into_iter().map(User::try_from).collect()
    }

    /// Changes an account's role, password hash and/or disabled flag;
    /// returns whether the account exists.
    pub fn update_user(
        &self,
        name: &str,
        role: Option<Role>,
        password_hash: Option<&str>,
        disabled: Option<bool>,
    ) -> Result<bool, Error> {
        if self.user(name)?.is_none() {
            return Ok(false);
        }
        self.with_conn(|c| {
            dispatch!(c, |c| {
                let row = users::table.filter(users::name.eq(name));
                if let Some(r) = role {
                    diesel::update(row)
                        .set(users::role.eq(r.as_str()))
                        .execute(c)?;
                }
                if let Some(h) = password_hash {
                    diesel::update(row)
                        .set(users::password_hash.eq(h))
                        .execute(c)?;
                }
                if let Some(d) = disabled {
                    diesel::update(row).set(users::disabled.eq(d)).execute(c)?;
                }
                QueryResult::Ok(())
            })?;
            Ok(())
        })?;
        Ok(true)
    }

    /// Deletes an account with its keys and grants (its audit entries stay);
    /// returns whether it existed.
    pub fn delete_user(&self, name: &str) -> Result<bool, Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| {
                diesel::delete(grants::table.filter(grants::user_name.eq(name))).execute(c)?;
                diesel::delete(api_keys::table.filter(api_keys::user_name.eq(name))).execute(c)?;
                diesel::delete(users::table.filter(users::name.eq(name))).execute(c)
            })?)
        })
        .map(|n| n > 0)
    }

    // -------------------------------------------------------- API keys

    /// Stores a key's public id and the SHA-256 (hex) of its secret.
    pub fn add_api_key(
        &self,
        id: &str,
        user_name: &str,
        secret_sha256: &str,
        label: Option<&str>,
    ) -> Result<(), Error> {
        let now = now_ms();
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| diesel::insert_into(api_keys::table)
                .values((
                    api_keys::id.eq(id),
                    api_keys::user_name.eq(user_name),
                    api_keys::secret_sha256.eq(secret_sha256),
                    api_keys::label.eq(label),
                    api_keys::created_ms.eq(now),
                ))
                .execute(c))?)
        })
        .map(|_| ())
    }

    /// The key with this public id.
    pub fn api_key(&self, id: &str) -> Result<Option<ApiKey>, Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| api_keys::table
                .filter(api_keys::id.eq(id))
                .select(ApiKey::as_select())
                .first(c)
                .optional())?)
        })
    }

    /// Keys of one account (all accounts when `None`), by id.
    pub fn api_keys(&self, user_name: Option<&str>) -> Result<Vec<ApiKey>, Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| {
                let mut q = api_keys::table.select(ApiKey::as_select()).into_boxed();
                if let Some(u) = user_name {
                    q = q.filter(api_keys::user_name.eq(u));
                }
                q.order(api_keys::id.asc()).load(c)
            })?)
        })
    }

    /// Revokes a key; returns whether it existed.
    pub fn delete_api_key(&self, id: &str) -> Result<bool, Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| diesel::delete(
                api_keys::table.filter(api_keys::id.eq(id))
            )
            .execute(c))?)
        })
        .map(|n| n > 0)
    }

    // ---------------------------------------------------------- grants

    /// Lets `user_name` see `target`: a SIM, `group:<name>` or `*`.
    pub fn grant(&self, user_name: &str, target: &str) -> Result<(), Error> {
        if target.is_empty() || target.len() > 80 {
            return Err(Error::InvalidRecord(format!("grant target {target:?}")));
        }
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| diesel::insert_into(grants::table)
                .values((grants::user_name.eq(user_name), grants::target.eq(target)))
                .on_conflict_do_nothing()
                .execute(c))?)
        })
        .map(|_| ())
    }

    /// Withdraws a grant; returns whether it existed.
    pub fn revoke(&self, user_name: &str, target: &str) -> Result<bool, Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| diesel::delete(
                grants::table
                    .filter(grants::user_name.eq(user_name))
                    .filter(grants::target.eq(target))
            )
            .execute(c))?)
        })
        .map(|n| n > 0)
    }

    /// What an account was granted, ascending.
    pub fn grants_of(&self, user_name: &str) -> Result<Vec<String>, Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| grants::table
                .filter(grants::user_name.eq(user_name))
                .select(grants::target)
                .order(grants::target.asc())
                .load::<String>(c))?)
        })
    }

    // --------------------------------------------------- device groups

    /// Puts a device in a group (no-op when it is in it).
    pub fn add_to_group(&self, sim: &str, group: &str) -> Result<(), Error> {
        if group.is_empty() || group.len() > 64 || sim.is_empty() || sim.len() > 20 {
            return Err(Error::InvalidRecord(format!(
                "group {group:?} / SIM {sim:?}"
            )));
        }
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| diesel::insert_into(device_groups::table)
                .values((
                    device_groups::sim.eq(sim),
                    device_groups::group_name.eq(group)
                ))
                .on_conflict_do_nothing()
                .execute(c))?)
        })
        .map(|_| ())
    }

    /// Takes a device out of a group; returns whether it was in it.
    pub fn remove_from_group(&self, sim: &str, group: &str) -> Result<bool, Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| diesel::delete(
                device_groups::table
                    .filter(device_groups::sim.eq(sim))
                    .filter(device_groups::group_name.eq(group))
            )
            .execute(c))?)
        })
        .map(|n| n > 0)
    }

    /// Every device's groups, by SIM.
    pub fn device_groups(&self) -> Result<HashMap<String, Vec<String>>, Error> {
        let rows = self.with_conn(|c| {
            Ok(dispatch!(c, |c| device_groups::table
                .select((device_groups::sim, device_groups::group_name))
                .order((device_groups::sim.asc(), device_groups::group_name.asc()))
                .load::<(String, String)>(c))?)
        })?;
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for (sim, g) in rows {
            out.entry(sim).or_default().push(g);
        }
        Ok(out)
    }

    /// Whether the device is known to the catalog.
    pub fn device_exists(&self, sim: &str) -> Result<bool, Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| devices::table
                .filter(devices::sim.eq(sim))
                .select(devices::sim)
                .first::<String>(c)
                .optional())?)
        })
        .map(|r| r.is_some())
    }

    // ------------------------------------------------------- audit log

    /// Appends an entry to the audit log.
    pub fn audit(&self, entry: &NewAuditEntry<'_>) -> Result<(), Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| diesel::insert_into(audit_log::table)
                .values(entry)
                .execute(c))?)
        })
        .map(|_| ())
    }

    /// The newest `limit` entries at or before `before_id` (all when
    /// `None`), newest first.
    pub fn audit_log(&self, limit: i64, before_id: Option<i64>) -> Result<Vec<AuditEntry>, Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| {
                let mut q = audit_log::table
                    .select(AuditEntry::as_select())
                    .into_boxed();
                if let Some(b) = before_id {
                    q = q.filter(audit_log::id.lt(b));
                }
                q.order(audit_log::id.desc()).limit(limit).load(c)
            })?)
        })
    }

    // --------------------------------------------------------- viewers

    /// Records that `instance` served `stream`'s playlist at `at_ms`
    /// (never moves backwards).
    pub fn touch_viewer(&self, stream: &str, instance: &str, at_ms: i64) -> Result<(), Error> {
        self.with_conn(|c| {
            dispatch!(c, |c| {
                diesel::insert_into(viewers::table)
                    .values((
                        viewers::stream.eq(stream),
                        viewers::instance.eq(instance),
                        viewers::last_ms.eq(at_ms),
                    ))
                    .on_conflict_do_nothing()
                    .execute(c)?;
                diesel::update(
                    viewers::table
                        .filter(viewers::stream.eq(stream))
                        .filter(viewers::instance.eq(instance))
                        .filter(viewers::last_ms.lt(at_ms)),
                )
                .set(viewers::last_ms.eq(at_ms))
                .execute(c)
            })?;
            Ok(())
        })
    }

    /// When each of `streams` was last served by any instance; streams no
    /// one ever watched are absent.
    pub fn last_viewed(&self, streams: &[String]) -> Result<HashMap<String, i64>, Error> {
        if streams.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = self.with_conn(|c| {
            Ok(dispatch!(c, |c| viewers::table
                .filter(viewers::stream.eq_any(streams))
                .select((viewers::stream, viewers::last_ms))
                .load::<(String, i64)>(c))?)
        })?;
        let mut out: HashMap<String, i64> = HashMap::new();
        for (s, t) in rows {
            let e = out.entry(s).or_insert(t);
            *e = (*e).max(t);
        }
        Ok(out)
    }
}
