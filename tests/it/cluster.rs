//! The replica cluster of issue 12 for the tests: one PostgreSQL (metadata), one versitygw
//! bucket (blobs), `n` `airdock serve` processes each on its own port and data dir, and, when
//! asked, nginx round-robin in front of them. Every piece is a real server started here on
//! loopback and stopped by PID when the cluster is dropped (nginx first, then the replicas,
//! then the bucket and the database: the field order).

use std::net::SocketAddr;

use airdock_storage::pgtest::Postgres;
use airdock_storage_s3::testing::Versitygw;

use crate::nginx::Nginx;
use crate::s3::{s3_flags, S3_ENV};
use crate::support::{scratch_dir, Server};

/// A database, a bucket, the replicas serving from them, and maybe a balancer.
pub(crate) struct Cluster {
    /// Round-robin over `replicas` as they were at [`Cluster::balanced`].
    pub(crate) nginx: Option<Nginx>,
    pub(crate) replicas: Vec<Server>,
    /// Kept for its lifetime: dropping it stops the S3 server.
    pub(crate) _gw: Versitygw,
    pub(crate) pg: Postgres,
    /// The database URL every replica is bound to.
    pub(crate) url: String,
    /// The flags every replica runs with (a later one joins with them).
    pub(crate) args: Vec<String>,
}

impl Cluster {
    /// `n` replicas on a fresh database and bucket, each started with `extra` flags.
    pub(crate) fn start(n: usize, extra: &[&str]) -> Cluster {
        let pg = Postgres::start();
        let url = pg.database();
        let gw = Versitygw::start();
        let mut args = s3_flags(&gw, "replicas");
        args.extend(["--metadata-url".to_owned(), url.clone()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut cl = Cluster {
            nginx: None,
            replicas: Vec::new(),
            _gw: gw,
            pg,
            url,
            args,
        };
        for _ in 0..n {
            let replica = cl.join();
            cl.replicas.push(replica);
        }
        cl
    }

    /// [`Cluster::start`] with nginx round-robin in front: every request goes to the next
    /// replica in turn.
    pub(crate) fn balanced(n: usize, extra: &[&str]) -> Cluster {
        let mut cl = Cluster::start(n, extra);
        let addrs: Vec<SocketAddr> = cl.replicas.iter().map(Server::addr).collect();
        cl.nginx = Some(Nginx::start(&addrs, None));
        cl
    }

    /// One more replica, on a data dir of its own, with the cluster's flags.
    pub(crate) fn join(&self) -> Server {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        Server::start_in_env(scratch_dir("airdock-replica-"), &args, &S3_ENV)
    }

    /// The balancer's base URL (`http://127.0.0.1:PORT`).
    ///
    /// # Panics
    /// If the cluster was started without one ([`Cluster::start`]).
    pub(crate) fn lb_base(&self) -> String {
        self.nginx
            .as_ref()
            .expect("a cluster started with Cluster::balanced")
            .base_url()
    }

    /// `path` through the balancer.
    pub(crate) fn lb_url(&self, path: &str) -> String {
        format!("{}{path}", self.lb_base())
    }
}
