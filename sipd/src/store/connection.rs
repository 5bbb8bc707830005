//! Upstream connections (vendors): where calls are routed, with their own caps.

use super::{Connection, Id, Store, StoreError, T, Tx, TxResult, abort};

impl Tx<'_> {
    /// The upstream connection with id `id`, as this transaction sees it.
    pub fn connection(&self, id: Id) -> TxResult<Option<Connection>> {
        self.get(T::Connections, &id.to_be_bytes())
    }

    /// The connection named `name`, through the name index.
    pub fn connection_by_name(&self, name: &str) -> TxResult<Option<Connection>> {
        match self.index_get(T::ConnectionNames, name)? {
            Some(id) => self.connection(id),
            None => Ok(None),
        }
    }

    /// Inserts (id 0) or replaces a connection after validating it, keeping the name index right;
    /// aborts with `Conflict` when another connection has the name. Returns the id.
    pub fn put_connection(&self, c: &Connection) -> TxResult<Id> {
        c.validate().or_else(abort)?;
        let id = if c.id == 0 { self.new_id()? } else { c.id };
        if let Some(old) = self.replaced::<Connection>(T::Connections, &id.to_be_bytes())?
            && old.name != c.name
        {
            self.index_release(T::ConnectionNames, &old.name)?;
        }
        self.index_claim(T::ConnectionNames, "connection", &c.name, id)?;
        self.put(
            T::Connections,
            &id.to_be_bytes(),
            &Connection { id, ..c.clone() },
        )?;
        Ok(id)
    }
}

impl Store {
    /// Stores `c` (a new connection when its id is 0) and returns it as stored.
    pub fn put_connection(&self, c: &Connection) -> Result<Connection, StoreError> {
        let id = self.write(|tx| tx.put_connection(c))?;
        Ok(Connection { id, ..c.clone() })
    }

    /// The connection with id `id`, `None` when there is none.
    pub fn connection(&self, id: Id) -> Result<Option<Connection>, StoreError> {
        self.get(T::Connections, &id.to_be_bytes())
    }

    /// The connection named `name`, through the name index.
    pub fn connection_by_name(&self, name: &str) -> Result<Option<Connection>, StoreError> {
        self.by_index(T::ConnectionNames, T::Connections, name)
    }

    /// Every connection in id order; a corrupt one is an `Err` in its place.
    pub fn connections(&self) -> Vec<Result<Connection, StoreError>> {
        self.scan(T::Connections, &[])
    }
}
