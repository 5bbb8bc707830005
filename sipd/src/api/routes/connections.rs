//! Upstream connections (R list/get, O create/update/delete).

use serde::{Deserialize, Serialize};

use super::accounts::{check_name, check_nonzero};
use super::crud::Resource;
use crate::api::error::{ApiError, ApiResult};
use crate::provision::{destination, parse_destination};
use crate::store::{Connection, Id, Store, StoreError, Transport, Tx, TxResult};

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
        destination: destination(c),
        transport: c.transport,
        cld_prefixes: c.cld_prefixes.clone(),
        max_channels: c.max_channels,
        cps_limit: c.cps_limit,
        priority: c.priority,
    }
}

fn yes() -> bool {
    true
}
fn udp() -> Transport {
    Transport::Udp
}
fn default_priority() -> u32 {
    100
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionIn {
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub destination: String,
    #[serde(default = "udp")]
    pub transport: Transport,
    #[serde(default)]
    pub cld_prefixes: Vec<String>,
    #[serde(default)]
    pub max_channels: Option<u32>,
    #[serde(default)]
    pub cps_limit: Option<u32>,
    #[serde(default = "default_priority")]
    pub priority: u32,
}

fn build(i: ConnectionIn, id: Id) -> ApiResult<Connection> {
    check_name("name", &i.name)?;
    let (host, port) =
        parse_destination(&i.destination).map_err(|e| ApiError::invalid("destination", e))?;
    if port == 0 {
        return Err(ApiError::invalid("destination", "port 0"));
    }
    for (n, p) in i.cld_prefixes.iter().enumerate() {
        if p.is_empty()
            || p.len() > 32
            || !p.chars().all(|c| c.is_ascii_digit() || "+*#".contains(c))
        {
            return Err(ApiError::invalid(
                format!("cld_prefixes[{n}]"),
                format!("{p:?} must be 1-32 of 0-9 + * #"),
            ));
        }
    }
    check_nonzero("max_channels", i.max_channels)?;
    check_nonzero("cps_limit", i.cps_limit)?;
    let c = Connection {
        id,
        name: i.name,
        enabled: i.enabled,
        host,
        port,
        transport: i.transport,
        cld_prefixes: i.cld_prefixes,
        max_channels: i.max_channels,
        cps_limit: i.cps_limit,
        priority: i.priority,
    };
    c.validate()
        .map_err(|e| ApiError::invalid("destination", e.reason))?;
    Ok(c)
}

impl Resource for Connection {
    const KIND: &'static str = "connection";
    type In = ConnectionIn;
    type View = ConnectionView;

    fn view(&self) -> ConnectionView {
        view(self)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn build(input: ConnectionIn, id: Id) -> ApiResult<Connection> {
        build(input, id)
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
