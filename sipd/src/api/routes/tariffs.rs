//! Tariffs (R list/get, O create/update/delete).

use serde::Serialize;

use super::crud::Resource;
use crate::api::error::{ApiError, ApiResult};
use crate::store::{Id, Store, StoreError, Tariff, Tx, TxResult};
use sipd_core::records::TariffSpec;

/// A tariff as the API shows it: its id and the input that builds it.
#[derive(Debug, Clone, Serialize)]
pub struct TariffView {
    /// The store's id, fixed at creation.
    pub id: Id,
    /// The tariff's fields, as a create takes them.
    #[serde(flatten)]
    pub tariff: TariffSpec,
}

/// The tariff as the API shows it.
pub fn view(t: &Tariff) -> TariffView {
    TariffView {
        id: t.id,
        tariff: TariffSpec::from(t),
    }
}

impl Resource for Tariff {
    const KIND: &'static str = "tariff";
    type In = TariffSpec;
    type View = TariffView;

    fn view(&self) -> TariffView {
        view(self)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn build(input: TariffSpec, id: Id) -> ApiResult<Tariff> {
        Ok(input.build(id)?)
    }
    fn with_id(self, id: Id) -> Tariff {
        Tariff { id, ..self }
    }
    fn list(store: &Store) -> Vec<Result<Tariff, StoreError>> {
        store.tariffs()
    }
    fn load(store: &Store, id: Id) -> Result<Option<Tariff>, StoreError> {
        store.tariff(id)
    }
    fn get(tx: &Tx<'_>, id: Id) -> TxResult<Option<Tariff>> {
        tx.tariff(id)
    }
    fn put(tx: &Tx<'_>, t: &Tariff) -> TxResult<Id> {
        tx.put_tariff(t)
    }
    fn remove(tx: &Tx<'_>, id: Id) -> TxResult<Tariff> {
        tx.delete_tariff(id)
    }
    /// A tariff an account bills with cannot go.
    fn check_delete(store: &Store, t: &Tariff) -> ApiResult<()> {
        let users: Vec<String> = store
            .accounts()
            .into_iter()
            .flatten()
            .filter(|a| a.tariff_id == Some(t.id))
            .map(|a| a.name)
            .collect();
        if users.is_empty() {
            return Ok(());
        }
        Err(ApiError::conflict(format!(
            "tariff {:?} is used by account(s) {}",
            t.name,
            users.join(", ")
        )))
    }
}
