//! The one integration-test binary: real servers on free loopback ports, real clients.

mod api;
mod clients;
mod security;
mod skopeo;
mod support;
