//! The manifest: a small file beside the database that records how many
//! commits were durable when it was written. sled recovers a damaged log by
//! dropping its tail, which would silently serve an older state; comparing
//! the database's own commit count with the manifest at start turns such a
//! loss into a refusal to start.
//!
//! The manifest is written atomically (temporary file, fsync, rename) at
//! shutdown and at most once a second after commits, and only ever claims
//! commits that were already flushed, so it never overstates.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const FILE: &str = "segmentd-manifest.json";
const FORMAT: &str = "segmentd-manifest-1";
/// Mixed into `check`, so that a damaged number does not pass for another.
const CHECK: u64 = 0x5e9d_0c0f_fee1_600d;

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    commits: u64,
    check: u64,
}

fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The commits the manifest in `dir` vouches for; `None` when there is none.
pub fn read(dir: &Path) -> Result<Option<u64>> {
    let path = path_in(dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(Error::Corrupt(format!(
                "cannot read {}: {error}",
                path.display()
            )));
        }
    };
    let damaged = || Error::Corrupt(format!("{} is damaged", path.display()));
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|_| damaged())?;
    if manifest.format != FORMAT || manifest.check != manifest.commits ^ CHECK {
        return Err(damaged());
    }
    Ok(Some(manifest.commits))
}

/// Records that `commits` commits are durable.
pub fn write(dir: &Path, commits: u64) -> Result<()> {
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        commits,
        check: commits ^ CHECK,
    };
    let path = path_in(dir);
    let temporary = dir.join(format!("{FILE}.tmp"));
    let failed =
        |error: std::io::Error| Error::Internal(format!("writing {}: {error}", path.display()));
    let bytes = serde_json::to_vec(&manifest)
        .map_err(|error| Error::Internal(format!("encoding the manifest: {error}")))?;
    let mut file = std::fs::File::create(&temporary).map_err(failed)?;
    file.write_all(&bytes).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    std::fs::rename(&temporary, &path).map_err(failed)?;
    if let Ok(directory) = std::fs::File::open(dir) {
        // Makes the rename itself durable; not every platform allows it.
        let _ = directory.sync_all();
    }
    Ok(())
}
