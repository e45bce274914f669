//! hlsd: serves what ingestd writes (live HLS from the data dir, recordings rendered from the
//! catalog as VOD playlists) over HTTP with a JSON API and an embedded web player.
//!
//! The models are streamcore's: stream names and the data-dir layout (`streamcore::layout`),
//! playlists (`streamcore::playlist`), and the catalog's records and queries
//! (`streamcore::catalog`), which the JSON API serialises as they are.
//!
//! Embedding (tests start it in-process):
//! ```no_run
//! # async fn demo() -> Result<(), hlsd::ServeError> {
//! let mut config = hlsd::Config::new("/var/lib/fleet");
//! config.listen = "127.0.0.1:0".parse().unwrap();
//! let running = hlsd::serve(config).await?;
//! println!("listening on {}", running.addr);
//! running.shutdown().await;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod auth;
pub mod config;
pub mod http;
pub mod media;
mod routes;
pub mod server;
pub mod stall;
pub mod streams;
pub mod token;
mod web;

pub use config::{Cli, Config};
pub use server::{open_catalog, serve, serve_with_catalog, Running, ServeError};
pub use token::TokenSigner;
