//! Tariffs: what a minute costs and how durations are rounded, for balance reservation at
//! admission and the cost in the CDR.

use super::{Id, Store, StoreError, T, Tariff, Tx, TxResult, abort};

impl Tx<'_> {
    /// The tariff with id `id`, as this transaction sees it.
    pub fn tariff(&self, id: Id) -> TxResult<Option<Tariff>> {
        self.get(T::Tariffs, &id.to_be_bytes())
    }

    /// The tariff named `name`, through the name index.
    pub fn tariff_by_name(&self, name: &str) -> TxResult<Option<Tariff>> {
        match self.index_get(T::TariffNames, name)? {
            Some(id) => self.tariff(id),
            None => Ok(None),
        }
    }

    /// Inserts (id 0) or replaces a tariff after validating it, keeping the name index right;
    /// aborts with `Conflict` when another tariff has the name. Returns the id.
    pub fn put_tariff(&self, t: &Tariff) -> TxResult<Id> {
        t.validate().or_else(abort)?;
        let id = if t.id == 0 { self.new_id()? } else { t.id };
        if let Some(old) = self.replaced::<Tariff>(T::Tariffs, &id.to_be_bytes())?
            && old.name != t.name
        {
            self.index_release(T::TariffNames, &old.name)?;
        }
        self.index_claim(T::TariffNames, "tariff", &t.name, id)?;
        self.put(T::Tariffs, &id.to_be_bytes(), &Tariff { id, ..t.clone() })?;
        Ok(id)
    }
}

impl Store {
    /// Stores `t` (a new tariff when its id is 0) and returns it as stored.
    pub fn put_tariff(&self, t: &Tariff) -> Result<Tariff, StoreError> {
        let id = self.write(|tx| tx.put_tariff(t))?;
        Ok(Tariff { id, ..t.clone() })
    }

    /// The tariff with id `id`, `None` when there is none.
    pub fn tariff(&self, id: Id) -> Result<Option<Tariff>, StoreError> {
        self.get(T::Tariffs, &id.to_be_bytes())
    }

    /// The tariff named `name`, through the name index (how accounts and provisioning files
    /// refer to tariffs).
    pub fn tariff_by_name(&self, name: &str) -> Result<Option<Tariff>, StoreError> {
        self.by_index(T::TariffNames, T::Tariffs, name)
    }

    /// Every tariff in id order; a corrupt one is an `Err` in its place.
    pub fn tariffs(&self) -> Vec<Result<Tariff, StoreError>> {
        self.scan(T::Tariffs, &[])
    }
}
