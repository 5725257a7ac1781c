//! A bundle's `.imgpkg/images.yml`, read out of its single layer (a gzipped tar) with the
//! importer's bounded readers: what the import (to build ImageLocations images) and the
//! export (to walk a bundle's images) both need.

use tokio::io::{AsyncRead, BufReader};

use super::gzip::{GzipDecoder, InflateLimits};
use super::lock::{ImagesLock, MAX_IMAGES_LOCK};
use super::stream::TarReader;
use super::tarfmt::Kind;

/// Reads `.imgpkg/images.yml` from a bundle layer; the error says what is wrong with the
/// layer, for the caller to attach to the bundle.
pub async fn images_lock<R: AsyncRead + Unpin>(layer: R) -> Result<ImagesLock, String> {
    let gz = GzipDecoder::new(BufReader::new(layer), InflateLimits::default());
    let mut tar = TarReader::new(gz);
    loop {
        let e = match tar.next_entry().await {
            Ok(Some(e)) => e,
            Ok(None) => return Err("the bundle layer has no .imgpkg/images.yml".into()),
            Err(e) => return Err(format!("reading the bundle layer: {e}")),
        };
        if e.kind != Kind::Regular || clean_path(&e.name) != b".imgpkg/images.yml" {
            continue;
        }
        if e.size > MAX_IMAGES_LOCK {
            return Err(format!(
                ".imgpkg/images.yml of {} bytes is too large",
                e.size
            ));
        }
        let bytes = tar
            .read_entry_to_vec()
            .await
            .map_err(|e| format!("reading .imgpkg/images.yml: {e}"))?;
        // Stop here: nothing after images.yml matters, and bundle layers from other tar
        // writers need not end the way ours must.
        return ImagesLock::parse(&bytes).map_err(|e| format!(".imgpkg/images.yml: {}", e.0));
    }
}

/// `./a//b` → `a/b`, as Go's `filepath.Clean` would see the path for our comparison.
pub fn clean_path(name: &[u8]) -> Vec<u8> {
    let parts: Vec<&[u8]> = name
        .split(|&c| c == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .collect();
    parts.join(&b'/')
}
