//! Upstream connections (R list/get, O create/update/delete).

use serde::Serialize;

use super::crud::Resource;
use crate::api::error::ApiResult;
use crate::store::{Connection, Id, Store, StoreError, Transport, Tx, TxResult};
use sipd_core::records::ConnectionSpec;

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionView {
    pub id: Id,
    pub name: String,
    pub enabled: bool,
    pub destination: String,
    pub transport: Transport,
    pub cld_prefixes: Vec<String>,
    pub max_channels: Option<u32>,
    pub cps_limit: Option<u32>,
    pub priority: u32,
}

pub fn view(c: &Connection) -> ConnectionView {
    ConnectionView {
        id: c.id,
        name: c.name.clone(),
        enabled: c.enabled,
        destination: c.destination(),
        transport: c.transport,
        cld_prefixes: c.cld_prefixes.clone(),
        max_channels: c.max_channels,
        cps_limit: c.cps_limit,
        priority: c.priority,
    }
}

impl Resource for Connection {
    const KIND: &'static str = "connection";
    type In = ConnectionSpec;
    type View = ConnectionView;

    fn view(&self) -> ConnectionView {
        view(self)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn build(input: ConnectionSpec, id: Id) -> ApiResult<Connection> {
        Ok(input.build(id)?)
    }
    fn with_id(self, id: Id) -> Connection {
        Connection { id, ..self }
    }
    fn list(store: &Store) -> Vec<Result<Connection, StoreError>> {
        store.connections()
    }
    fn load(store: &Store, id: Id) -> Result<Option<Connection>, StoreError> {
        store.connection(id)
    }
    fn get(tx: &Tx<'_>, id: Id) -> TxResult<Option<Connection>> {
        tx.connection(id)
    }
    fn put(tx: &Tx<'_>, c: &Connection) -> TxResult<Id> {
        tx.put_connection(c)
    }
    fn remove(tx: &Tx<'_>, id: Id) -> TxResult<Connection> {
        tx.delete_connection(id)
    }
}
