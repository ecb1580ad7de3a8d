//! Who may connect from where, with what, and when: the rules of a role's
//! `connect` section, checked once the server has accepted the login and
//! before the session is handed to the client.
//!
//! - `networks`: the client address must be in one of the role's networks;
//! - `client_cert: required`: the client must have presented a TLS
//!   certificate (verified against `[tls] client_ca`) whose CN is the
//!   login, so a borrowed password alone is not enough;
//! - `hours`: outside the role's days and hours a login (and every
//!   classified statement of a session still open) alerts, or is refused;
//! - `second_address`: the same login from a second client address while
//!   the first is connected, or within `within_minutes` of it, alerts and
//!   optionally refuses the newer connection.
//!
//! Refusals raise an alert; so does everything in `alert` mode.

pub mod addresses;
pub mod hours;

use crate::alerts::{Alert, Alerts};
use crate::policy::{OnExceed, Role};
use crate::session::SessionId;
use addresses::{Addresses, Presence};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A login refused by a connect rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub rule: &'static str,
    pub message: String,
}

/// A login that passed its role's connect rules.
#[derive(Debug)]
pub struct Admitted {
    /// Held for the session's life when the role has a second-address
    /// rule.
    pub presence: Option<Presence>,
}

/// The identity of a login being admitted.
#[derive(Debug, Clone, Copy)]
pub struct Login<'a> {
    pub user: &'a str,
    pub client: SocketAddr,
    pub session: SessionId,
    /// CN of the verified client certificate, if one was presented.
    pub certificate: Option<&'a str>,
}

pub struct Gate {
    addresses: Arc<Addresses>,
    alerts: Arc<Alerts>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").finish_non_exhaustive()
    }
}

impl Gate {
    pub fn new(alerts: Arc<Alerts>) -> Gate {
        Gate {
            addresses: Arc::default(),
            alerts,
        }
    }

    fn alert(
        &self,
        rule: &'static str,
        role: &Role,
        login: &Login,
        evidence: serde_json::Value,
        blocked: bool,
    ) {
        self.alerts
            .raise(Alert::of(rule, *login, role, evidence, blocked));
    }

    fn refuse(
        &self,
        rule: &'static str,
        role: &Role,
        login: &Login,
        evidence: serde_json::Value,
        message: String,
    ) -> Result<Admitted, Refused> {
        self.alert(rule, role, login, evidence, true);
        Err(Refused { rule, message })
    }

    /// A rule with an `on_exceed` was broken: alert, and with `block`
    /// refuse with `message`.
    fn exceeded(
        &self,
        rule: &'static str,
        on_exceed: OnExceed,
        role: &Role,
        login: &Login,
        evidence: serde_json::Value,
        message: impl FnOnce() -> String,
    ) -> Result<(), Refused> {
        let block = on_exceed == OnExceed::Block;
        self.alert(rule, role, login, evidence, block);
        if block {
            Err(Refused {
                rule,
                message: message(),
            })
        } else {
            Ok(())
        }
    }

    /// Check a login the server accepted against its role's rules.
    pub fn admit(&self, role: &Role, login: Login) -> Result<Admitted, Refused> {
        let rules = &role.connect;
        let ip = login.client.ip().to_canonical();
        if !rules.networks.is_empty() && !rules.networks.iter().any(|n| n.contains(&ip)) {
            let nets: Vec<String> = rules.networks.iter().map(ToString::to_string).collect();
            return self.refuse(
                "network",
                role,
                &login,
                serde_json::json!({ "address": ip.to_string(), "networks": nets }),
                format!(
                    "pgwarden: role {} may not connect from {ip} (allowed networks: {})",
                    role.name,
                    nets.join(", ")
                ),
            );
        }
        if rules.client_cert && login.certificate != Some(login.user) {
            let why = match login.certificate {
                None => "none was presented".to_string(),
                Some(cn) => format!("the certificate presented is issued to {cn}"),
            };
            return self.refuse(
                "client_cert",
                role,
                &login,
                serde_json::json!({ "certificate": login.certificate }),
                format!(
                    "pgwarden: role {} requires a TLS client certificate issued to {} ({why})",
                    role.name, login.user
                ),
            );
        }
        if let Some(h) = &rules.hours {
            if !hours::allows(h, jiff::Timestamp::now()) {
                let allowed = hours::describe(h);
                self.exceeded(
                    "off_hours",
                    h.on_exceed,
                    role,
                    &login,
                    serde_json::json!({ "allowed": allowed, "at": "connect" }),
                    || format!("pgwarden: role {} may connect only {allowed}", role.name),
                )?;
            }
        }
        let Some(rule) = rules.second_address else {
            return Ok(Admitted { presence: None });
        };
        let within = Duration::from_secs(u64::from(rule.within_minutes) * 60);
        if let Some(other) = self.addresses.other(login.user, ip, within) {
            let evidence = serde_json::json!({
                "address": ip.to_string(),
                "other_address": other.ip.to_string(),
                "other_connected": other.open,
                "other_left_secs_ago": other.ago_secs,
                "within_minutes": rule.within_minutes,
            });
            let when = if other.open {
                "is connected".to_string()
            } else {
                format!("was connected {} s ago", other.ago_secs)
            };
            self.exceeded(
                "second_address",
                rule.on_exceed,
                role,
                &login,
                evidence,
                || {
                    format!(
                        "pgwarden: user {} {when} from {}; a second address ({ip}) is refused for role {}",
                        login.user, other.ip, role.name
                    )
                },
            )?;
        }
        Ok(Admitted {
            presence: Some(self.addresses.arrive(login.user, ip)),
        })
    }

    /// Whether a classified statement may run now under the role's hours;
    /// outside them, an alert, and with `block` the refusal.
    pub fn in_hours(&self, role: &Role, login: Login) -> Result<(), String> {
        let Some(h) = &role.connect.hours else {
            return Ok(());
        };
        if hours::allows(h, jiff::Timestamp::now()) {
            return Ok(());
        }
        let allowed = hours::describe(h);
        self.exceeded(
            "off_hours",
            h.on_exceed,
            role,
            &login,
            serde_json::json!({ "allowed": allowed, "at": "statement" }),
            || {
                format!(
                    "permission denied by pgwarden: role {} may read classified data only {allowed}",
                    role.name
                )
            },
        )
        .map_err(|r| r.message)
    }
}
