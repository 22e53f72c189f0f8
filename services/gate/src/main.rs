//! `shaddock-gate`: A Shaddock gate: tells clients which connector to use.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shaddock_server::app::main(
        shaddock_gate::SERVER_TYPE,
        "A Shaddock gate: tells clients which connector to use.",
        shaddock_gate::run,
    )
    .await
}
