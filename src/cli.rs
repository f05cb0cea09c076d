//! The command line: `serve` (the default), `sim`, `demo`, `check-config`.

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;

use crate::config::{Config, Overrides};
use crate::{demo, server, telemetry};

/// otpgate: a drop-in, rate-safe gateway for the RumahOTP API.
#[derive(Debug, Parser)]
#[command(name = "otpgate", version, about, long_about = None)]
pub struct Cli {
    /// What to run; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Serve(ServeArgs),
    /// Run the RumahOTP simulator: a sandbox upstream for bots and tests.
    /// Its control calls (deliver an SMS, block an IP, inject faults, read
    /// stats) are under /__sim/ on the same port; see the README.
    Sim(otpgate_sim::SimArgs),
    /// Start the simulator and the gateway on loopback, walk through a
    /// purchase as a bot would, then keep serving for you to try.
    Demo(demo::DemoArgs),
    /// Make a new gateway key for a bot and print the config line that admits it.
    Keygen(KeygenArgs),
    /// Print the effective configuration (secrets masked) and the pacing plan,
    /// as `serve` with the same flags would run.
    CheckConfig(ServeArgs),
}

/// Where the configuration comes from.
#[derive(Debug, Default, Clone, Args)]
pub struct ConfigArgs {
    /// TOML file overriding the built-in defaults (see config/default.toml).
    #[arg(long, env = "OTPGATE_CONFIG")]
    pub config: Option<String>,
}

/// `otpgate keygen`.
#[derive(Debug, Clone, Args)]
pub struct KeygenArgs {
    /// The client's name in `[[clients]]`.
    #[arg(long, default_value = "my-bot")]
    pub name: String,
}

/// `otpgate serve`.
#[derive(Debug, Default, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    /// Configuration source.
    pub config: ConfigArgs,
    /// Client listener; overrides `server.listen`.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Admin listener (metrics, health); overrides `server.admin_listen`.
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// Upstream base URL; overrides `upstream.base_url`.
    #[arg(long)]
    pub upstream: Option<String>,
}

/// Runs the chosen command to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => serve(args).await,
        Command::Sim(args) => Ok(otpgate_sim::run(args).await?),
        Command::Demo(args) => demo::run(args).await,
        Command::CheckConfig(args) => check_config(&args),
        Command::Keygen(args) => keygen(&args),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.config.as_deref(), &overrides(&args))?;
    telemetry::init(&config.log);
    let plan = config.pacing_plan()?;
    crate::pool::check_account_keys(&config)?;
    let client = bind(config.server.listen, "server.listen").await?;
    let admin = bind(config.server.admin_listen, "server.admin_listen").await?;
    tracing::info!(
        listen = %config.server.listen,
        admin = %config.server.admin_listen,
        upstream = %mask_url(&config.upstream.base_url),
        calls_per_second = plan.calls_per_second(),
        plan = %plan,
        "otpgate serving"
    );

    let store_path = config.store.path.clone();
    let gateway = match crate::proxy::Gateway::new(config, std::sync::Arc::new(Default::default()))
    {
        Ok(gateway) => gateway,
        Err(crate::proxy::StartError::Store(error)) => {
            return Err(anyhow::Error::new(error).context(format!(
                "cannot open the store at {store_path:?} (store.path)"
            )));
        }
        Err(error) => return Err(error.into()),
    };
    // On a runtime worker, as `server::spawn` does, not on the main thread:
    // each connection's buffers are then allocated by the thread that serves
    // it, so glibc keeps them in one arena instead of spreading them over two.
    tokio::spawn(server::serve(gateway, client, admin, shutdown_signal()))
        .await
        .context("the server task failed")?;
    Ok(())
}

fn overrides(args: &ServeArgs) -> Overrides {
    Overrides {
        listen: args.listen,
        admin_listen: args.admin_listen,
        upstream: args.upstream.clone(),
    }
}

/// Binds `addr`, naming the config key when it fails.
pub async fn bind(addr: SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({key})"))
}

fn check_config(args: &ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.config.as_deref(), &overrides(args))?;
    let plan = config.pacing_plan()?;
    let accounts = crate::pool::check_account_keys(&config)?;
    config.upstream.base_url = mask_url(&config.upstream.base_url);
    println!("{}", toml::to_string_pretty(&config)?);
    println!("# pacing: {plan}");
    println!("# account keys: {accounts} readable (not shown)");
    println!(
        "# ceiling: {:.3} upstream calls per second per egress",
        plan.calls_per_second()
    );
    Ok(())
}

/// Prints a fresh gateway key (32 random bytes from the OS, hex) and the
/// `[[clients]]` entry holding only its SHA-256.
fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    use std::io::Read;
    let mut random = [0_u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut source| source.read_exact(&mut random))
        .context("cannot read /dev/urandom")?;
    let key = format!("ogk_{}", hex::encode(random));
    let digest = crate::auth::Fingerprint::of(key.as_bytes()).to_hex();
    println!("# Give this key to the bot (its x-apikey); it is not stored anywhere:");
    println!("# {key}");
    println!("# Add this to your config file, with the accounts the bot may use:");
    let name = &args.name;
    println!("[[clients]]\nname = {name:?}\nkey_sha256 = \"{digest}\"\npool = [\"main\"]");
    Ok(())
}

/// Hides credentials embedded in a URL (`https://user:pass@host`).
pub fn mask_url(url: &str) -> String {
    match crate::config::strip_userinfo(url) {
        (bare, true) => bare.replacen("://", "://***@", 1),
        (bare, false) => bare,
    }
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::mask_url;

    #[test]
    fn credentials_in_the_upstream_url_are_masked() {
        assert_eq!(mask_url("https://u:p@host/api"), "https://***@host/api");
        assert_eq!(mask_url("https://host/api"), "https://host/api");
    }
}
