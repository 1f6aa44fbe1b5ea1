//! What one connector store (one call) owns. Dropped with the store, so
//! nothing, secrets included, outlives the call.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::sockets::WasiSocketsCtxView;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::egress::EgressPolicy;
use super::egress::http::EgressHttpHooks;
use super::egress::sockets::{GuardedLookup, SocketAllowList, socket_check};
use super::imports::ConnectorImports;
use super::secrets::SecretValues;
use crate::runtime::limits::GuestLimiter;

/// Guest stderr kept per call (a panic message), like an agent's.
const STDERR_BYTES: usize = 64 * 1024;

pub struct ConnectorState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    http_hooks: EgressHttpHooks,
    pub(super) limiter: GuestLimiter,
    stderr: MemoryOutputPipe,
    connector: String,
    settings: BTreeMap<String, String>,
    pub(super) secrets: SecretValues,
    egress: Arc<EgressPolicy>,
    sockets: Arc<SocketAllowList>,
}

impl ConnectorState {
    pub fn new(
        egress: Arc<EgressPolicy>,
        sockets: Arc<SocketAllowList>,
        settings: BTreeMap<String, String>,
        secrets: SecretValues,
        memory_bytes: usize,
    ) -> ConnectorState {
        let stderr = MemoryOutputPipe::new(STDERR_BYTES);
        // Clocks, random, outgoing TCP and name lookups through the egress
        // checks; no files, environment, arguments or UDP.
        let wasi = WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .allow_tcp(true)
            .allow_udp(false)
            .allow_ip_name_lookup(true)
            .socket_addr_check(socket_check(egress.clone(), sockets.clone()))
            .build();
        ConnectorState {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            http_hooks: EgressHttpHooks::new(egress.clone()),
            limiter: GuestLimiter::new(memory_bytes),
            stderr,
            connector: egress.connector().to_owned(),
            settings,
            secrets,
            egress,
            sockets,
        }
    }

    pub(super) fn imports(&mut self) -> ConnectorImports<'_> {
        ConnectorImports { connector: &self.connector, settings: &self.settings, secrets: &self.secrets }
    }

    pub(super) fn guarded_lookup(&mut self) -> GuardedLookup<'_> {
        GuardedLookup {
            sockets: WasiSocketsCtxView { ctx: self.wasi.sockets(), table: &mut self.table },
            allow: &self.sockets,
            policy: &self.egress,
        }
    }

    /// The guest's stderr on one line, secrets redacted; empty if none.
    pub(super) fn stderr_summary(&self) -> String {
        let line = crate::runtime::host_state::summarize_stderr(&self.stderr.contents());
        self.secrets.redact(&line).into_owned()
    }
}

impl WasiView for ConnectorState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for ConnectorState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.http_hooks }
    }
}
