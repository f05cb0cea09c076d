//! Runs the simulator in the foreground with the `otpgate sim` flags, for trying it without the
//! gateway binary: `cargo run -p otpgate-sim --example sandbox -- --listen 127.0.0.1:8099`.

use clap::Parser;

#[derive(Parser)]
#[command(about = "RumahOTP simulator (sandbox)")]
struct Cli {
    #[command(flatten)]
    sim: otpgate_sim::SimArgs,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    otpgate_sim::run(Cli::parse().sim).await
}
