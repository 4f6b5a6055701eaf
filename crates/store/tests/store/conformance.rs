//! openraft's storage conformance suite (`openraft::testing::log::Suite`) against every
//! engine, each case on fresh storage opened the way a replica opens it.

use corral_store::{open_storage, Engine, LogStore, StateMachineStore, StorageOptions, TypeConfig};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::StorageError;
use tempfile::TempDir;

struct Builder {
    engine: Engine,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let directory = tempfile::tempdir()
            .map_err(|error| StorageError::write(TypeConfig::err_from_error(&error)))?;
        let storage = open_storage(&StorageOptions {
            engine: self.engine,
            data_dir: directory.path().join("data"),
        })
        .map_err(|error| StorageError::write(TypeConfig::err_from_error(&error)))?;
        Ok((directory, storage.log, storage.state_machine))
    }
}

async fn conformance(engine: Engine) {
    if let Err(error) = Suite::test_all(Builder { engine }).await {
        panic!("{engine} fails openraft's storage suite: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_passes_openraft_suite() {
    conformance(Engine::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_passes_openraft_suite() {
    conformance(Engine::Redb).await;
}

#[tokio::test]
async fn memory_passes_openraft_suite() {
    conformance(Engine::Memory).await;
}
