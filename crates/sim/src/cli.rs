//! The `otpgate sim` command line: flags, turning them into a [`SimConfig`], and running the
//! simulator in the foreground until Ctrl-C.

use clap::Args;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

use crate::clock::rupiah;
use crate::config::{AccountSeed, SimConfig};

/// Flags of `otpgate sim`. Durations are in seconds unless the flag says otherwise.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Address to listen on (keep it on loopback).
    #[arg(long, default_value = "127.0.0.1:8099")]
    pub listen: SocketAddr,
    /// Calls allowed per client IP per window before the Cloudflare-like block.
    #[arg(long, default_value_t = 5)]
    pub limit: u32,
    /// Length of the rate-limit window, in seconds (fractions allowed).
    #[arg(long, default_value_t = 10.0)]
    pub window_seconds: f64,
    /// Count arrivals in the exact trailing window instead of Cloudflare's approximation.
    #[arg(long)]
    pub exact_window: bool,
    /// How long an IP stays blocked once over the limit.
    #[arg(long, default_value_t = 60.0)]
    pub block_seconds: f64,
    /// Time from ordering a number to its SMS arriving.
    #[arg(long, default_value_t = 8.0)]
    pub sms_delay_seconds: f64,
    /// Cancels are refused before an order is this old.
    #[arg(long, default_value_t = 180.0)]
    pub cancel_lock_seconds: f64,
    /// Lifetime of an order.
    #[arg(long, default_value_t = 1200.0)]
    pub order_lifetime_seconds: f64,
    /// Close keep-alive connections idle for this many milliseconds (default: never).
    #[arg(long)]
    pub idle_close_ms: Option<u64>,
    /// Gzip JSON answers for clients that send `Accept-Encoding: gzip`.
    #[arg(long)]
    pub gzip: bool,
    /// An account as KEY=BALANCE (repeatable); default: demo-key-1=500000, demo-key-2=250000.
    #[arg(long = "account", value_name = "KEY=BALANCE", value_parser = parse_account)]
    pub accounts: Vec<AccountSeed>,
    /// Seed of the generated world.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

impl SimArgs {
    /// The address to listen on.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The simulator configuration these flags describe; unset values keep
    /// [`SimConfig::default`]. Negative or non-finite seconds count as zero.
    pub fn into_config(self) -> SimConfig {
        let defaults = SimConfig::default();
        let accounts = if self.accounts.is_empty() {
            defaults.accounts.clone()
        } else {
            self.accounts
        };
        SimConfig {
            limit: self.limit,
            window: seconds(self.window_seconds),
            exact_window: self.exact_window,
            block: seconds(self.block_seconds),
            sms_delay: seconds(self.sms_delay_seconds),
            cancel_lock: seconds(self.cancel_lock_seconds),
            order_lifetime: seconds(self.order_lifetime_seconds),
            idle_close: self.idle_close_ms.map(Duration::from_millis),
            gzip: self.gzip,
            accounts,
            seed: self.seed,
            ..defaults
        }
    }
}

/// Binds, prints where the simulator listens with the demo keys and a curl example, and serves
/// until Ctrl-C.
pub async fn run(args: SimArgs) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.listen()).await?;
    let config = args.into_config();
    let keys: Vec<(String, i64)> = config
        .accounts
        .iter()
        .map(|a| (a.key.clone(), a.balance))
        .collect();
    let sim = crate::spawn(listener, config).await;

    println!(
        "otpgate sim: RumahOTP simulator listening on {}",
        sim.base_url()
    );
    for (key, balance) in &keys {
        println!("  account  x-apikey: {key}  balance: {}", rupiah(*balance));
    }
    let first_key = keys.first().map_or("demo-key-1", |k| k.0.as_str());
    println!(
        "try:  curl -s {}/v1/user/balance -H 'x-apikey: {first_key}'",
        sim.base_url()
    );
    println!("stats: curl -s http://{}/__sim/stats", sim.addr());
    println!("stop with Ctrl-C");

    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}

fn parse_account(raw: &str) -> Result<AccountSeed, String> {
    let (key, balance) = raw
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=BALANCE, got {raw:?}"))?;
    let balance: i64 = balance
        .trim()
        .parse()
        .map_err(|_| format!("balance of {key:?} is not a whole number"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err("empty key".to_string());
    }
    let username = format!(
        "user-{}",
        key.chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
    );
    Ok(AccountSeed::new(key, balance, username))
}

fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value.max(0.0)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn defaults_match_the_documented_limits_and_demo_accounts() {
        let config = Cli::parse_from(["sim"]).sim.into_config();
        assert_eq!(config.limit, 5);
        assert_eq!(config.window, Duration::from_secs(10));
        assert_eq!(config.accounts.len(), 2);
        assert_eq!(config.accounts[0].key, "demo-key-1");
        assert_eq!(config.accounts[1].balance, 250_000);
    }

    #[test]
    fn accounts_and_fractional_windows_are_parsed() {
        let cli = Cli::parse_from([
            "sim",
            "--account",
            "key-a=1000",
            "--account",
            "key-b=5",
            "--window-seconds",
            "1.5",
        ]);
        let config = cli.sim.into_config();
        assert_eq!(config.accounts[1].key, "key-b");
        assert_eq!(config.window, Duration::from_millis(1500));
        assert!(Cli::try_parse_from(["sim", "--account", "nobalance"]).is_err());
    }
}
