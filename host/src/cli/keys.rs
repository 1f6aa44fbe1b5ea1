//! `keel keys generate | add | list | remove`: publisher keys. `generate`
//! is for plugin authors (no workspace needed); the others change which
//! publishers this workspace trusts, audited.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::memory::audit::AuditEntry;
use crate::memory::now_ms;
use crate::memory::plugins::TrustedKey;
use crate::plugin::manifest::validate_name;
use crate::plugin::signing::{SecretKey, normalize_public_key};
use crate::workspace::Workspace;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a publisher key pair: the secret key goes to FILE (readable
    /// by you only), the public key is printed for `keel keys add`.
    Generate {
        /// Where to write the secret key (refused if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// Trust a publisher's public key (`ed25519:HEX`) under NAME.
    Add {
        /// A name for the publisher (lowercase letters, digits, '-').
        name: String,
        /// The public key, as `keel keys generate` printed it.
        key: String,
    },
    /// The trusted publisher keys.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop trusting a publisher key; installed plugins stay installed.
    Remove {
        /// The name the key was added under.
        name: String,
    },
}

/// `generate` needs no workspace; `open` is called for the others.
pub fn run(cmd: KeysCommand, open: impl FnOnce() -> anyhow::Result<Workspace>) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Generate { out } => generate(&out),
        KeysCommand::Add { name, key } => {
            let ws = open()?;
            validate_name(&name).map_err(|e| anyhow::anyhow!("key name: {e}"))?;
            let key = normalize_public_key(&key)?;
            let existing = ws.store().trusted_keys()?;
            if let Some(same) = existing.iter().find(|k| k.key == key && k.name != name) {
                bail!("this key is already trusted as `{}`", same.name);
            }
            let entry = AuditEntry::allowed("operator", "keys.add", &name).with_reason(key.clone());
            ws.store()
                .trusted_key_add(&TrustedKey { name: name.clone(), key: key.clone(), added_at_ms: now_ms() }, entry)?;
            println!("trusting {key} as `{name}`: plugins it signs install without --allow-unsigned");
            Ok(())
        }
        KeysCommand::List { json } => {
            let keys = open()?.store().trusted_keys()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else if keys.is_empty() {
                println!("no trusted publisher keys: add one with `keel keys add NAME ed25519:HEX`");
            } else {
                for k in keys {
                    println!("{:<24} {}", k.name, k.key);
                }
            }
            Ok(())
        }
        KeysCommand::Remove { name } => {
            let ws = open()?;
            let entry = AuditEntry::allowed("operator", "keys.remove", &name);
            match ws.store().trusted_key_remove(&name, entry)? {
                Some(k) => println!("no longer trusting `{}` ({}); plugins it signed stay installed", k.name, k.key),
                None => bail!("no trusted key named `{name}`: see `keel keys list`"),
            }
            Ok(())
        }
    }
}

fn generate(out: &Path) -> anyhow::Result<()> {
    let key = SecretKey::generate()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = match options.open(out) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("{} exists: keel does not overwrite a key; pick another file", out.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", out.display())),
    };
    file.write_all(key.to_file_text().as_bytes()).with_context(|| format!("cannot write {}", out.display()))?;
    println!("{}", key.public_key());
    eprintln!(
        "wrote the secret key to {} (keep it secret); give operators the public key above for `keel keys add`",
        out.display()
    );
    Ok(())
}
