//! Where the node's secrets come from. There is no public default secret: anyone who knows the
//! secret that signs tokens can mint a `*` operator token, so a well-known one would hand the
//! node to everyone.
//!
//! - The API key and secret are each resolved on their own (flag > environment > config file,
//!   merged by the caller into [`Config`]). Both set: they are used. Only one set: refused.
//! - Neither set and the node listens on a loopback address (the laptop demo): a random pair is
//!   generated once per install and kept in `{data_dir}/credentials.toml` (mode 0600), so tokens
//!   minted with `townhall token` keep working across restarts.
//! - Neither set on any other address: refused, with a message saying what to set.
//! - Webhooks are signed with a separate `webhook_secret` (generated and kept the same way when
//!   unset), so a webhook receiver never holds the key that mints tokens.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::app::config::Config;
use crate::app::datadir;

/// The file, inside the data directory, that keeps generated credentials.
pub const FILE: &str = "credentials.toml";

pub use crate::app::config::MIN_SECRET_LEN;

/// The node's secrets, resolved.
#[derive(Clone)]
pub struct Credentials {
    /// Names the token issuer (`iss`).
    pub api_key: String,
    /// Signs and verifies tokens.
    pub api_secret: String,
    /// Signs webhook deliveries (never the token secret).
    pub webhook_secret: String,
    /// Where the API pair came from.
    pub source: Source,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("api_key", &self.api_key)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Where a node's API key pair came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Configured by the operator (flag, environment or config file).
    Configured,
    /// Generated for this install and kept in this file (`created`: made by this start).
    Generated {
        /// The file that keeps it.
        path: PathBuf,
        /// Whether this start created it.
        created: bool,
    },
}

/// Why the node has no usable credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Exactly one of the key and the secret is set.
    #[error(
        "{set} is set but {missing} is not: set both (TOWNHALL_API_KEY and TOWNHALL_API_SECRET, \
         flags --api-key/--api-secret, or api_key/api_secret in the config file)"
    )]
    Half {
        /// The one that is set.
        set: &'static str,
        /// The one that is missing.
        missing: &'static str,
    },
    /// No secret, and the node listens beyond loopback.
    #[error(
        "no API secret configured and {listen} is not a loopback address: refusing to start with \
         a secret others could guess. Set TOWNHALL_API_KEY and TOWNHALL_API_SECRET (at least 16 \
         bytes, e.g. `openssl rand -hex 32`), or listen on 127.0.0.1 to use a generated pair"
    )]
    Public {
        /// The listen address.
        listen: std::net::SocketAddr,
    },
    /// A secret is too short.
    #[error("{0} must be at least {MIN_SECRET_LEN} bytes")]
    TooShort(&'static str),
    /// The stored file could not be read, parsed or written.
    #[error("credentials file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// What `credentials.toml` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    api_key: Option<String>,
    api_secret: Option<String>,
    webhook_secret: Option<String>,
}

/// Resolves the node's credentials from `config` (flags and environment already merged in),
/// generating and storing what a loopback node may generate.
pub fn resolve(config: &Config) -> Result<Credentials, CredentialsError> {
    let loopback = config.listen.ip().is_loopback();
    resolve_with(config, loopback)
}

/// Like [`resolve`] for `townhall token`, which has no listen address: it may use (or create)
/// the pair stored for this install, as a loopback server would.
pub fn resolve_for_tool(config: &Config) -> Result<Credentials, CredentialsError> {
    resolve_with(config, true)
}

fn resolve_with(config: &Config, may_generate: bool) -> Result<Credentials, CredentialsError> {
    let configured = match (&config.api_key, &config.api_secret) {
        (Some(k), Some(s)) => Some((k.clone(), s.clone())),
        (Some(_), None) => {
            return Err(CredentialsError::Half { set: "the API key", missing: "the API secret" });
        }
        (None, Some(_)) => {
            return Err(CredentialsError::Half { set: "the API secret", missing: "the API key" });
        }
        (None, None) => None,
    };
    if configured.as_ref().is_some_and(|(_, s)| s.len() < MIN_SECRET_LEN) {
        return Err(CredentialsError::TooShort("api_secret"));
    }
    if config.webhook_secret.as_ref().is_some_and(|s| s.len() < MIN_SECRET_LEN) {
        return Err(CredentialsError::TooShort("webhook_secret"));
    }
    if configured.is_none() && !may_generate {
        return Err(CredentialsError::Public { listen: config.listen });
    }
    // The store is touched only when something must come from it: a node with both secrets
    // configured (or no webhooks) writes nothing.
    let needs_store = configured.is_none()
        || (config.webhook_secret.is_none() && !config.webhook_urls.is_empty());
    let (stored, path, created) = if needs_store {
        let path = config.data_dir.join(FILE);
        let (stored, created) = load_or_create(&path)?;
        (Some(stored), path, created)
    } else {
        (None, PathBuf::new(), false)
    };
    let webhook_secret = config
        .webhook_secret
        .clone()
        .or_else(|| stored.as_ref().and_then(|s| s.webhook_secret.clone()))
        // No receivers and nothing stored: a throwaway secret that signs nothing.
        .unwrap_or_else(random_secret);
    let (api_key, api_secret, source) = match configured {
        Some((k, s)) => (k, s, Source::Configured),
        None => {
            let stored = stored.unwrap_or_else(|| unreachable!("loaded when not configured"));
            let (Some(k), Some(s)) = (stored.api_key, stored.api_secret) else {
                return Err(file_error(&path, "api_key or api_secret missing"));
            };
            (k, s, Source::Generated { path, created })
        }
    };
    if api_secret.len() < MIN_SECRET_LEN {
        return Err(CredentialsError::TooShort("api_secret"));
    }
    Ok(Credentials { api_key, api_secret, webhook_secret, source })
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> CredentialsError {
    CredentialsError::File { path: path.to_owned(), message: message.to_string() }
}

/// Reads the stored credentials, creating the file (owner-only) with a fresh pair if absent,
/// and filling in any secret an older file lacks.
fn load_or_create(path: &Path) -> Result<(Stored, bool), CredentialsError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    datadir::ensure_private_dir(dir).map_err(|e| file_error(dir, e))?;
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Some(toml::from_str::<Stored>(&text).map_err(|e| file_error(path, e))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(file_error(path, e)),
    };
    let created = existing.is_none();
    let mut stored = existing.clone().unwrap_or(Stored {
        api_key: None,
        api_secret: None,
        webhook_secret: None,
    });
    if stored.api_key.is_none() && stored.api_secret.is_none() {
        stored.api_key = Some(format!("th_{:016x}", rand::random::<u64>()));
        stored.api_secret = Some(random_secret());
    }
    if stored.webhook_secret.is_none() {
        stored.webhook_secret = Some(random_secret());
    }
    let changed = existing.is_none_or(|old| {
        old.api_key != stored.api_key
            || old.api_secret != stored.api_secret
            || old.webhook_secret != stored.webhook_secret
    });
    if changed {
        write(path, &stored)?;
    } else {
        // A file copied in with loose permissions is narrowed: it holds the signing secret.
        datadir::make_private(path).map_err(|e| file_error(path, e))?;
    }
    Ok((stored, created))
}

fn write(path: &Path, stored: &Stored) -> Result<(), CredentialsError> {
    use std::io::Write;
    let text = format!(
        "# Generated by townhall for this install: the pair that signs tokens, and the secret\n\
         # that signs webhooks. Keep it private. Set TOWNHALL_API_KEY/TOWNHALL_API_SECRET to use\n\
         # your own instead.\n{}",
        toml::to_string(stored).map_err(|e| file_error(path, e))?
    );
    let tmp = path.with_extension("toml.tmp");
    let mut file = datadir::create_private(&tmp).map_err(|e| file_error(&tmp, e))?;
    file.write_all(text.as_bytes()).map_err(|e| file_error(&tmp, e))?;
    file.sync_all().map_err(|e| file_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| file_error(path, e))
}

/// 256 random bits, hex.
fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("townhall-cred-{}", rand::random::<u64>()))
    }

    fn config(dir: &Path, listen: &str) -> Config {
        Config {
            data_dir: dir.to_owned(),
            listen: listen.parse().expect("addr"),
            ..Config::default()
        }
    }

    #[test]
    fn configured_pairs_are_used_and_half_pairs_refused() {
        let dir = temp_dir();
        let both = Config {
            api_key: Some("k".into()),
            api_secret: Some("a secret of enough length".into()),
            ..config(&dir, "0.0.0.0:80")
        };
        let c = resolve(&both).expect("configured");
        assert_eq!((c.api_key.as_str(), c.source), ("k", Source::Configured));
        assert_ne!(c.webhook_secret, c.api_secret, "webhooks never share the token secret");
        assert!(!dir.exists(), "nothing written when everything is configured");
        // A key in the config file and a secret in the environment: both used, neither dropped.
        let key_only = Config { api_key: Some("k".into()), ..config(&dir, "127.0.0.1:80") };
        assert!(matches!(resolve(&key_only), Err(CredentialsError::Half { .. })));
        let secret_only = Config {
            api_secret: Some("a secret of enough length".into()),
            ..config(&dir, "127.0.0.1:80")
        };
        assert!(matches!(resolve(&secret_only), Err(CredentialsError::Half { .. })));
        let short = Config { api_secret: Some("short".into()), ..both.clone() };
        assert!(matches!(resolve(&short), Err(CredentialsError::TooShort(_))));
    }

    #[test]
    fn public_addresses_refuse_to_start_without_a_secret() {
        let dir = temp_dir();
        for listen in ["0.0.0.0:8080", "192.0.2.7:8080", "[::]:8080"] {
            let err = resolve(&config(&dir, listen)).expect_err(listen);
            assert!(err.to_string().contains("TOWNHALL_API_SECRET"), "{err}");
        }
        assert!(!dir.exists());
    }

    #[test]
    fn loopback_generates_one_private_pair_per_install_and_reuses_it() {
        let dir = temp_dir();
        let first = resolve(&config(&dir, "127.0.0.1:8080")).expect("generated");
        let path = dir.join(FILE);
        assert_eq!(first.source, Source::Generated { path: path.clone(), created: true });
        assert!(first.api_secret.len() >= 64);
        let mode = std::fs::metadata(&path).expect("file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(&dir).expect("dir").permissions().mode() & 0o777;
        assert_eq!(dmode, 0o700);
        let again = resolve(&config(&dir, "[::1]:9000")).expect("reused");
        assert_eq!((&again.api_key, &again.api_secret), (&first.api_key, &first.api_secret));
        assert_eq!(again.webhook_secret, first.webhook_secret);
        assert_eq!(again.source, Source::Generated { path, created: false });
        let other = resolve(&config(&temp_dir(), "127.0.0.1:8080")).expect("another install");
        assert_ne!(other.api_secret, first.api_secret, "every install has its own");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_configured_pair_with_webhooks_stores_only_the_webhook_secret() {
        let dir = temp_dir();
        let c = Config {
            api_key: Some("k".into()),
            api_secret: Some("a secret of enough length".into()),
            webhook_urls: vec!["http://127.0.0.1:9/hook".into()],
            ..config(&dir, "0.0.0.0:80")
        };
        let first = resolve(&c).expect("resolved");
        let second = resolve(&c).expect("again");
        assert_eq!(first.webhook_secret, second.webhook_secret, "kept across restarts");
        assert_ne!(first.webhook_secret, first.api_secret);
        let explicit = Config { webhook_secret: Some("w".repeat(20)), ..c };
        assert_eq!(resolve(&explicit).expect("explicit").webhook_secret, "w".repeat(20));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_a_new_secret() {
        let dir = temp_dir();
        datadir::ensure_private_dir(&dir).expect("dir");
        std::fs::write(dir.join(FILE), "api_key = [").expect("write");
        assert!(matches!(
            resolve(&config(&dir, "127.0.0.1:1")),
            Err(CredentialsError::File { .. })
        ));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
