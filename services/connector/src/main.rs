//! `shaddock-connector`: A Shaddock connector: Pomelo WebSocket sessions, enter, forwarding, pushes.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shaddock_server::app::main(
        shaddock_connector::SERVER_TYPE,
        "A Shaddock connector: Pomelo WebSocket sessions, enter, forwarding, pushes.",
        shaddock_connector::run,
    )
    .await
}
