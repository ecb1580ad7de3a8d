//! pgwarden: a PostgreSQL wire-protocol proxy that audits and restricts what
//! employees read from customer databases.
//!
//! # Data path
//!
//! A client connects to the [`listener`], which spawns one [`session`] task
//! per connection. The session negotiates TLS and reads the StartupMessage
//! ([`frontend::startup`]), connects [`upstream`] and relays authentication,
//! then relays messages both ways. Client messages are cut into frames
//! ([`frame`]), decoded once ([`frontend`], via [`codec`]) and inspected
//! before their original bytes are forwarded; server messages are framed,
//! matched to the request they answer ([`backend::tracker`]) and streamed
//! back. Audit, alerts and [`metrics`] are side paths fed by the session;
//! they never reach back into the data path. See `docs/data-path.md`.
//!
//! # Layout
//!
//! - [`cli`], [`config`]: command line and TOML configuration.
//! - [`listener`]: accept loop, connection cap, graceful shutdown;
//!   [`workers`]: the threads sessions run on, one event loop each.
//! - [`session`]: one client connection (startup, auth, relay).
//! - [`frame`], [`codec`], [`frontend`], [`backend`]: the wire protocol.
//! - [`upstream`], [`net`]: the server leg, TLS and streams.
//! - [`auth`], [`catalog`]: terminate-mode authentication (SCRAM, md5)
//!   and pgwarden's own catalog connection.
//! - [`policy`]: classified columns and role access, loaded from YAML.
//! - [`analysis`]: what a restricted statement reads, and whether it may;
//!   [`rewrite`]: the text it reaches the server as (relations with masked
//!   columns read through the SQL form of their masks).
//! - [`masking`]: masks by kind and keyed pseudonyms.
//! - [`cancel`]: cancel keys handed to clients and the server's behind them.
//! - [`error`]: errors as the client sees them (SQLSTATE).
//! - [`audit`]: the tamper-evident trail; [`ship`]: its copies to syslog
//!   and HTTP collectors.
//! - [`access`]: connect rules per role (networks, client certificates,
//!   hours, one login from two addresses).
//! - [`limits`], [`alerts`]: volume limits per role (rows, distinct
//!   subjects) and the alerts they raise (trail, metrics, log, webhooks);
//!   [`admin`]: the endpoint that lists and lifts blocks.
//! - [`events`]: session events for logs and the audit trail (side path).
//! - [`demo`]: `pgwarden demo` and the throwaway PostgreSQL it (and the
//!   tests) run.

pub mod access;
pub mod admin;
pub mod alerts;
pub mod analysis;
pub mod audit;
pub mod auth;
pub mod backend;
pub mod cancel;
pub mod catalog;
pub mod cli;
pub mod codec;
pub mod config;
pub mod context;
pub mod decision;
pub mod demo;
pub mod error;
pub mod events;
pub mod fastmap;
pub mod frame;
pub mod frontend;
pub mod hex;
pub mod limits;
pub mod listener;
pub mod masking;
pub mod metrics;
pub mod net;
pub mod policy;
pub mod rewrite;
pub mod session;
pub mod ship;
pub mod upstream;
pub mod workers;

pub use config::Config;
pub use listener::Proxy;
