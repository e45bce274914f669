//! `hlsd user ...` and `hlsd device ...`: account and device administration from the command
//! line, on the catalog the daemon would use (same `--data-dir`, `--database-url`, `--config`).
//! The first admin account can only be made here (the HTTP API needs an admin to make one).

use std::io::BufRead as _;

use clap::Subcommand;
use streamcore::catalog::{Catalog, NewAuditEntry, Role};

use crate::auth;

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Operator accounts: add, list, delete, passwd, grant, revoke, key.
    #[command(subcommand)]
    User(UserCommand),
    /// Devices: groups (granted as group:<name>) and the SIM allow-list ingestd enforces.
    #[command(subcommand)]
    Device(DeviceCommand),
}

#[derive(Debug, Clone, Subcommand)]
pub enum UserCommand {
    /// Makes an account. Without --password the password is read from the first line of stdin.
    Add {
        name: String,
        /// viewer (watch what is granted), operator (also start/stop video, ask devices for
        /// recordings) or admin (everything, users and devices).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[arg(long)]
        password: Option<String>,
        /// What the account may see: a SIM, group:<name> or * (repeatable). Admins see all.
        #[arg(long = "grant", value_name = "TARGET")]
        grants: Vec<String>,
    },
    /// Lists accounts with their roles and grants.
    List,
    /// Deletes an account with its API keys and grants.
    Delete { name: String },
    /// Sets a new password (from --password or stdin) and/or role.
    Passwd {
        name: String,
        #[arg(long)]
        password: Option<String>,
        #[arg(long, value_parser = parse_role)]
        role: Option<Role>,
    },
    /// Lets an account see a SIM, group:<name> or *.
    Grant { name: String, target: String },
    /// Withdraws a grant.
    Revoke { name: String, target: String },
    /// Makes an API key for an account and prints it (shown once).
    Key {
        name: String,
        #[arg(long)]
        label: Option<String>,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum DeviceCommand {
    /// Puts a device in a group.
    Group { sim: String, group: String },
    /// Takes a device out of a group.
    Ungroup { sim: String, group: String },
    /// Adds a SIM to the allow-list (once the list has a SIM, ingestd refuses every other).
    Allow {
        sim: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Removes a SIM from the allow-list.
    Disallow { sim: String },
    /// Prints the allow-list.
    Allowed,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

fn password_or_stdin(given: Option<String>) -> anyhow::Result<String> {
    let p = match given {
        Some(p) => p,
        None => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    anyhow::ensure!(p.len() >= 8, "the password must have at least 8 characters");
    Ok(p)
}

fn audit(cat: &Catalog, action: &str, target: &str, detail: Option<&str>) {
    let actor = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    );
    let _ = cat.audit(&NewAuditEntry {
        at_ms: streamcore::catalog::now_ms(),
        actor: &actor,
        action,
        target,
        detail,
        client: None,
    });
}

/// Runs one command; what it prints is for people (and `key`'s line for scripts).
pub fn run(cat: &Catalog, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::User(u) => match u {
            UserCommand::Add {
                name,
                role,
                password,
                grants,
            } => {
                let password = password_or_stdin(password)?;
                cat.add_user(&name, role, &auth::hash_password(&password))?;
                for g in &grants {
                    cat.grant(&name, g)?;
                }
                audit(cat, "user.add", &name, Some(role.as_str()));
                println!("user {name} added ({role})");
            }
            UserCommand::List => {
                for u in cat.users()? {
                    let grants = cat.grants_of(&u.name)?;
                    println!(
                        "{}\t{}\t{}\t{}",
                        u.name,
                        u.role,
                        if u.disabled { "disabled" } else { "enabled" },
                        grants.join(",")
                    );
                }
            }
            UserCommand::Delete { name } => {
                anyhow::ensure!(cat.delete_user(&name)?, "no user {name}");
                audit(cat, "user.delete", &name, None);
                println!("user {name} deleted");
            }
            UserCommand::Passwd {
                name,
                password,
                role,
            } => {
                let hash = if password.is_some() || role.is_none() {
                    Some(auth::hash_password(&password_or_stdin(password)?))
                } else {
                    None
                };
                anyhow::ensure!(
                    cat.update_user(&name, role, hash.as_deref(), None)?,
                    "no user {name}"
                );
                audit(cat, "user.update", &name, role.map(Role::as_str));
                println!("user {name} updated");
            }
            UserCommand::Grant { name, target } => {
                anyhow::ensure!(cat.user(&name)?.is_some(), "no user {name}");
                cat.grant(&name, &target)?;
                audit(cat, "grant.add", &name, Some(&target));
                println!("{name} may see {target}");
            }
            UserCommand::Revoke { name, target } => {
                anyhow::ensure!(cat.revoke(&name, &target)?, "{name} had no grant {target}");
                audit(cat, "grant.delete", &name, Some(&target));
                println!("{name} may no longer see {target}");
            }
            UserCommand::Key { name, label } => {
                anyhow::ensure!(cat.user(&name)?.is_some(), "no user {name}");
                let (id, secret) = (auth::random_hex(6), auth::random_hex(32));
                cat.add_api_key(&id, &name, &auth::sha256_hex(&secret), label.as_deref())?;
                audit(cat, "key.add", &name, Some(&id));
                println!("fk_{id}_{secret}");
            }
        },
        Command::Device(d) => match d {
            DeviceCommand::Group { sim, group } => {
                cat.add_to_group(&sim, &group)?;
                audit(cat, "device.group", &sim, Some(&group));
                println!("{sim} is in group {group}");
            }
            DeviceCommand::Ungroup { sim, group } => {
                anyhow::ensure!(
                    cat.remove_from_group(&sim, &group)?,
                    "{sim} was not in {group}"
                );
                audit(cat, "device.ungroup", &sim, Some(&group));
                println!("{sim} left group {group}");
            }
            DeviceCommand::Allow { sim, note } => {
                cat.allow_sim(&sim, note.as_deref())?;
                audit(cat, "device.allow", &sim, note.as_deref());
                println!("{sim} allowed");
            }
            DeviceCommand::Disallow { sim } => {
                anyhow::ensure!(cat.disallow_sim(&sim)?, "{sim} was not on the allow-list");
                audit(cat, "device.disallow", &sim, None);
                println!("{sim} removed from the allow-list");
            }
            DeviceCommand::Allowed => {
                for s in cat.allowed_sims()? {
                    println!("{s}");
                }
            }
        },
    }
    Ok(())
}
