//! The one integration-test binary: real servers on free loopback ports, real clients.

mod api;
mod clients;
mod imgpkg;
mod imgpkg_clients;
mod imgpkg_tools;
mod security;
mod skopeo;
mod support;
