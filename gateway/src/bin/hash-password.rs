//! `hash-password`: read a password on standard input, print its argon2id PHC string, hashed
//! exactly as the gateway hashes sign-ups. `scripts/up.sh` uses it for the local MASTER account
//! (`PICKPLE_MASTER_PASSWORD_HASH`).

use std::io::Read;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut password = String::new();
    std::io::stdin().read_to_string(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']).to_string();
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    let hash = pickple_gateway::auth::hash_password(password)
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    println!("{hash}");
    Ok(())
}
