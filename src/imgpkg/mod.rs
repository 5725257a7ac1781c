//! imgpkg tarball import: the `imgpkg copy --to-tar` format and the registry state that
//! `imgpkg copy --tar … --to-repo` produces, rebuilt from one streamed upload.
//!
//! Everything except [`import`] is pure (bytes in, values out) so it can be unit-tested and
//! fuzzed without a store: the tar format ([`tarfmt`], [`stream`]), gzip ([`gzip`]), the
//! `manifest.json` model ([`manifest`]), bundle lock files ([`lock`]), reference
//! normalisation ([`refs`]), ImageLocations images ([`locations`]) and Go-compatible YAML
//! ([`yaml`]); [`upload`] opens an upload (counted, gzip inflated) and walks its tar for both
//! importers; [`synth`] builds imgpkg-format tars for tests and benchmarks. [`import`] drives them against `airdock_storage`.

pub mod bundle_layer;
pub mod dry_run;
pub mod export;
pub mod gzip;
pub mod import;
pub mod locations;
pub mod lock;
pub mod manifest;
pub mod names;
pub mod refs;
pub mod stream;
pub mod synth;
pub mod tarfmt;
pub mod upload;
pub mod yaml;

pub use import::{import, ErrorKind, ImportError, ImportOptions, ImportReport};
