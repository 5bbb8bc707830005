//! Upstream connections (R list/get, O create/update/delete).

use serde::Serialize;

use super::crud::Resource;
use crate::api::error::ApiResult;
use crate::store::{Connection, Id, Store, StoreError, Tx, TxResult};
use sipd_core::records::ConnectionSpec;

/// A connection as the API shows it: its id and the input that builds it.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionView {
    /// The store's id, fixed at creation.
    pub id: Id,
    /// The connection's fields, as a create takes them.
    #[serde(flatten)]
    pub connection: ConnectionSpec,
}

/// The connection as the API shows it.
pub fn view(c: &Connection) -> ConnectionView {
    ConnectionView {
        id: c.id,
        connection: ConnectionSpec::from(c),
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
    fn check_config(cfg: &crate::config::Config, c: &Connection) -> ApiResult<()> {
        Ok(crate::config::check_connection(cfg, c)?)
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
