//! The floor: the same components on bare wasmtime, with the keel imports
//! answered by trivial in-memory stubs (no gate, no audit, no database).

use std::collections::HashMap;

use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::keel::plugin::{actions, config, log, memory, model, types};
use crate::bindings::{Agent, GuestError};

pub struct BareState {
    wasi: WasiCtx,
    table: ResourceTable,
    kv: HashMap<(String, String), Vec<u8>>,
}

impl Default for BareState {
    fn default() -> BareState {
        BareState { wasi: WasiCtxBuilder::new().build(), table: ResourceTable::new(), kv: HashMap::new() }
    }
}

impl WasiView for BareState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

pub fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<BareState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    Agent::add_to_linker::<BareState, HasSelf<BareState>>(&mut linker, |s| s)?;
    Ok(linker)
}

type R<T> = wasmtime::Result<Result<T, GuestError>>;

impl types::Host for BareState {}

impl log::Host for BareState {
    fn log(&mut self, _: log::Level, _: String, _: Vec<(String, String)>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl BareState {
    fn unavailable<T>() -> R<T> {
        Ok(Err(GuestError::Unavailable("the bare floor has no records or notes".into())))
    }
}

/// Records and notes are not part of the floor's measurements.
impl memory::Host for BareState {
    fn get(&mut self, namespace: String, key: String) -> R<Option<Vec<u8>>> {
        Ok(Ok(self.kv.get(&(namespace, key)).cloned()))
    }
    fn put(&mut self, namespace: String, key: String, value: Vec<u8>) -> R<()> {
        self.kv.insert((namespace, key), value);
        Ok(Ok(()))
    }
    fn put_expiring(&mut self, namespace: String, key: String, value: Vec<u8>, _ttl_ms: u64) -> R<()> {
        self.kv.insert((namespace, key), value);
        Ok(Ok(()))
    }
    fn delete(&mut self, namespace: String, key: String) -> R<bool> {
        Ok(Ok(self.kv.remove(&(namespace, key)).is_some()))
    }
    fn list_keys(&mut self, _: String, _: String, _: u32) -> R<Vec<String>> {
        Ok(Ok(Vec::new()))
    }
    fn get_record(&mut self, _: String, _: String) -> R<Option<memory::RecordEntry>> {
        Self::unavailable()
    }
    fn put_record(&mut self, _: String, _: String, _: String, _: Option<u64>) -> R<memory::WriteResult> {
        Self::unavailable()
    }
    fn delete_record(&mut self, _: String, _: String, _: Option<u64>) -> R<memory::WriteResult> {
        Self::unavailable()
    }
    fn query_records(&mut self, _: memory::RecordQuery) -> R<memory::RecordPage> {
        Self::unavailable()
    }
    fn remember(&mut self, _: String, _: memory::Note) -> R<String> {
        Self::unavailable()
    }
    fn remember_many(&mut self, _: String, _: Vec<memory::Note>) -> R<Vec<String>> {
        Self::unavailable()
    }
    fn recall(&mut self, _: memory::RecallRequest) -> R<Vec<memory::Hit>> {
        Self::unavailable()
    }
    fn recall_many(&mut self, _: Vec<memory::RecallRequest>) -> R<Vec<Vec<memory::Hit>>> {
        Self::unavailable()
    }
    fn forget(&mut self, _: String, _: String) -> R<bool> {
        Self::unavailable()
    }
}

impl model::Host for BareState {
    async fn complete(&mut self, _: model::CompletionRequest) -> R<model::Completion> {
        Ok(Err(GuestError::Unavailable(String::new())))
    }
    async fn complete_streaming(
        &mut self,
        _: model::CompletionRequest,
    ) -> wasmtime::Result<Resource<model::CompletionStream>> {
        Err(wasmtime::format_err!("the bare floor does not stream completions"))
    }
    async fn embed(&mut self, _: Vec<String>) -> R<Vec<Vec<f32>>> {
        Ok(Err(GuestError::Unavailable(String::new())))
    }
    async fn embed_background(&mut self, _: Vec<String>) -> R<Vec<Vec<f32>>> {
        Ok(Err(GuestError::Unavailable(String::new())))
    }
}

impl model::HostCompletionStream for BareState {
    async fn next(&mut self, _: Resource<model::CompletionStream>) -> R<Option<String>> {
        Ok(Ok(None))
    }
    async fn finish(&mut self, _: Resource<model::CompletionStream>) -> R<model::Completion> {
        Ok(Err(GuestError::Unavailable(String::new())))
    }
    fn drop(&mut self, _: Resource<model::CompletionStream>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl actions::Host for BareState {
    fn propose(&mut self, _: actions::Action) -> R<actions::Disposition> {
        Ok(Err(GuestError::Unavailable(String::new())))
    }
}

impl config::Host for BareState {
    fn get(&mut self, _: String) -> R<Option<String>> {
        Ok(Ok(None))
    }
    fn get_secret(&mut self, _: String) -> R<String> {
        Ok(Err(GuestError::Denied(String::new())))
    }
}
