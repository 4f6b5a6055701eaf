//! The node's own credential: the bearer token its registration under a bootstrap
//! token returned (it speaks for this node alone), and the key managers present to
//! this node's `AgentLogs`. Kept in `<node root>/credential`, mode 0600 in a 0700
//! directory, written atomically and durably: a lost credential means the node needs a
//! new bootstrap token from the admin.

use crate::files::read_small;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The file's name under the node's root directory.
const FILE_NAME: &str = "credential";

#[derive(Clone, PartialEq, Eq)]
pub(crate) struct NodeCredential {
    /// The node's bearer token.
    pub(crate) secret: String,
    /// What callers of this node's `AgentLogs` must present.
    pub(crate) log_key: String,
}

/// Never print the secrets (`{:?}` of a context ends up in logs).
impl std::fmt::Debug for NodeCredential {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("NodeCredential(..)")
    }
}

pub(crate) fn path(root: &Path) -> PathBuf {
    root.join(FILE_NAME)
}

/// The saved credential, if any; a malformed file counts as none.
pub(crate) fn load(root: &Path) -> Option<NodeCredential> {
    let bytes = read_small(&path(root)).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut secret = None;
    let mut log_key = None;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("secret", value)) => secret = Some(value.trim().to_string()),
            Some(("log_key", value)) => log_key = Some(value.trim().to_string()),
            _ => {}
        }
    }
    Some(NodeCredential {
        secret: secret.filter(|secret| !secret.is_empty())?,
        log_key: log_key.unwrap_or_default(),
    })
}

pub(crate) fn save(root: &Path, credential: &NodeCredential) -> io::Result<()> {
    let contents = format!(
        "secret={}\nlog_key={}\n",
        credential.secret, credential.log_key
    );
    let path = path(root);
    // Created 0600 before the secret is written: never readable by others, not even
    // for a moment; then renamed over the old file and made durable.
    let temporary = root.join(format!("{FILE_NAME}.tmp{}", std::process::id()));
    let result = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&temporary)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        File::open(root)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// Forget the saved credential (it was refused: revoked, or another cluster's).
pub(crate) fn forget(root: &Path) {
    let _ = std::fs::remove_file(path(root));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_credential_loads_back_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), None);
        let credential = NodeCredential {
            secret: "s3cret-0123456789".into(),
            log_key: "key".into(),
        };
        save(dir.path(), &credential).unwrap();
        assert_eq!(load(dir.path()), Some(credential));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{:?}", load(dir.path()).unwrap()).contains("s3cret"));
        forget(dir.path());
        assert_eq!(load(dir.path()), None);
    }
}
