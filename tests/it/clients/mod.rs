//! The real-client interop matrix (issue 4): each module drives one client
//! against a real `airdock serve` on loopback, with images the test builds
//! itself (no network). Clients are installed by
//! `scripts/install-clients.sh`; a missing client fails its test with a
//! message pointing there.
//!
//! | client | module |
//! |---|---|
//! | docker (Debian `docker.io`, own `dockerd`) | `docker` |
//! | containerd `ctr` and crictl through the CRI plugin (Debian `containerd`) | `containerd` |
//! | podman (Debian) | `podman` |
//! | archives written by `docker save`, skopeo and `podman save`, imported, pulled by docker and ctr | `archives` |
//! | skopeo copy `--all` and sync (Debian) | `skopeo_sync` |
//! | crane (go-containerregistry) | `crane` |
//! | oras | `oras` |
//! | crane, oras, skopeo, docker, ctr, crictl over TLS with users (issue 5) | `secure` |
//! | a network namespace + veth pair, so docker meets airdock off loopback | `netns` |

pub(crate) mod harness;
pub(crate) mod image;

mod archives;
pub(crate) mod containerd;
mod crane;
pub(crate) mod docker;
mod netns;
mod oras;
pub(crate) mod podman;
mod secure;
mod selfhost;
mod skopeo_sync;
