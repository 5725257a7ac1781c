//! The one integration-test binary: real servers on free loopback ports, real clients.

mod api;
mod clients;
mod skopeo;
mod support;
