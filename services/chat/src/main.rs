//! `shaddock-chat`: A Shaddock chat server: rooms, chatHandler.send, chatRemote.add/kick.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shaddock_server::app::main(
        shaddock_chat::SERVER_TYPE,
        "A Shaddock chat server: rooms, chatHandler.send, chatRemote.add/kick.",
        shaddock_chat::run,
    )
    .await
}
