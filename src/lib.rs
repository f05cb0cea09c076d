//! otpgate: a drop-in gateway in front of the RumahOTP API that keeps every
//! caller under the upstream's 5-calls-per-10-s limit, answers catalog calls
//! from a cache, and never sends a purchase twice.
//!
//! The request path reads top to bottom in [`proxy`]; [`routes`] says what
//! each upstream path is; [`upstream`] paces and sends; [`cache`] shares answers.

pub mod admin;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod flight;
pub mod headers;
pub mod metrics;
pub mod once;
pub mod pool;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod upstream;

pub use config::Config;
pub use server::{GatewayHandle, spawn};
