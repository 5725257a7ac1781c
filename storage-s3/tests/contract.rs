//! The storage contract suite (`airdock_storage::blobstore::testsuite`) run against the S3
//! blob store on a real S3 server (versitygw on loopback), one server per case.

use airdock_storage::blobstore::testsuite::Harness;
use airdock_storage::blobstore::BlobStore;
use airdock_storage_s3::testing::Versitygw;
use airdock_storage_s3::S3Blobs;

struct S3Harness {
    store: S3Blobs,
    state: tempfile::TempDir,
    gw: Versitygw,
}

impl S3Harness {
    async fn new() -> S3Harness {
        let gw = Versitygw::start();
        let state = tempfile::tempdir().expect("tmp");
        let store = S3Blobs::open(&gw.config("contract"), state.path())
            .await
            .expect("open");
        S3Harness { store, state, gw }
    }
}

#[async_trait::async_trait]
impl Harness for S3Harness {
    fn store(&self) -> &dyn BlobStore {
        &self.store
    }

    /// A new process: a new client over the same bucket and local state directory.
    async fn restart(&mut self) {
        self.store = S3Blobs::open(&self.gw.config("contract"), self.state.path())
            .await
            .expect("reopen");
    }
}

airdock_storage::blobstore_contract_tests!(S3Harness::new().await);
