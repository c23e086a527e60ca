//! `corral token create|list|revoke`: tokens for one session's viewers and drivers (the admin
//! token is the data dir's; these are the ones handed out).

use clap::Subcommand;
use corral_client::Client;
use corral_server::protocol::{TokenRequest, TokenScope};

/// `corral token …`.
#[derive(Subcommand, Debug)]
pub enum TokenAction {
    /// Create a token for one session and print it (shown once; kept only as a digest).
    Create {
        /// Name or id.
        #[arg(long)]
        session: String,
        /// read (watch) or write (watch and type).
        #[arg(long, value_parser = ["read", "write"])]
        scope: String,
    },
    /// List the valid viewer and driver tokens: id, scope, session (never the tokens).
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token for good; the connections it let in are closed.
    Revoke {
        /// Its id (`corral token list`), or the whole token. (Not named `token`: that is the
        /// global option this command authenticates with.)
        #[arg(value_name = "ID")]
        which: String,
    },
}

/// `corral token create|list|revoke`.
pub(crate) async fn token_command(client: &Client, action: TokenAction) -> anyhow::Result<()> {
    match action {
        TokenAction::Create { session, scope } => {
            let scope = match scope.as_str() {
                "write" => TokenScope::Write,
                _ => TokenScope::Read,
            };
            let r = client
                .create_token(&TokenRequest { session, scope })
                .await?;
            println!("{}", r.token);
        }
        TokenAction::List { json } => {
            let list = client.tokens().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list.tokens)?);
                return Ok(());
            }
            println!("{:<14} {:<6} {:<9} NAME", "ID", "SCOPE", "SESSION");
            for t in list.tokens {
                let scope = match t.scope {
                    TokenScope::Read => "read",
                    TokenScope::Write => "write",
                };
                let session = t.session.to_string();
                println!("{:<14} {scope:<6} {:<9} {}", t.id, &session[..8], t.name);
            }
        }
        TokenAction::Revoke { which } => {
            // The whole token (`corral_<id>_<secret>`) names its id.
            let id = corral_server::auth::token_id(&which).unwrap_or(&which);
            let r = client.revoke_token(id).await?;
            match r.connections_closed {
                0 => println!("token {} revoked", r.id),
                n => println!("token {} revoked; {n} connection(s) it let in closed", r.id),
            }
        }
    }
    Ok(())
}
