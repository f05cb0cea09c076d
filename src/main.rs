//! The `otpgate` binary: parse the command line, run it, map errors to an exit code.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = otpgate::cli::Cli::parse();
    match otpgate::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("otpgate: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}
