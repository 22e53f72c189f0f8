//! Logging for binaries: `RUST_LOG` (default `info`), JSON lines when `LOG_FORMAT=json`,
//! no colours when `NO_COLOR` is set.
//! Logs go to stderr; stdout carries only the ready line.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls do nothing.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,async_nats=warn"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::env::var_os("NO_COLOR").is_none())
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
