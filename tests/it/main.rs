//! The one integration-test binary: `inproc` drives the router in-process; the other modules
//! run real servers on free loopback ports and real clients.

mod admin;
mod api;
mod backup;
mod clients;
mod connections;
mod console;
mod crash;
mod deploy;
mod diskfull;
mod dry_run;
mod export;
mod fixture;
mod gc;
mod health;
mod images;
mod imgpkg;
mod imgpkg_clients;
mod imgpkg_tools;
mod import_cli;
mod import_uploads;
mod imports;
mod inproc;
mod logins;
mod observe;
mod operate;
mod powerloss;
mod proxy;
mod replicas;
mod s3;
mod security;
mod skopeo;
mod stress;
mod support;
mod usage;
