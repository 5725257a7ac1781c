//! The one integration-test binary: real servers on free loopback ports, real clients.

mod admin;
mod api;
mod clients;
mod crash;
mod diskfull;
mod gc;
mod images;
mod imgpkg;
mod imgpkg_clients;
mod imgpkg_tools;
mod imports;
mod logins;
mod powerloss;
mod proxy;
mod security;
mod skopeo;
mod stress;
mod support;
