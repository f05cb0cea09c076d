//! Typed configuration, loaded once at start-up with the `config` crate.
//!
//! Layers, later ones winning: the commented `config/default.toml` compiled
//! into the binary, an optional file (`--config`), environment variables
//! `OTPGATE__SECTION__KEY`, then command-line flags. Anything unknown or out
//! of range fails here, naming the key, before a socket is opened.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::upstream::limits::{CounterKind, PacingPlan};

/// The defaults, documented key by key.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The sources could not be read or parsed into the typed tree.
    #[error("configuration: {0}")]
    Load(config::ConfigError),
    /// An `[[egresses]]`, `[[accounts]]` or `[[clients]]` entry is not acceptable.
    #[error("configuration `{table}` entry {name:?}: {reason}")]
    Entry {
        /// `egresses`, `accounts` or `clients`.
        table: &'static str,
        /// The entry's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A value parsed but is not acceptable.
    #[error("configuration key `{key}`: {reason}")]
    Invalid {
        /// Dotted key path, e.g. `pacing.limit`.
        key: &'static str,
        /// What is wrong and what would be accepted.
        reason: String,
    },
}

impl From<config::ConfigError> for ConfigError {
    /// Kept as text only: the `config` crate's message already names the key,
    /// and a chained source would print it twice.
    fn from(error: config::ConfigError) -> Self {
        ConfigError::Load(error)
    }
}

/// The whole configuration tree.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Client and admin listeners.
    pub server: ServerConfig,
    /// What one client may ask of the gateway.
    pub limits: LimitsConfig,
    /// The RumahOTP API behind the gateway.
    pub upstream: UpstreamConfig,
    /// The upstream's rate limit and how the gateway stays under it.
    pub pacing: PacingConfig,
    /// The queue in front of the pacer.
    pub queue: QueueConfig,
    /// Catalog and status caching.
    pub cache: CacheConfig,
    /// Remembering which client keys the upstream accepts.
    pub auth: AuthConfig,
    /// Durable records.
    pub store: StoreConfig,
    /// At-most-once guards for calls that move money.
    pub safety: SafetyConfig,
    /// Logging.
    pub log: LogConfig,
    /// `[[egresses]]`: outbound paths, one pacer each; `default` when empty.
    #[serde(default)]
    pub egresses: Vec<EgressConfig>,
    /// `[[accounts]]`: upstream keys held by the gateway (the keys come from
    /// the environment or files, never from config).
    #[serde(default)]
    pub accounts: Vec<AccountConfig>,
    /// `[[clients]]`: bots with a gateway key and the accounts they may use.
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
}

/// One `[[egresses]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// Name used by accounts and in metrics.
    pub name: String,
    /// Local address to send from (a second IP of this machine).
    pub bind: Option<std::net::IpAddr>,
    /// Outbound proxy: `http://host:port` (CONNECT) or `socks5://host:port`.
    pub proxy: Option<String>,
}

/// One `[[accounts]]` entry: a RumahOTP account the gateway holds a key for.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// Name used by client pools, metrics and logs.
    pub name: String,
    /// Egress the account's calls leave by (`default` when omitted).
    pub egress: Option<String>,
    /// File holding the key; else the environment variable
    /// `OTPGATE_ACCOUNT_<NAME>_KEY` (name upper-cased, other characters `_`).
    pub key_file: Option<String>,
}

/// One `[[clients]]` entry: a bot with a gateway key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Name used in metrics and logs.
    pub name: String,
    /// SHA-256 of the client's gateway key, 64 hex digits (`otpgate keygen`).
    pub key_sha256: String,
    /// Names of the accounts this client's calls may use.
    pub pool: Vec<String>,
    /// Its own limit on requests per second to the gateway (instead of
    /// `limits.client_requests_per_second`).
    pub requests_per_second: Option<u32>,
    /// Calls per turn in the upstream queue against other callers (its share
    /// of the upstream budget; default 1).
    pub queue_weight: Option<u32>,
}

/// `[store]`: where durable records live.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite file path, or `:memory:`.
    pub path: String,
    /// How long id → (owner, account) records are kept.
    pub affinity_ttl_seconds: f64,
}

/// `[safety]`: idempotency keys, joining identical calls, lost answers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyConfig {
    /// Replay time of an idempotency record.
    pub idempotency_ttl_seconds: f64,
    /// Joining window for identical calls; 0 disables.
    pub join_window_seconds: f64,
    /// Hold on identical calls after a lost answer.
    pub unknown_outcome_hold_seconds: f64,
}

/// `[server]`: listeners and client-side limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address bots connect to.
    pub listen: SocketAddr,
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub admin_listen: SocketAddr,
    /// Connections served at once.
    pub max_connections: usize,
    /// Time a client has to send its request head.
    pub header_read_timeout_seconds: f64,
    /// Largest request head in bytes.
    pub max_header_bytes: usize,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Time in-flight calls get after a shutdown signal.
    pub shutdown_grace_seconds: f64,
    /// CORS origins; `*` allows any.
    pub cors_allow_origins: Vec<String>,
}

/// `[limits]`: per-client request rate and request shape limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Requests per second per client; 0 disables.
    pub client_requests_per_second: u32,
    /// Burst on top of the rate.
    pub client_burst: u32,
    /// Longest query string in bytes.
    pub max_query_bytes: usize,
    /// Most query parameters.
    pub max_query_params: usize,
}

/// `[upstream]`: where and how calls are sent.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL including the `/api` prefix, e.g. `https://www.rumahotp.io/api`.
    pub base_url: String,
    /// TCP + TLS connect timeout.
    pub connect_timeout_seconds: f64,
    /// Time for the whole answer once sent.
    pub response_timeout_seconds: f64,
    /// Idle time after which pooled connections are dropped.
    pub pool_idle_timeout_seconds: f64,
    /// Largest decompressed upstream body in bytes.
    pub max_body_bytes: usize,
}

/// `[pacing]`: the upstream's limit and the spacing derived from it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PacingConfig {
    /// Calls allowed per window.
    pub limit: u32,
    /// Window length.
    pub window_seconds: f64,
    /// How the upstream counts calls in a window.
    pub counter: CounterKind,
    /// Calls sent back to back after a quiet period.
    pub burst: u32,
    /// Extra spacing on top of `window / (limit - 1)`.
    pub margin_seconds: f64,
    /// Cool-down after a block when the upstream gives no Retry-After.
    pub block_cooldown_seconds: f64,
}

/// `[queue]`: admission to the pacer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Waiting calls, all priorities.
    pub max_len: usize,
    /// Wait allowed when the client does not say.
    pub default_deadline_seconds: f64,
    /// Largest wait a client may ask for.
    pub max_deadline_seconds: f64,
}

/// `[cache]`: fresh and stale times per kind of answer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Entries kept.
    pub max_entries: u64,
    /// Services, operators, PPOB products.
    pub catalog_ttl_seconds: f64,
    /// Countries (stock and price).
    pub countries_ttl_seconds: f64,
    /// Bank and game lists.
    pub static_ttl_seconds: f64,
    /// Serving past the fresh time.
    pub max_stale_seconds: f64,
    /// Status of an id still in progress.
    pub status_ttl_seconds: f64,
    /// Status of an id in a final state.
    pub final_status_ttl_seconds: f64,
    /// A key's balance.
    pub balance_ttl_seconds: f64,
}

/// `[auth]`: verdicts on client keys.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Trust in an accepted key.
    pub verified_key_ttl_seconds: f64,
    /// Local refusal of a rejected key.
    pub rejected_key_ttl_seconds: f64,
    /// Accept a client's own RumahOTP key in `x-apikey` and forward it.
    pub pass_through: bool,
}

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl TryFrom<String> for LogFormat {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        match value.as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "log format {other:?}: expected \"text\" or \"json\""
            )),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Text or JSON.
    pub format: LogFormat,
    /// tracing-subscriber `EnvFilter` directive.
    pub filter: String,
}

/// Values given on the command line; they win over every other source.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--admin-listen`.
    pub admin_listen: Option<SocketAddr>,
    /// `--upstream`.
    pub upstream: Option<String>,
}

impl Config {
    /// Loads defaults, `file`, the environment and `overrides`, then validates.
    pub fn load(file: Option<&str>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(path) = file {
            builder = builder.add_source(config::File::with_name(path).required(true));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("OTPGATE")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("server.cors_allow_origins")
                .try_parsing(true),
        );
        if let Some(listen) = overrides.listen {
            builder = builder.set_override("server.listen", listen.to_string())?;
        }
        if let Some(admin) = overrides.admin_listen {
            builder = builder.set_override("server.admin_listen", admin.to_string())?;
        }
        if let Some(upstream) = &overrides.upstream {
            builder = builder.set_override("upstream.base_url", upstream.as_str())?;
        }

        let built = builder.build()?;
        for key in ["server.listen", "server.admin_listen"] {
            check_socket_address(&built, key)?;
        }
        let config: Config = built.try_deserialize()?;
        config.validate()?;
        Ok(config)
    }

    /// The compiled-in defaults alone; for tests and the demo.
    pub fn defaults() -> Self {
        Self::load(None, &Overrides::default()).expect("the built-in defaults are valid")
    }

    /// Checks ranges and the pacing plan; the first bad key is reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive(
            "server.header_read_timeout_seconds",
            self.server.header_read_timeout_seconds,
        )?;
        positive(
            "server.shutdown_grace_seconds",
            self.server.shutdown_grace_seconds,
        )?;
        at_least("server.max_connections", self.server.max_connections, 1)?;
        at_least(
            "server.max_header_bytes",
            self.server.max_header_bytes,
            8192,
        )?;
        self.validate_upstream()?;
        at_least("limits.max_query_bytes", self.limits.max_query_bytes, 256)?;
        at_least("limits.max_query_params", self.limits.max_query_params, 8)?;
        if self.limits.client_requests_per_second > 0 {
            at_least("limits.client_burst", self.limits.client_burst as usize, 1)?;
        }
        positive(
            "queue.default_deadline_seconds",
            self.queue.default_deadline_seconds,
        )?;
        positive(
            "queue.max_deadline_seconds",
            self.queue.max_deadline_seconds,
        )?;
        at_least("queue.max_len", self.queue.max_len, 1)?;
        for (key, value) in self.cache_durations() {
            positive(key, value)?;
        }
        positive(
            "auth.verified_key_ttl_seconds",
            self.auth.verified_key_ttl_seconds,
        )?;
        positive(
            "auth.rejected_key_ttl_seconds",
            self.auth.rejected_key_ttl_seconds,
        )?;
        tracing_subscriber::EnvFilter::try_new(&self.log.filter).map_err(|e| {
            ConfigError::Invalid {
                key: "log.filter",
                reason: e.to_string(),
            }
        })?;
        self.validate_pools()?;
        self.pacing_plan().map(|_| ())
    }

    /// The configured egresses, or one `default` egress.
    pub fn egress_list(&self) -> Vec<EgressConfig> {
        if self.egresses.is_empty() {
            let default = EgressConfig {
                name: "default".into(),
                bind: None,
                proxy: None,
            };
            return vec![default];
        }
        self.egresses.clone()
    }

    fn validate_pools(&self) -> Result<(), ConfigError> {
        let entry = |table, name: &str, reason: String| ConfigError::Entry {
            table,
            name: name.to_owned(),
            reason,
        };
        let egresses: Vec<String> = self.egress_list().into_iter().map(|e| e.name).collect();
        unique("egresses", self.egresses.iter().map(|e| e.name.as_str()))?;
        let mut paths = std::collections::HashSet::new();
        for egress in &self.egresses {
            crate::upstream::client::Outbound::parse(egress.proxy.as_deref())
                .map_err(|reason| entry("egresses", &egress.name, reason))?;
            // Each egress paces as if it had the upstream's limit to itself:
            // two with the same source would share one IP's limit.
            let path = (egress.bind, egress.proxy.clone());
            if !paths.insert(path) {
                let reason = "same bind and proxy as another egress: the upstream limits per \
                              IP, so each egress needs its own source address or proxy"
                    .to_owned();
                return Err(entry("egresses", &egress.name, reason));
            }
        }
        unique("accounts", self.accounts.iter().map(|a| a.name.as_str()))?;
        unique("clients", self.clients.iter().map(|c| c.name.as_str()))?;
        for account in &self.accounts {
            let egress = account.egress.as_deref().unwrap_or("default");
            if !egresses.iter().any(|e| e == egress) {
                return Err(entry(
                    "accounts",
                    &account.name,
                    format!("no egress named {egress:?}"),
                ));
            }
        }
        for client in &self.clients {
            let hex_ok = client.key_sha256.len() == 64
                && client.key_sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex_ok {
                let reason = "key_sha256 must be 64 hex digits (otpgate keygen)".to_owned();
                return Err(entry("clients", &client.name, reason));
            }
            if client.pool.is_empty() {
                return Err(entry("clients", &client.name, "pool is empty".into()));
            }
            if let Some(missing) = client
                .pool
                .iter()
                .find(|name| !self.accounts.iter().any(|a| &a.name == *name))
            {
                let reason = format!("pool names {missing:?}, which is not in [[accounts]]");
                return Err(entry("clients", &client.name, reason));
            }
        }
        if !self.auth.pass_through && self.clients.is_empty() {
            return Err(ConfigError::Invalid {
                key: "auth.pass_through",
                reason: "is off and no [[clients]] are configured: nobody could call".into(),
            });
        }
        Ok(())
    }

    fn validate_upstream(&self) -> Result<(), ConfigError> {
        let url = &self.upstream.base_url;
        let parsed: http::Uri =
            url.parse()
                .map_err(|e: http::uri::InvalidUri| ConfigError::Invalid {
                    key: "upstream.base_url",
                    reason: e.to_string(),
                })?;
        let scheme_ok = matches!(parsed.scheme_str(), Some("http" | "https"));
        if !scheme_ok || parsed.host().is_none() || parsed.query().is_some() {
            return Err(ConfigError::Invalid {
                key: "upstream.base_url",
                reason: format!("expected http(s)://host[:port][/path], got {url:?}"),
            });
        }
        positive(
            "upstream.connect_timeout_seconds",
            self.upstream.connect_timeout_seconds,
        )?;
        positive(
            "upstream.response_timeout_seconds",
            self.upstream.response_timeout_seconds,
        )?;
        positive(
            "upstream.pool_idle_timeout_seconds",
            self.upstream.pool_idle_timeout_seconds,
        )?;
        at_least(
            "upstream.max_body_bytes",
            self.upstream.max_body_bytes,
            1024,
        )
    }

    fn cache_durations(&self) -> [(&'static str, f64); 7] {
        let c = &self.cache;
        [
            ("cache.catalog_ttl_seconds", c.catalog_ttl_seconds),
            ("cache.countries_ttl_seconds", c.countries_ttl_seconds),
            ("cache.static_ttl_seconds", c.static_ttl_seconds),
            ("cache.max_stale_seconds", c.max_stale_seconds),
            ("cache.status_ttl_seconds", c.status_ttl_seconds),
            ("cache.final_status_ttl_seconds", c.final_status_ttl_seconds),
            ("cache.balance_ttl_seconds", c.balance_ttl_seconds),
        ]
    }

    /// The pacer's spacing and its worst case; refused when it can exceed the limit.
    pub fn pacing_plan(&self) -> Result<PacingPlan, ConfigError> {
        let p = &self.pacing;
        at_least("pacing.limit", p.limit as usize, 2)?;
        at_least("pacing.burst", p.burst as usize, 1)?;
        positive("pacing.window_seconds", p.window_seconds)?;
        positive("pacing.block_cooldown_seconds", p.block_cooldown_seconds)?;
        if !(p.margin_seconds >= 0.0 && p.margin_seconds.is_finite()) {
            return Err(ConfigError::Invalid {
                key: "pacing.margin_seconds",
                reason: "must be zero or more".into(),
            });
        }
        let plan = PacingPlan::new(
            p.limit,
            secs(p.window_seconds),
            secs(p.margin_seconds),
            p.burst,
            p.counter,
        );
        if plan.can_exceed_limit() {
            return Err(ConfigError::Invalid {
                key: "pacing",
                reason: format!(
                    "{}; lower pacing.burst or raise pacing.margin_seconds",
                    plan
                ),
            });
        }
        Ok(plan)
    }
}

/// `url` without `user:password@` in its authority, and whether it had any.
pub fn strip_userinfo(url: &str) -> (String, bool) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), false);
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => (format!("{scheme}://{}", &rest[at + 1..]), true),
        None => (url.to_owned(), false),
    }
}

/// Seconds from config as a `Duration`; callers validated them first.
pub fn secs(value: f64) -> Duration {
    Duration::from_secs_f64(value.max(0.0))
}

fn unique<'a>(
    table: &'static str,
    names: impl Iterator<Item = &'a str>,
) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for name in names {
        if !seen.insert(name) {
            return Err(ConfigError::Entry {
                table,
                name: name.to_owned(),
                reason: "the name is used twice".into(),
            });
        }
    }
    Ok(())
}

/// A listener address must be an IP address and a port: host names are not
/// resolved (which of a name's addresses would be meant is not clear).
fn check_socket_address(built: &config::Config, key: &'static str) -> Result<(), ConfigError> {
    let Ok(text) = built.get_string(key) else {
        return Ok(()); // missing or not a string: the typed load says so
    };
    match text.parse::<SocketAddr>() {
        Ok(_) => Ok(()),
        Err(_) => Err(ConfigError::Invalid {
            key,
            reason: format!(
                "{text:?} is not an IP address and port; write e.g. \"127.0.0.1:8080\", \
                 \"0.0.0.0:8080\" or \"[::1]:8080\" (host names such as localhost are not \
                 resolved)"
            ),
        }),
    }
}

fn positive(key: &'static str, value: f64) -> Result<(), ConfigError> {
    if value > 0.0 && value.is_finite() {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        key,
        reason: format!("must be a positive number, got {value}"),
    })
}

fn at_least(key: &'static str, value: usize, min: usize) -> Result<(), ConfigError> {
    if value >= min {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        key,
        reason: format!("must be at least {min}, got {value}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_defaults_are_valid_and_pace_at_two_point_six_seconds() {
        let config = Config::defaults();
        let plan = config.pacing_plan().unwrap();
        assert_eq!(plan.period, Duration::from_millis(2600));
        assert_eq!(config.upstream.base_url, "https://www.rumahotp.io/api");
    }

    #[test]
    fn a_burst_that_can_exceed_the_limit_is_refused_naming_the_key() {
        let mut config = Config::defaults();
        config.pacing.burst = 5;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("`pacing`"), "{err}");
        assert!(err.contains("worst case"), "{err}");
    }

    /// Loads `text` as a config file written to a temporary path.
    fn load_file(text: &str) -> Result<Config, ConfigError> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("otpgate-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let loaded = Config::load(Some(path.to_str().unwrap()), &Overrides::default());
        let _ = std::fs::remove_file(&path);
        loaded
    }

    #[test]
    fn a_file_overrides_only_the_keys_it_names() {
        let config = load_file("[pacing]\nlimit = 10\n").unwrap();
        assert_eq!(config.pacing.limit, 10);
        assert_eq!(config.queue.max_len, Config::defaults().queue.max_len);
    }

    #[test]
    fn a_listener_named_by_host_name_fails_saying_what_to_write() {
        let err = load_file("[server]\nlisten = \"localhost:8081\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`server.listen`"), "{text}");
        assert!(text.contains("127.0.0.1:8080"), "{text}");
        let ok = load_file("[server]\nadmin_listen = \"[::1]:9091\"\n").unwrap();
        assert_eq!(ok.server.admin_listen, "[::1]:9091".parse().unwrap());
    }

    #[test]
    fn an_unknown_key_fails_naming_it() {
        let err = load_file("[cache]\ncatalog_ttl = 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("catalog_ttl"), "{err}");
    }

    #[test]
    fn a_value_of_the_wrong_type_fails_naming_its_key() {
        let err = load_file("[queue]\nmax_len = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_len"), "{err}");
    }

    #[test]
    fn a_zero_deadline_fails_naming_its_key() {
        let err = load_file("[queue]\ndefault_deadline_seconds = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("queue.default_deadline_seconds"), "{err}");
    }

    #[test]
    fn an_egress_proxy_of_an_unknown_scheme_names_its_entry() {
        let mut config = Config::defaults();
        let proxy = Some("ftp://127.0.0.1:21".into());
        config.egresses = vec![EgressConfig {
            name: "via".into(),
            bind: None,
            proxy,
        }];
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("`egresses` entry \"via\""), "{err}");
    }

    #[test]
    fn two_egresses_with_the_same_source_are_refused() {
        let mut config = Config::defaults();
        let ip = Some(std::net::IpAddr::from([127, 0, 0, 3]));
        config.egresses = vec![
            EgressConfig {
                name: "a".into(),
                bind: ip,
                proxy: None,
            },
            EgressConfig {
                name: "b".into(),
                bind: ip,
                proxy: None,
            },
        ];
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("`egresses` entry \"b\""), "{err}");
    }

    #[test]
    fn a_pool_naming_a_missing_account_names_the_client() {
        let mut config = Config::defaults();
        config.clients = vec![ClientConfig {
            name: "bot".into(),
            key_sha256: "a".repeat(64),
            pool: vec!["nowhere".into()],
            requests_per_second: None,
            queue_weight: None,
        }];
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("`clients` entry \"bot\"") && err.contains("nowhere"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_upstream_url_names_its_key() {
        let mut config = Config::defaults();
        config.upstream.base_url = "ftp://example".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("upstream.base_url"), "{err}");
    }
}
